"""Fast Minimum-Norm attack (Pintor, Roli, Brendel & Biggio, "Fast Minimum-norm Adversarial Attacks through
Adaptive Norm Constraints", NeurIPS 2021), for L0, L1, L2 and L-inf.

FMN looks for the smallest perturbation that changes the decision by steering a norm constraint eps and a
projected gradient step at once. With the logit loss L(x) = -margin (untargeted z_y - max_{j != y} z_j,
targeted max_{j != t} z_j - z_t; the point is adversarial where L < 0), at each step k with the current
perturbation delta and g = grad L(x0 + delta):

    adversarial:                 eps <- min(eps (1 - gamma_k), ||delta*||)        (delta* the smallest found)
    not adversarial, none found: eps <- max(||delta|| + L / ||g||_q, eps) (1 + gamma_k)   (q the dual norm)
    not adversarial, one found:  eps <- eps (1 + gamma_k)
    delta <- Proj_eps(delta - alpha_k s(g)),  then clipped so that x0 + delta lies in [0, 1]

gamma_k and alpha_k decay from ``gamma`` to ``gamma_final`` and from ``alpha`` to ``alpha_final`` by cosine
annealing (the paper's schedule; gamma0 = 0.05). ``toward="paper"`` is the paper's loss (the largest other
logit, re-chosen every step); the default ``"nearest"`` (untargeted only) fixes, per sample, the class whose
boundary is nearest to x0 by the linear estimate (z_y - z_t) / ||grad (z_y - z_t)||_q (DeepFool's, MALT's;
two forwards and up to 10 backwards) and uses L = z_y - z_t: the paper's loss follows the largest logit, which
on a linear model leads to the boundary of that class even where another class's is nearer. The first eps is
the linear estimate of the distance to the boundary, taken a factor 1 + gamma past it (without it a linear model
leaves delta exactly on the boundary). Units: L1, L2 and L-inf steps are ``alpha_k * eps`` along s(g)
(g / ||g||_2 for L2 and L1, sign(g) for L-inf), so the step scales with the ball; L0 (eps counts changed
values, rounded) steps ``alpha_k * sqrt(eps)`` along g / ||g||_2 and keeps the eps largest changes; eps
updates move it by at least one value. The result is, per sample, the smallest adversarial point seen
(``min_eps``: its norm, inf where none). A sample whose best norm cannot improve (0: already adversarial)
stops. Cost per sample: ``steps`` forwards and ``steps - 1`` backwards (the last point is only evaluated),
plus the nearest-class pick.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import ClassVar

import torch

from advlab.attacks.base import Goal, check_counts, register
from advlab.attacks.minimal import MIN_NORMS, MinimumNorm, Seen, Walk, cosine, gap
from advlab.losses import margin
from advlab.threat import DUAL, check_norm, distance, project


def project_l0(delta: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep, per sample, the ``k`` (N,) entries of ``delta`` largest in magnitude; zero the rest."""
    flat = delta.flatten(1)
    srt = flat.abs().sort(1, descending=True).values
    kth = srt.gather(1, (k.long() - 1).clamp(0, flat.shape[1] - 1)[:, None])
    keep = (flat.abs() >= kth) & (k[:, None] > 0)
    return (flat * keep).view_as(delta)


@register
@dataclass(frozen=True, kw_only=True)
class FMN(MinimumNorm):
    """FMN in ``norm`` (l0, l1, l2, linf): ``steps`` iterations; step ``alpha`` -> ``alpha_final`` (default
    alpha / 100, relative to eps, see the module docstring) and eps factor ``gamma`` -> ``gamma_final``, both
    cosine-annealed. Untargeted or targeted."""

    norm: str = "l2"
    steps: int = 100
    alpha: float = 1.0
    alpha_final: float | None = None
    gamma: float = 0.05
    gamma_final: float = 0.0

    name: ClassVar[str] = "fmn"

    def validate(self) -> None:
        if self.norm not in MIN_NORMS:
            raise ValueError(f"norm must be one of {', '.join(MIN_NORMS)} for FMN, got {self.norm!r}")
        check_counts(self, "steps")
        if not self.alpha > 0 or (self.alpha_final is not None and not 0 <= self.alpha_final <= self.alpha):
            raise ValueError(
                f"alpha must be positive and alpha_final in [0, alpha], got {self.alpha}, {self.alpha_final}"
            )
        if not 0 < self.gamma < 1 or not 0 <= self.gamma_final <= self.gamma:
            raise ValueError(
                f"gamma must be in (0, 1) and gamma_final in [0, gamma], got {self.gamma}, {self.gamma_final}"
            )
        super().validate()

    def _objective(self, goal: Goal, toward: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """L = -margin (the paper's), or z_y - z_t towards the nearest class t: the point is adversarial where L < 0."""
        if toward is None:
            return lambda z: -margin(z, goal.labels, goal.targeted)
        return partial(gap, a=goal.labels, b=toward)

    def _first_radius(self, n: int, device: torch.device) -> torch.Tensor:
        return torch.zeros(n, device=device)

    def _move(self, walk: Walk, rows: torch.Tensor, seen: Seen) -> None:
        """The next eps (:meth:`_radius`), then the step of delta in the new ball."""
        walk.radius[rows] = self._radius(walk.radius[rows], walk.delta[rows], seen)
        walk.delta[rows] = self._step(walk.x0[rows], walk.delta[rows], seen.grad, walk.radius[rows], seen.k)

    def _radius(self, eps: torch.Tensor, delta: torch.Tensor, seen: Seen) -> torch.Tensor:
        """The next eps of each running sample (see the module docstring)."""
        gamma, adv, best = cosine(self.gamma, self.gamma_final, seen.k, self.steps), seen.adv, seen.best
        found = torch.isfinite(best)
        if self.norm == "l0":
            shrink = torch.minimum(torch.minimum(eps - 1, torch.floor(eps * (1 - gamma))), best)
            grow = torch.maximum(eps + 1, torch.floor(eps * (1 + gamma)))
            first = torch.maximum(eps + 1, torch.ceil(eps * 1.5))  # before the first success: grow by half
            return torch.where(adv, shrink, torch.where(found, grow, first)).clamp(min=0)
        dual = seen.grad.flatten(1).float().norm(p=DUAL[self.norm], dim=1).clamp(min=1e-12)
        estimate = (distance(delta, self.norm).to(eps) + seen.loss.float().clamp(min=0) / dual) * (1 + gamma)
        return torch.where(
            adv, torch.minimum(eps * (1 - gamma), best), torch.where(found, eps, estimate.maximum(eps)) * (1 + gamma)
        )

    def _step(self, x0: torch.Tensor, delta: torch.Tensor, g: torch.Tensor, eps: torch.Tensor, k: int) -> torch.Tensor:
        """delta - alpha_k s(g), projected onto the eps-ball and clipped to the box."""
        alpha = cosine(self.alpha, self.alpha / 100 if self.alpha_final is None else self.alpha_final, k, self.steps)
        view = (-1, *[1] * (g.ndim - 1))
        g = g.to(delta.dtype)
        if self.norm == "linf":
            moved = delta - (alpha * eps).view(view) * g.sign()
        else:
            unit = g / g.flatten(1).norm(dim=1).clamp(min=1e-12).view(view)
            scale = eps.sqrt() if self.norm == "l0" else eps
            moved = delta - (alpha * scale).view(view) * unit
        moved = project_l0(moved, eps) if self.norm == "l0" else project(moved, eps, check_norm(self.norm))
        return (x0 + moved).clamp(0, 1) - x0
