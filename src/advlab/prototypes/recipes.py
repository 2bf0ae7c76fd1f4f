"""Named recipes for prototypes: every ingredient (parametrization, step, transforms, priors) in one place.

    adversarial   today's pixel PGD (research note 000): sign steps of 1/255 on the pixels, cross-entropy, nothing else
    natural       Fourier parametrization with decorrelated colour (Olah et al. 2017), 256 MI-FGSM steps of 0.05
                  on the spectrum (mu = 0.9), one random view per step: shift up to 10% of the side, zoom by
                  +-30%, rotation by +-20 degrees; min mode never converges under random views, so tol = 0.
                  Strong views are what makes the prototypes transfer: on 20 tuning classes (seed 1, not the
                  benchmark's), lite2 named 85% with the views of Lucid's size (3.5%, +-10%, +-10 deg), 95% with
                  these, 95% with still stronger ones (15%, +-40%, +-30 deg); 2 views per step at half the steps
                  (80%) and a steeper 1/f^1.5 spectrum (85%) were worse. DeepInversion's BN prior (``bn=0.02``)
                  was measured worse on efficientnet-lite0 (lite2 8/10 instead of 9/10, 1.7x the time) and is
                  left out; add it with ``bn=``

:func:`config` builds the :class:`~advlab.prototypes.evolve.Config` of a recipe for a model, with any
ingredient overridden (``config("natural", model, rotate=0, bn=0.01)``); the prior weights ``tv``, ``bn``, ``l2`` and
``blur_prior`` become terms of the objective (:mod:`.objectives`, :mod:`.priors`) next to cross-entropy.
The measured recognizability of both recipes is in benchmarks/README.md (``benchmarks/recognizability.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from advlab.prototypes.evolve import Config
from advlab.prototypes.objectives import Objective, cross_entropy, l2, total_variation
from advlab.prototypes.priors import batchnorm_layers, blur_prior, bn_statistics

#: the ingredients a recipe sets: Config fields, and prior weights (PRIORS) that become objective terms
PRIORS = ("tv", "bn", "l2", "blur_prior")
RECIPES: dict[str, dict[str, Any]] = {
    "adversarial": {},
    "natural": {
        "param": "fourier",
        "method": "mifgsm",
        "alpha": 0.05,
        "momentum": 0.9,
        "jitter": 0.1,
        "scale": 0.3,
        "rotate": 20.0,
        "tol": 0.0,
        "steps": 256,
    },
}


def objective(tv: float = 0.0, bn: float = 0.0, l2_weight: float = 0.0, blur: float = 0.0) -> Objective:
    """cross_entropy() + tv * total_variation() + bn * bn_statistics() + l2 * l2() + blur * blur_prior()
    (the terms of weight 0 left out)."""
    out = cross_entropy()
    for w, t in ((tv, total_variation), (bn, bn_statistics), (l2_weight, l2), (blur, blur_prior)):
        if w:
            out = out + w * t()
    return out


def config(name: str, model: nn.Module | None = None, size: int | None = None, **overrides: Any) -> Config:
    """The recipe ``name`` as a Config, with ``overrides`` (Config fields or prior weights; None values ignored).

    A fractional ``jitter`` (< 1) is a fraction of the image side ``size`` (default: the zoo model's input
    size), rounded, at least 1 pixel. The recipe's own ``bn`` weight is dropped for a model without BatchNorm
    layers; an explicit ``bn`` for such a model raises ValueError.
    """
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}: one of {', '.join(RECIPES)}")
    over = {k: v for k, v in overrides.items() if v is not None}
    kw = {**RECIPES[name], **over}
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = [k for k in kw if k not in fields and k not in PRIORS]
    if unknown:
        raise ValueError(f"unknown recipe ingredient {unknown[0]!r}")
    has_bn = model is None or bool(batchnorm_layers(model))
    if kw.get("bn") and not has_bn:
        if "bn" in over:
            raise ValueError("bn (BatchNorm-statistics matching) needs a model with BatchNorm layers")
        kw.pop("bn")
    jitter = kw.get("jitter", 0)
    if 0 < jitter < 1:
        side = size or getattr(getattr(model, "info", None), "input_size", None) or 224
        kw["jitter"] = max(1, round(jitter * side))
    weights = {k: kw.pop(k, 0.0) for k in PRIORS}
    if any(weights[k] for k in ("bn", "l2", "blur_prior")):
        kw["objective"] = objective(weights["tv"], weights["bn"], weights["l2"], weights["blur_prior"])
    else:
        kw["tv"] = weights["tv"]  # the default objective (cross-entropy + tv * TV), as before
    kw["jitter"] = int(kw.get("jitter", 0))
    return Config(**kw)
