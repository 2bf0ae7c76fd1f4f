"""Per-sample minimal distances: what a minimum-norm attack found, and a bisection that turns an eps-bounded
attack (APGD, APGD-T) into one.

The distance of a sample is the norm of the smallest adversarial perturbation an attack found for it, in
[0, 1] pixel units (L0: the number of changed values), and ``inf`` where it found none. A sample the model
already gets wrong (untargeted) is at distance 0. From distances, robust accuracy at every eps at once is
``mean(correct & (distance > eps))`` (:mod:`advlab.experiments.optimality`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from advlab.attacks.base import (
    Attack,
    Oracle,
    SubOracle,
    Target,
    frozen_parameters,
    is_success,
    result_from,
)
from advlab.threat import distance
from advlab.types import AttackResult

#: the norms a minimum-norm attack may be measured in
MIN_NORMS = ("l0", "l1", "l2", "linf")
#: the dual exponent of each norm (L0 borrows L2's), for linear estimates of the distance to a boundary
DUAL = {"linf": 1.0, "l2": 2.0, "l1": math.inf, "l0": 2.0}
#: what an untargeted minimum-norm attack ascends: towards the class with the nearest linearized boundary, or the
#: paper's own loss
TOWARD = ("nearest", "paper")


@dataclass(frozen=True, kw_only=True)
class MinimumNorm(Attack):
    """The base of the minimum-norm attacks (FMN, DDN): ``toward`` (one of :data:`TOWARD`, untargeted only), and a
    result whose ``min_eps`` holds each sample's distance in the attack's norm (inf where it failed)."""

    toward: str = "nearest"

    def validate(self) -> None:
        if self.toward not in TOWARD:
            raise ValueError(f"toward must be 'nearest' or 'paper', got {self.toward!r}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target = None) -> AttackResult:
        """As every attack; ``min_eps`` holds each sample's distance (the norm of ``x_adv - x``, inf where it failed)."""
        res = super().__call__(model, x, y, target)
        res.min_eps = distances(res, x, self.threat_norm)
        return res


def distances(res: AttackResult, x: torch.Tensor, norm: str) -> torch.Tensor:
    """(N,) CPU float: ``||x_adv - x||_norm`` where the attack succeeded, ``inf`` where it did not."""
    d = distance(res.x_adv.detach().cpu().float() - x.detach().cpu().float(), norm)
    return torch.where(res.success.cpu().bool(), d, torch.full_like(d, math.inf))


def cosine(start: float, end: float, k: int, steps: int) -> float:
    """Cosine annealing from ``start`` (k = 0) to ``end`` (k = steps): end + (start - end) (1 + cos(pi k / steps)) / 2."""
    return end + (start - end) * (1 + math.cos(math.pi * k / max(steps, 1))) / 2


#: how many of the most likely other classes :func:`nearest_class` ranks (MALT's default; all of them on 10 classes)
CANDIDATES = 9


