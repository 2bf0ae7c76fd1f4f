"""Defenses: functions that take a classifier and return a NEW, defended one (research note 003, "adversarial-prune").

Every defense deep-copies the model, edits the copy and returns it in eval mode on the same device, with the
input's ``.info`` and a ``.defense`` attribute (:class:`DefenseInfo`: name, setting, changed fraction, details).
The input model is never modified. Defenses never print or write files.

    prune_small(model, E)            E-prune: w <- 0 where |w| < E (or ratio=: the smallest fraction)
    clamp_large(model, S)            S-prune: w <- clamp(w, mu - S sigma, mu + S sigma) per layer
    perturb(model, R, seed=0)        R-noise: w <- w + U[-R, R]
    quantize(model, bits)            b-bit symmetric per-channel weights; activations=True also quantizes layer inputs
    clamp_activations(model, ...)    feature maps clamped to calibrated percentiles (or given bounds)
    train_detector(model, layer, ...)  a detector of adversarial inputs on a layer's activations (SafetyNet;
                                     not a defended copy: Guarded(model, detector, tau) adds the reject option)
    fit(model, x, y, TrainConfig(...)) standard, adversarial (PGD, FGSM-RS) and logit-pairing training, in place
                                     (:mod:`advlab.defenses.training`; resumable through TrainState)

The weight defenses edit :func:`prunable_weights` (Conv*d / ConvTranspose*d / Linear ``.weight``). Quantization
is simulated in float with straight-through gradients, so white-box attacks stay honest (see
:mod:`advlab.defenses.activations`).

:data:`DEFENSES` maps the CLI's short names to callables ``(model, setting, **kw)``: ``e`` (E), ``s`` (S),
``r`` (R), ``quant`` (bits; activations are quantized too when ``calibration=`` is passed), ``clamp``
(percentile; needs ``calibration=``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advlab.defenses.activations import (
    Clamped,
    QuantizedInput,
    clamp_activations,
    fake_quantize,
    quantize,
)
from advlab.defenses.detector import (
    Detector,
    Guarded,
    GuardedLoss,
    evades,
    guarded_loss,
    penultimate_layer,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
    train_detector,
)
from advlab.defenses.training import (
    TrainConfig,
    TrainHistory,
    TrainState,
    fit,
    logit_distance,
    training_loss,
)
from advlab.defenses.weights import (
    DefenseInfo,
    clamp_large,
    defense_info,
    perturb,
    prunable_weights,
    prune_small,
)


def quantize_setting(model: nn.Module, bits: int, **kw: Any) -> nn.Module:
    """:func:`quantize` for sweeps: layer inputs are quantized too whenever ``calibration`` is given."""
    kw.setdefault("activations", kw.get("calibration") is not None)
    return quantize(model, bits, **kw)


def clamp_setting(
    model: nn.Module, percentile: float, *, calibration: torch.Tensor | None = None, **kw: Any
) -> nn.Module:
    """:func:`clamp_activations` with calibrated bounds at ``percentile`` (default layers: every activation module)."""
    return clamp_activations(model, calibration=calibration, percentile=percentile, **kw)


DEFENSES: dict[str, Callable[..., nn.Module]] = {
    "e": prune_small,
    "s": clamp_large,
    "r": perturb,
    "quant": quantize_setting,
    "clamp": clamp_setting,
}

__all__ = [
    "DEFENSES",
    "Clamped",
    "DefenseInfo",
    "QuantizedInput",
    "clamp_activations",
    "clamp_large",
    "defense_info",
    "fake_quantize",
    "perturb",
    "prunable_weights",
    "prune_small",
    "quantize",
    "Detector",
    "Guarded",
    "GuardedLoss",
    "evades",
    "guarded_loss",
    "penultimate_layer",
    "roc_auc",
    "roc_curve",
    "threshold_at_fpr",
    "train_detector",
    "TrainConfig",
    "TrainHistory",
    "TrainState",
    "fit",
    "logit_distance",
    "training_loss",
]
