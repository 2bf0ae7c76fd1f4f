"""Random noise: the baseline every gradient attack must beat, and the gradient-masking check in ``evaluate``.

Each try draws a point on the boundary of the ball, where random noise does the most:

    L-inf: delta = eps * s,  s uniform in {-1, +1}^d (a random vertex of the cube)
    L2/L1: delta = eps * g / ||g||_p,  g ~ N(0, I)

and keeps, per sample, the first successful try (or the one with the largest margin loss). Try t of an image
is drawn from the seed, t and the image alone, the same in any batch (:mod:`advlab.attacks.draws`). Forwards
only, no gradients: if this breaks samples that a white-box attack left unbroken, the white-box attack was
fooled (masked or obfuscated gradients; Athalye et al. 2018, Carlini et al. 2019's checklist).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from advlab.attacks.base import Attack, Best, Found, Goal, Oracle, check_counts, check_epsilons, register
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
        check_counts(self, "tries")

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        assert eps is not None
        best = Best(x)
        active = torch.arange(len(x), device=x.device)
        draws = SampleDraws(x, self.seed, stream=NOISE_STREAM)
        for t in range(self.tries):
            x0, aim = x[active], goal.rows(active)
            xe = self._prepare((x0 + eps * self._direction(draws, active, t, x0)).clamp(0, 1), x0, eps)
            logits = oracle.logits(xe, active)
            succ = best.record(active, xe, logits, aim, margin(logits, aim.labels, aim.targeted))
            if self.early_stop:
                active = active[~succ]
                if len(active) == 0:
                    break
        return best.result()

    def _direction(self, draws: SampleDraws, rows: torch.Tensor, t: int, x0: torch.Tensor) -> torch.Tensor:
        """Try ``t``'s unit direction for each row: a random vertex of the cube (L-inf), else g / ||g||_p."""
        if self.norm == "linf":
            return draws.signs(rows, t, x0.shape[1:]).to(x0)
        g = draws.normal(rows, t, x0.shape[1:]).to(x0)
        p = 2 if self.norm == "l2" else 1
        return g / g.flatten(1).norm(p=p, dim=1).clamp_min(1e-12).view(-1, *[1] * (x0.ndim - 1))