def nearest_class(oracle: Oracle, x0: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
    """Per sample, the class t != y (among the :data:`CANDIDATES` most likely others) whose decision boundary is
    nearest to ``x0`` by the linear estimate (z_y - z_t) / ||grad (z_y - z_t)||_q (q the dual norm; DeepFool's
    and MALT's estimate, exact for a linear model without the box). One forward and K + 1 backwards per sample
    (K = min(CANDIDATES, classes - 1)), counted; one more forward reads the logits that rank the candidates."""
    z0 = oracle.logits(x0, None)
    k = min(CANDIDATES, z0.shape[1] - 1)
    others = z0.scatter(1, labels[:, None], -math.inf).argsort(1, descending=True)[:, :k]
    z, jac = oracle.logit_grads(x0, None, torch.cat([labels[:, None], others], 1))
    gap = z.float().gather(1, labels[:, None]) - z.float().gather(1, others)
    est = gap / (jac[:, 1:] - jac[:, :1]).flatten(2).float().norm(p=DUAL[norm], dim=2).clamp(min=1e-12)
    return others.gather(1, est.argmin(1, keepdim=True)).squeeze(1)


class Smallest:
    """Per sample, the adversarial point of smallest norm seen so far (the fallback: the clean point)."""

    def __init__(self, x: torch.Tensor, logits: torch.Tensor) -> None:
        self.x, self.logits = x.detach().clone(), logits.detach().clone()
        self.norm = torch.full((len(x),), math.inf, device=x.device)

    def update(
        self, rows: torch.Tensor, x: torch.Tensor, logits: torch.Tensor, adv: torch.Tensor, norm: torch.Tensor
    ) -> None:
        better = adv & (norm < self.norm[rows])
        r = rows[better]
        self.x[r], self.logits[r], self.norm[r] = x[better].detach(), logits[better].detach(), norm[better]


def bisect(
    attack: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, hi: float, probes: int, target: Target = None
) -> AttackResult:
    """An eps-bounded attack (APGD or APGD-T, ``attack.eps`` ignored) made minimum-norm by a per-sample bisection.

    Every sample starts with the bracket [0, ``hi``]; each of ``probes`` rounds attacks every sample still
    searching at its own eps (the middle of its bracket; the first probe at ``hi``), and a success moves the
    upper end down to the norm of the point found, a failure the lower end up. The result holds, per sample,
    the smallest adversarial point found (``min_eps``: its norm in the attack's norm, inf if none). Cost:
    ``probes`` runs of the attack. Images in [0, 1]; eps in [0, 1] pixel units.
    """
    from advlab.attacks.apgd import APGD

    if not isinstance(attack, APGD):
        raise ValueError(f"bisect takes APGD or APGD-T, not {attack.name}")
    norm = attack.threat_norm
    atk = dataclasses.replace(attack, eps=hi, early_stop=False, restarts=1)
    with frozen_parameters(model):
        oracle = Oracle(model, len(x), x.device)
        labels, targeted = atk._labels(oracle, x, y, target, torch.Generator().manual_seed(atk.seed))
        clean = oracle.logits(x, None)
        best = Smallest(x, clean)
        best.update(
            torch.arange(len(x), device=x.device),
            x,
            clean,
            is_success(clean, labels, targeted),
            torch.zeros(len(x), device=x.device),
        )
        lo, up = torch.zeros(len(x), device=x.device), torch.full((len(x),), float(hi), device=x.device)
        for probe in range(probes):
            rows = torch.isinf(best.norm).nonzero().flatten() if probe == 0 else (best.norm > 0).nonzero().flatten()
            if len(rows) == 0:
                break
            eps = up[rows] if probe == 0 else (lo[rows] + up[rows]) / 2
            xa, za = _probe(atk, SubOracle(oracle, rows), x[rows], labels[rows], y[rows], targeted, eps, probe)
            ok = is_success(za, labels[rows], targeted)
            norm_found = distance(xa - x[rows], norm).to(x.device)
            best.update(rows, xa, za, ok, norm_found)
            up[rows] = torch.where(ok, torch.minimum(norm_found, up[rows]), up[rows])
            lo[rows] = torch.where(ok, lo[rows], torch.maximum(lo[rows], eps))
        res = result_from(oracle, x, best.x.to(x.dtype), y, labels, targeted, best.logits)
    res.min_eps = distances(res, x, norm)
    return res


def _probe(
    atk: object,
    oracle: Oracle,
    x: torch.Tensor,
    labels: torch.Tensor,
    y: torch.Tensor,
    targeted: bool,
    eps: torch.Tensor,
    stream: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One APGD (or APGD-T: its targets in turn, on the samples still standing) run at per-sample ``eps``."""
    from advlab.attacks.apgd import APGDT

    if not isinstance(atk, APGDT) or targeted:
        return atk._search(oracle, x, labels, y, targeted, eps, None, stream)  # type: ignore[attr-defined]
    clean = oracle.logits(x, None)
    best_x, best_logits = x.detach().clone(), clean.clone()
    done = is_success(clean, labels, False)
    ranked = clean.argsort(1, descending=True)
    order = ranked[ranked != labels[:, None]].view(len(x), -1)
    for rank in range(min(atk.n_targets, order.shape[1])):
        todo = (~done).nonzero().flatten()
        if len(todo) == 0:
            break
        xa, za = atk._search(
            SubOracle(oracle, todo),
            x[todo],
            order[todo, rank],
            labels[todo],
            True,
            eps[todo],
            None,
            stream * atk.n_targets + rank,
        )
        broke = is_success(za, labels[todo], False)
        hit = todo[broke]
        best_x[hit], best_logits[hit], done[hit] = xa[broke], za[broke], True
    return best_x, best_logits
