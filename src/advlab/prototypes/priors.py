"""Image priors as objective terms (to minimize; compose with the target terms of :mod:`.objectives`):

    lp(p, center)         ||x - center||_p per image (pixel units; p = 2 is :func:`~.objectives.l2`)
    blur_prior(sigma)     mean (x - G_sigma * x)^2 per image: the energy above the blur's pass band
    bn_statistics()       DeepInversion's BatchNorm feature-statistics match (Yin et al. 2020)

bn_statistics: for every BatchNorm layer l with running statistics (mu_l, sigma_l^2) of the training data and
the batch's inputs a_l (N, C_l, H_l, W_l) to it,

    R_BN = sum_l ||mean(a_l) - mu_l||_2 + ||std(a_l) - sigma_l||_2      (mean and std over N, H, W, per channel)

a statistic of the whole batch (DeepInversion's, with all (start, target) pairs of a batch together). Each
pair's value is R_BN itself, so the sum that :func:`advlab.attacks.step.gradient` differentiates weighs every
image's share of R_BN the same whatever the batch size. Forward hooks on the BatchNorm layers collect a_l; the
objective attaches them around the run (:meth:`~.objectives.Objective.attached`) and always removes them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from advlab.prototypes.evolve import gaussian_blur
from advlab.prototypes.objectives import Objective, term


def lp(p: float = 2.0, center: float = 0.5) -> Objective:
    """||x - center||_p per image over every pixel and channel (pixel units), p >= 1."""
    if not p >= 1:
        raise ValueError(f"lp needs p >= 1, got {p}")
    return term(f"lp(p={p:g}, center={center:g})", lambda x, z, t: (x - center).flatten(1).norm(p=p, dim=1))


def blur_prior(sigma: float = 1.0) -> Objective:
    """mean (x - G_sigma * x)^2 per image (G a Gaussian of std ``sigma`` pixels): penalizes high frequencies."""
    if not sigma > 0:
        raise ValueError(f"blur_prior needs sigma > 0, got {sigma}")
    return term(f"blur_prior(sigma={sigma:g})", lambda x, z, t: (x - gaussian_blur(x, sigma)).pow(2).flatten(1).mean(1))


def batchnorm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    """The model's BatchNorm layers that keep running statistics."""
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None]


def bn_distance(a: torch.Tensor, bn: nn.modules.batchnorm._BatchNorm) -> torch.Tensor:
    """||mean(a) - mu||_2 + ||std(a) - sigma||_2 for the inputs ``a`` (N, C, ...) of one BatchNorm layer."""
    dims = [0, *range(2, a.ndim)]
    mean = a.float().mean(dims)
    std = (a.float().var(dims, unbiased=False) + bn.eps).sqrt()
    assert bn.running_mean is not None and bn.running_var is not None
    return (mean - bn.running_mean.float()).norm() + (std - (bn.running_var.float() + bn.eps).sqrt()).norm()


def bn_statistics() -> Objective:
    """R_BN of the batch (see the module docstring), each pair's value; needs a model with BatchNorm layers."""
    state: dict[str, Any] = {"loss": None, "attached": 0}

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        d = bn_distance(args[0], mod)  # type: ignore[arg-type]
        state["loss"] = d if state["loss"] is None else state["loss"] + d

    @contextmanager
    def attach(model: nn.Module) -> Iterator[None]:
        layers = batchnorm_layers(model)
        if not layers:
            raise ValueError("bn_statistics() needs a model with BatchNorm layers (running statistics)")
        handles = [m.register_forward_hook(hook) for m in layers]
        state["attached"] += 1
        try:
            yield
        finally:
            for h in handles:
                h.remove()
            state["attached"] -= 1
            state["loss"] = None

    def fn(x: torch.Tensor, z: torch.Tensor | None, t: torch.Tensor | None) -> torch.Tensor:
        loss, state["loss"] = state["loss"], None
        if loss is None:
            raise ValueError("bn_statistics() was evaluated without its hooks: use it inside objective.attached(model)")
        return loss.expand(len(x))

    return term("bn_statistics()", fn, attach)


@torch.no_grad()
def bn_loss(model: nn.Module, x: torch.Tensor) -> float:
    """R_BN of the batch ``x`` under ``model`` (a number, for reports and tests)."""
    obj = bn_statistics()
    with obj.attached(model):
        model(x)
        return float(obj(x)[0])
