"""Random noise: the baseline every gradient attack must beat, and the gradient-masking check in ``evaluate``.

Each try draws a point on the boundary of the ball, where random noise does the most:

    L-inf: delta = eps * s,  s uniform in {-1, +1}^d (a random vertex of the cube)
    L2/L1: delta = eps * g / ||g||_p,  g ~ N(0, I)

and keeps, per sample, the first successful try (or the one with the largest margin loss). Try t of an image
is drawn from the seed, t and the image alone, the same in any batch (:mod:`advlab.attacks.draws`). Forwards
only, no gradients: if this breaks samples that a white-box attack left standing, the white-box attack was
fooled (masked or obfuscated gradients; Athalye et al. 2018, Carlini et al. 2019's checklist).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from advlab.attacks.base import (
    Attack,
    Best,
    Oracle,
    check_epsilons,
    eps_list,
    is_success,
    register,
)
from advlab.attacks.draws import NOISE_STREAM, SampleDraws
from advlab.losses import margin


@register
@dataclass(frozen=True, kw_only=True)
class RandomNoise(Attack):
    """``tries`` random points on the eps-sphere of ``norm`` per sample, pixels clipped to [0, 1]."""

    eps: float | Sequence[float] = 8 / 255
    norm: str = "linf"
    tries: int = 10
    early_stop: bool = True

    name: ClassVar[str] = "noise"
    white_box: ClassVar[bool] = False

    def validate(self) -> None:
        check_epsilons(self.eps, self.norm)
        if self.tries < 1:
            raise ValueError(f"tries must be >= 1, got {self.tries}")

    def _epsilons(self) -> list[float | None]:
        return list(eps_list(self.eps))

    def _attack(
        self,
        oracle: Oracle,
        x: torch.Tensor,
        labels: torch.Tensor,
        targeted: bool,
        eps: float | None,
        init: torch.Tensor | None,
        gen: torch.Generator,
        y_true: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        assert eps is not None
        best = Best(x)
        active = torch.arange(len(x), device=x.device)
        draws = SampleDraws(x, self.seed, stream=NOISE_STREAM)
        for t in range(self.tries):
            x0 = x[active]
            if self.norm == "linf":
                noise = draws.signs(active, t, x0.shape[1:]).to(x0)
            else:
                g = draws.normal(active, t, x0.shape[1:]).to(x0)
                p = 2 if self.norm == "l2" else 1
                noise = g / g.flatten(1).norm(p=p, dim=1).clamp_min(1e-12).view(-1, *[1] * (x.ndim - 1))
            xe = self._prepare((x0 + eps * noise).clamp(0, 1), x0, eps)
            logits = oracle.logits(xe, active)
            succ = is_success(logits, labels[active], targeted)
            best.update(active, xe, logits, succ, margin(logits, labels[active], targeted))
            if self.early_stop:
                active = active[~succ]
                if len(active) == 0:
                    break
        return best.result()
