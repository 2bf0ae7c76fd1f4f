"""Straight-through gradients (BPDA: Backward Pass Differentiable Approximation, Athalye, Carlini & Wagner 2018)
for the non-differentiable torch ops a model applies to its input, during attacks only.

``round``, ``floor``, ``ceil``, ``trunc``, ``fix`` and ``sign`` have a zero gradient almost everywhere, so a model
that quantizes its input with them (``torch.round(x * 15) / 15``) gives gradient attacks nothing to follow and
looks robust. Under :class:`StraightThrough` each such op, applied to a tensor that requires grad, returns

    y = f(x) + (x - stopgrad(x))          (value f(x) exactly, gradient dy/dx = 1)

i.e. the backward pass treats f as the identity, the BPDA choice for quantizers (f(x) ~ x). The forward values
are unchanged bit for bit, and the evaluation still confirms every success on the model itself. The ops are
intercepted with a :class:`torch.overrides.TorchFunctionMode`, so they are found inside any module, functional
code or method call (``x.round()``) without changing the model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from advlab.attacks.base import frozen_parameters
from advlab.evaluation.diagnostics import AttackView

#: the ops whose gradient :class:`StraightThrough` replaces by the identity's
STRAIGHT_THROUGH: dict[Any, str] = {
    f: name
    for name in ("round", "floor", "ceil", "trunc", "fix", "sign")
    for f in (getattr(torch, name), getattr(torch.Tensor, name))
}


def _tracked(args: tuple[Any, ...]) -> torch.Tensor | None:
    x = args[0] if args else None
    return x if isinstance(x, torch.Tensor) and x.requires_grad and x.is_floating_point() else None


class _Recorder(TorchFunctionMode):
    """Records the names of the ops of :data:`STRAIGHT_THROUGH` applied to tensors that require grad."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[str] = set()

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        if func in STRAIGHT_THROUGH and _tracked(args) is not None:
            self.found.add(STRAIGHT_THROUGH[func])
        return func(*args, **(kwargs or {}))


class _Mode(TorchFunctionMode):
    """The straight-through replacement of every op of :data:`STRAIGHT_THROUGH` on tensors that require grad."""

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        x = _tracked(args) if func in STRAIGHT_THROUGH else None
        if x is None or not isinstance(out, torch.Tensor) or out.shape != x.shape:
            return out
        return out.detach() + (x - x.detach())


def non_differentiable_ops(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The ops of :data:`STRAIGHT_THROUGH` that ``model`` applies to input-dependent tensors on ``x`` (one
    forward with ``x`` requiring grad and the parameters frozen), sorted by name."""
    rec = _Recorder()
    xs = x.detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad(), rec:
        model(xs)
    return sorted(rec.found)


class StraightThrough(AttackView):
    """``model`` with straight-through gradients for its non-differentiable ops (see the module docstring); the
    forward values are the model's own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _Mode():
            return self.model(x)
