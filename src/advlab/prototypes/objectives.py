"""Objectives for prototypes: small terms that compose with ``+``, ``-`` and scalar ``*``, as in
feature-visualization libraries (Lucent), instead of one fixed "CE plus TV" switch.

    from advlab.prototypes import Config, cross_entropy, total_variation, class_logit
    Config(objective=cross_entropy() + 0.5 * total_variation())
    Config(objective=class_logit(3) + 0.05 * total_variation())

Every objective is evaluated as ``objective(x, logits, targets) -> (N,)``, one value per image, and is
MINIMIZED by :func:`advlab.prototypes.evolve` (its min mode descends it; its max mode descends it until the
target is top-1). ``x`` is the image batch (N, C, H, W) in [0, 1], ``logits`` the model's (N, K) output on it
(after the jitter, if any) and ``targets`` the (N,) target class of each (start, target) pair. A composite
objective is the weighted sum sum_i w_i * term_i(x, logits, targets), evaluated in the order written.

Terms that look only at the image (:func:`total_variation`, :func:`l2`) can be evaluated on images alone:
``total_variation()(x)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from advlab import losses

#: a term's function: (x, logits, targets) -> (N,), to minimize
TermFn = Callable[[torch.Tensor, "torch.Tensor | None", "torch.Tensor | None"], torch.Tensor]
#: what a term that reads the model's insides (BatchNorm statistics) attaches while the model runs: hooks
Attach = Callable[[nn.Module], AbstractContextManager[None]]


@dataclass(frozen=True)
class Term:
    """One named term: ``fn(x, logits, targets) -> (N,)``; ``name`` is how it prints (``"margin()"``) and what
    terms compare by (so that two ``margin()`` objectives, and two configs holding them, are equal)."""

    name: str
    fn: TermFn = field(compare=False)
    attach: Attach | None = field(default=None, compare=False)

    def __call__(self, x: torch.Tensor, logits: torch.Tensor | None, targets: torch.Tensor | None) -> torch.Tensor:
        return self.fn(x, logits, targets)


def _weight(w: float) -> str:
    return f"{w:g}"


@dataclass(frozen=True)
class Objective:
    """A weighted sum of terms, sum_i w_i * term_i(x, logits, targets) -> (N,), to MINIMIZE.

    Compose with ``a + b``, ``a - b``, ``-a``, ``c * a``, ``a * c`` and ``a / c`` (c a number); ``sum`` works too.
    A weight of 1 costs no multiplication, so ``cross_entropy()`` is exactly the plain cross-entropy.
    """

    terms: tuple[tuple[float, Term], ...]

    def __call__(
        self, x: torch.Tensor, logits: torch.Tensor | None = None, targets: torch.Tensor | None = None
    ) -> torch.Tensor:
        total: torch.Tensor | None = None
        for w, term in self.terms:
            v = term(x, logits, targets)
            v = v if w == 1 else w * v
            total = v if total is None else total + v
        assert total is not None
        return total

    @contextmanager
    def attached(self, model: nn.Module) -> Iterator[None]:
        """The hooks of the terms that read the model's insides (e.g. :func:`advlab.prototypes.priors.bn_statistics`),
        attached to ``model`` for the duration of the block and always removed."""
        with ExitStack() as stack:
            for _, t in self.terms:
                if t.attach is not None:
                    stack.enter_context(t.attach(model))
            yield

    def __add__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return Objective(self.terms + other.terms)

    def __radd__(self, other: object) -> Objective:
        if other == 0:  # sum([...]) starts from 0
            return self
        return NotImplemented

    def __neg__(self) -> Objective:
        return Objective(tuple((-w, t) for w, t in self.terms))

    def __sub__(self, other: Objective) -> Objective:
        if not isinstance(other, Objective):
            return NotImplemented
        return self + (-other)

    def __mul__(self, c: float) -> Objective:
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            return NotImplemented
        return Objective(tuple((float(c) * w, t) for w, t in self.terms))

    __rmul__ = __mul__

    def __truediv__(self, c: float) -> Objective:
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            return NotImplemented
        return self * (1.0 / c)

    def __repr__(self) -> str:
        out = ""
        for i, (w, t) in enumerate(self.terms):
            sign, mag = ("-", -w) if w < 0 else ("+", w)
            body = t.name if mag == 1 else f"{_weight(mag)} * {t.name}"
            out += (f"-{body}" if sign == "-" else body) if i == 0 else f" {sign} {body}"
        return out


def term(name: str, fn: TermFn, attach: Attach | None = None) -> Objective:
    """An objective of one custom term ``fn(x, logits, targets) -> (N,)`` (to minimize), printed as ``name``;
    ``attach(model)``: a context manager (hooks) that :func:`~advlab.prototypes.evolve.evolve` enters around the run."""
    return Objective(((1.0, Term(name, fn, attach)),))


def _need(t: torch.Tensor | None, what: str, name: str) -> torch.Tensor:
    if t is None:
        raise ValueError(f"the objective term {name} needs the {what}")
    return t


def tv(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]| (anisotropic TV, in pixel units)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


def cross_entropy() -> Objective:
    """CE(z, t) = log sum_j exp(z_j) - z_t, in nats, towards each pair's target t (minimizing raises p_t)."""

    def fn(x: torch.Tensor, z: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
        return losses.cross_entropy(_need(z, "logits", "cross_entropy()"), _need(t, "targets", "cross_entropy()"))

    return term("cross_entropy()", fn)


def margin(kappa: float = float("inf")) -> Objective:
    """max_{j != t} z_j - z_t (Carlini & Wagner's margin, in logit units), floored at -kappa: negative exactly when
    the target is top-1; minimizing it pushes z_t above every other logit (by up to kappa)."""

    def fn(x: torch.Tensor, z: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
        return -losses.margin(
            _need(z, "logits", "margin()"), _need(t, "targets", "margin()"), targeted=True, kappa=kappa
        )

    name = "margin()" if kappa == float("inf") else f"margin(kappa={kappa:g})"
    return term(name, fn)


def class_logit(k: int) -> Objective:
    """-z_k, the negated logit of the fixed class ``k`` (logit units): minimizing it raises z_k, whatever the target."""
    k = int(k)

    def fn(x: torch.Tensor, z: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
        return -_need(z, "logits", f"class_logit({k})")[:, k].float()

    return term(f"class_logit({k})", fn)


def target_logit() -> Objective:
    """-z_t, the negated logit of each pair's target t (logit units): minimizing it raises z_t."""

    def fn(x: torch.Tensor, z: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
        zz, tt = _need(z, "logits", "target_logit()"), _need(t, "targets", "target_logit()")
        return -zz.float().gather(1, tt[:, None]).squeeze(1)

    return term("target_logit()", fn)


def total_variation() -> Objective:
    """TV(x) = mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]| per image (anisotropic, pixel units in
    [0, 1] per neighbour pair, means over channels and positions): minimizing it smooths the image."""
    return term("total_variation()", lambda x, z, t: tv(x))


def l2(center: float = 0.5) -> Objective:
    """||x - center||_2 per image (over every pixel and channel, pixel units): minimizing it pulls the image
    towards a flat ``center`` grey and keeps pixels away from the extremes (Lucent's L2 penalty)."""
    return term(
        "l2()" if center == 0.5 else f"l2(center={center:g})", lambda x, z, t: (x - center).flatten(1).norm(dim=1)
    )
