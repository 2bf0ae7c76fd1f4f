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
two forwards and up to 10 backwards) and uses L = z_y - z_t: the paper's loss follows the largest logit, which on a
linear model leads to the boundary of that class even where another class's is nearer. The first eps is the
linear estimate of the distance to the boundary, taken a factor 1 + gamma past it (without it a linear model leaves delta exactly on the
boundary). Units: L1, L2 and L-inf steps are ``alpha_k * eps`` along s(g) (g / ||g||_2 for L2 and L1, sign(g)
for L-inf), so the step scales with the ball; L0 (eps counts changed values, rounded) steps
``alpha_k * sqrt(eps)`` along g / ||g||_2 and keeps the eps largest changes; eps updates move it by at least
one value. The result is, per sample, the smallest adversarial point seen (``min_eps``: its norm, inf where
none). A sample whose best norm cannot improve (0: already adversarial) stops. Cost per sample: ``steps``
forwards and ``steps - 1`` backwards (the last point is only evaluated), plus the nearest-class pick.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from advlab.attacks.base import Oracle, is_success, register
from advlab.attacks.minimal import (
    DUAL,
    MIN_NORMS,
    MinimumNorm,
    Smallest,
    cosine,
    nearest_class,
)
from advlab.losses import margin
from advlab.threat import distance, project


def project_l0(delta: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Keep, per sample, the ``k`` (N,) entries of ``delta`` largest in magnitude; zero the rest."""
    flat = delta.flatten(1)
    srt = flat.abs().sort(1, descending=True).values
    kth = srt.gather(1, (k.long() - 1).clamp(0, flat.shape[1] - 1)[:, None])
    keep = (flat.abs() >= kth) & (k[:, None] > 0)
    return (flat * keep).view_as(delta)


def _gap(z: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_y - z_t per sample (the loss towards one chosen class)."""
    z = z.float()
    return z.gather(1, y[:, None]).squeeze(1) - z.gather(1, t[:, None]).squeeze(1)


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
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if not self.alpha > 0 or (self.alpha_final is not None and not 0 <= self.alpha_final <= self.alpha):
            raise ValueError(
                f"alpha must be positive and alpha_final in [0, alpha], got {self.alpha}, {self.alpha_final}"
            )
        if not 0 < self.gamma < 1 or not 0 <= self.gamma_final <= self.gamma:
            raise ValueError(
                f"gamma must be in (0, 1) and gamma_final in [0, gamma], got {self.gamma}, {self.gamma_final}"
            )
        super().validate()

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
        n, dev = len(x), x.device
        x0 = x.detach()
        delta = torch.zeros_like(x0)
        radius = torch.zeros(n, device=dev)
        best: Smallest | None = None
        active = torch.arange(n, device=dev)
        floor = 1.0 if self.norm == "l0" else 0.0  # a best norm at or below this cannot improve
        other = nearest_class(oracle, x0, labels, self.norm) if self.toward == "nearest" and not targeted else None
        for k in range(self.steps):
            a, last = active, k == self.steps - 1
            lab = labels[a]
            xe = self._prepare(x0[a] + delta[a], x0[a], None)
            loss_fn = (
                (lambda z, lab=lab: -margin(z, lab, targeted))
                if other is None
                else (lambda z, lab=lab, t=other[a]: _gap(z, lab, t))
            )
            logits, loss, g = oracle.evaluate(xe, a, loss_fn, not last)
            if best is None:
                best = Smallest(x0, logits)
            adv = is_success(logits, lab, targeted)
            best.update(a, xe, logits, adv, distance(xe - x0[a], self.norm).to(dev))
            keep = best.norm[a] > floor
            if last or not bool(keep.any()):
                break
            assert g is not None
            a, g, adv, loss = a[keep], g[keep], adv[keep], loss[keep]
            radius[a] = self._radius(radius[a], delta[a], g, loss, adv, best.norm[a], k)
            delta[a] = self._step(x0[a], delta[a], g, radius[a], k)
            active = a
        assert best is not None
        return best.x, best.logits

    def _radius(
        self,
        eps: torch.Tensor,
        delta: torch.Tensor,
        g: torch.Tensor,
        loss: torch.Tensor,
        adv: torch.Tensor,
        best: torch.Tensor,
        k: int,
    ) -> torch.Tensor:
        """The next eps of each running sample (see the module docstring)."""
        gamma = cosine(self.gamma, self.gamma_final, k, self.steps)
        found = torch.isfinite(best)
        if self.norm == "l0":
            shrink = torch.minimum(torch.minimum(eps - 1, torch.floor(eps * (1 - gamma))), best)
            grow = torch.maximum(eps + 1, torch.floor(eps * (1 + gamma)))
            first = torch.maximum(eps + 1, torch.ceil(eps * 1.5))  # before the first success: grow by half
            return torch.where(adv, shrink, torch.where(found, grow, first)).clamp(min=0)
        dual = g.flatten(1).float().norm(p=DUAL[self.norm], dim=1).clamp(min=1e-12)
        estimate = (distance(delta, self.norm).to(eps) + loss.float().clamp(min=0) / dual) * (1 + gamma)
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
        if self.norm == "l0":
            moved = project_l0(moved, eps)
        else:
            moved = project(moved, eps, self.norm)  # type: ignore[arg-type]
        return (x0 + moved).clamp(0, 1) - x0
