"""Helpers shared by the defense tests: accuracy, state snapshots, hook checks and one instance of every defense."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from advlab.defenses import (
    clamp_activations,
    clamp_large,
    perturb,
    prunable_weights,
    prune_small,
    quantize,
)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def weights_by_name(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in prunable_weights(model)}


def all_defenses(calibration: torch.Tensor) -> list[tuple[str, Callable[[nn.Module], nn.Module]]]:
    return [
        ("E", lambda m: prune_small(m, 0.05)),
        ("ratio-global", lambda m: prune_small(m, ratio=0.5)),
        ("ratio-layer", lambda m: prune_small(m, ratio=0.5, scope="layer")),
        ("S", lambda m: clamp_large(m, 1.0)),
        ("R", lambda m: perturb(m, 0.1, seed=3)),
        ("quant", lambda m: quantize(m, 4)),
        ("quant-act", lambda m: quantize(m, 4, activations=True, calibration=calibration)),
        ("clamp", lambda m: clamp_activations(m, calibration=calibration, percentile=99.0)),
        (
            "clamp-bounds",
            lambda m: clamp_activations(
                m, bounds={n: (0.0, 0.5) for n, mod in m.named_modules() if isinstance(mod, nn.ReLU)}
            ),
        ),
    ]
