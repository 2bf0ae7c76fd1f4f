"""Forward hooks as context managers (core): capture or inspect layer outputs, and always remove the hooks.

``with features(model, ["layer4"]) as acts: model(x)`` fills ``acts`` with the layers' outputs; :func:`hooked`
calls a function on each output instead (to take statistics without keeping activations). Layer names are
those of ``model.named_modules()``; the default is every leaf module and every module with weights of its
own (such as EfficientNet's ``Conv2dStaticSamePadding``, a conv with a padding child). A module's output that
is a tuple, list or dict is represented by its first tensor (:func:`first_tensor`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

__all__ = ["features", "first_tensor", "hooked", "named_layers"]


def first_tensor(out: Any) -> torch.Tensor | None:
    """``out`` if it is a tensor, else the first tensor found in a (nested) tuple, list or dict, else None."""
    if isinstance(out, torch.Tensor):
        return out
    items = out.values() if isinstance(out, Mapping) else out if isinstance(out, (tuple, list)) else ()
    for item in items:
        t = first_tensor(item)
        if t is not None:
            return t
    return None


def named_layers(model: nn.Module, layers: Sequence[str] | None) -> list[tuple[str, nn.Module]]:
    """The ``(name, module)`` pairs to hook: the named ones (in the order given, duplicates dropped) or every leaf."""
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of names, not the string {layers!r}: use [{layers!r}]")
    modules = dict(model.named_modules())
    if layers is None:
        return [
            (n, m)
            for n, m in modules.items()
            if next(m.children(), None) is None or next(m.parameters(recurse=False), None) is not None
        ]
    unknown = [n for n in layers if n not in modules]
    if unknown:
        shown = ", ".join(repr(n) for n in unknown)
        some = ", ".join(repr(n) for n in list(modules)[1:6])
        raise ValueError(f"unknown layer name(s) {shown}: names come from model.named_modules() (e.g. {some})")
    return [(n, modules[n]) for n in dict.fromkeys(layers)]


@contextmanager
def hooked(
    modules: Sequence[tuple[str, nn.Module]], fn: Callable[[str, nn.Module, torch.Tensor], None]
) -> Iterator[None]:
    """Call ``fn(name, module, output)`` after each forward of each module; the hooks are removed on exit, always."""
    handles = []
    try:
        for name, module in modules:

            def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                t = first_tensor(out)
                if t is not None:
                    fn(name, mod, t)

            handles.append(module.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def features(model: nn.Module, layers: Sequence[str] | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Capture layer outputs: ``with features(model, ["features.3"]) as acts: model(x)`` fills ``acts``.

    ``layers``: names from ``model.named_modules()`` (any module, leaf or not); default every leaf module.
    Unknown names raise ValueError. The yielded dict maps name -> output of the latest forward (detached
    copies, so in-place layers that follow cannot change them), in the order the outputs were produced.
    A module called several times in one forward keeps its last call (and that call's position); a
    tuple/list/dict output is represented by its first tensor. The hooks are removed on exit, also when
    the body raises.
    """
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str, module: nn.Module, out: torch.Tensor) -> None:
        acts.pop(name, None)  # re-insert: the dict's order is the order of the last calls
        acts[name] = out.detach().clone()

    with hooked(named_layers(model, layers), keep):
        yield acts
