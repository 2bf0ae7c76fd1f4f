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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from advlab.attacks.base import (
    Attack,
    Found,
    Goal,
    Oracle,
    SubOracle,
    Target,
    frozen_parameters,
    result_from,
)
from advlab.threat import DUAL, distance
from advlab.types import AttackResult

if TYPE_CHECKING:
    from advlab.attacks.apgd import APGD

#: the norms a minimum-norm attack may be measured in
MIN_NORMS = ("l0", "l1", "l2", "linf")
#: what an untargeted minimum-norm attack ascends: towards the class with the nearest linearized boundary, or the
#: paper's own loss
TOWARD = ("nearest", "paper")


class Walk(NamedTuple):
    """The state of a minimum-norm attack (FMN, DDN) over its batch: the clean points ``x0``, the perturbations
    ``delta`` and each sample's current radius; an attack's step updates the running rows in place."""

    x0: torch.Tensor
    delta: torch.Tensor
    radius: torch.Tensor


class Seen(NamedTuple):
    """What the evaluation at step ``k`` found for the rows that go on: the gradient of the objective, its value,
    whether the point was adversarial, and the smallest adversarial norm found so far (inf: none yet)."""

    k: int
    grad: torch.Tensor
    loss: torch.Tensor
    adv: torch.Tensor
    best: torch.Tensor


@dataclass(frozen=True, kw_only=True)
class MinimumNorm(Attack):
    """The base of the minimum-norm attacks (FMN, DDN): ``toward`` (one of :data:`TOWARD`, untargeted only), a
    result whose ``min_eps`` holds each sample's distance in the attack's norm (inf where it failed), and the loop
    they share (:meth:`_attack`); each attack supplies its objective, first radius and step."""

    toward: str = "nearest"
    if TYPE_CHECKING:  # each attack declares its own ``steps`` option, so that its fields keep their order
        steps: int

    def validate(self) -> None:
        if self.toward not in TOWARD:
            raise ValueError(f"toward must be 'nearest' or 'paper', got {self.toward!r}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target = None) -> AttackResult:
        """As every attack; ``min_eps`` holds each sample's distance (the norm of ``x_adv - x``, inf where it
        failed)."""
        res = super().__call__(model, x, y, target)
        res.min_eps = distances(res, x, self.threat_norm)
        return res

    # ---------------------------------------------------------------- for subclasses
    def _objective(self, goal: Goal, toward: torch.Tensor | None) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-sample objective (logits -> (N,)) whose gradient steers the rows with ``goal``; ``toward``: their
        nearest other class (:func:`nearest_class`), or None for the paper's loss."""
        raise NotImplementedError

    def _first_radius(self, n: int, device: torch.device) -> torch.Tensor:
        raise NotImplementedError

    def _move(self, walk: Walk, rows: torch.Tensor, seen: Seen) -> None:
        """Update ``walk.delta`` and ``walk.radius`` at ``rows`` (the running rows) from what ``seen`` found there."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the loop
    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        """``steps`` evaluations from delta = 0, a :meth:`_move` after each but the last; per sample the result is
        the adversarial point of smallest norm evaluated (the clean point where none). A sample stops once its best
        norm cannot improve (0, or 1 changed value for L0: it was adversarial from the start)."""
        x0, norm, steps = x.detach(), self.threat_norm, self.steps
        walk = Walk(x0, torch.zeros_like(x0), self._first_radius(len(x), x.device))
        toward = (
            nearest_class(oracle, x0, goal.labels, norm) if self.toward == "nearest" and not goal.targeted else None
        )
        floor = 1.0 if norm == "l0" else 0.0  # a best norm at or below this cannot improve
        best: Smallest | None = None
        active = torch.arange(len(x), device=x.device)
        for k in range(steps):
            a, last, aim = active, k == steps - 1, goal.rows(active)
            xe = self._prepare(x0[a] + walk.delta[a], x0[a], None)
            objective = self._objective(aim, None if toward is None else toward[a])
            logits, loss, g = oracle.evaluate(xe, a, objective, not last)
            if best is None:
                best = Smallest(x0, logits)
            adv = aim.reached(logits)
            best.update(a, xe, logits, adv, distance(xe - x0[a], norm).to(x.device))
            keep = best.norm[a] > floor
            if last or not bool(keep.any()):
                break
            assert g is not None
            active = a[keep]
            self._move(walk, active, Seen(k, g[keep], loss[keep], adv[keep], best.norm[active]))
        assert best is not None
        return best.x, best.logits


def distances(res: AttackResult, x: torch.Tensor, norm: str) -> torch.Tensor:
    """(N,) CPU float: ``||x_adv - x||_norm`` where the attack succeeded, ``inf`` where it did not."""
    d = distance(res.x_adv.detach().cpu().float() - x.detach().cpu().float(), norm)
    return torch.where(res.success.cpu().bool(), d, torch.full_like(d, math.inf))


def cosine(start: float, end: float, k: int, steps: int) -> float:
    """Cosine annealing from ``start`` (k = 0) to ``end`` (k = steps):

    end + (start - end) (1 + cos(pi k / steps)) / 2
    """
    return end + (start - end) * (1 + math.cos(math.pi * k / max(steps, 1))) / 2


def gap(logits: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """z_a - z_b per sample (float32), for the classes ``a`` and ``b`` (N,): the loss towards one chosen class."""
    z = logits.float()
    return z.gather(1, a[:, None]).squeeze(1) - z.gather(1, b[:, None]).squeeze(1)


def wrong_classes(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(N, K - 1): per sample every class but ``labels``, the most likely first."""
    ranked = logits.argsort(1, descending=True)
    return ranked[ranked != labels[:, None]].view(len(logits), -1)


def boundary_distances(
    oracle: Oracle, x: torch.Tensor, labels: torch.Tensor, others: torch.Tensor, norm: str
) -> torch.Tensor:
    """(N, K): the linear estimate (z_y - z_t) / ||grad_x (z_y - z_t)||_q of the distance from ``x`` to the boundary
    between y (``labels``) and each class t of ``others`` (N, K), q the dual norm of ``norm``. Exact for a linear
    model without the box (DeepFool's and MALT's estimate). One forward and K + 1 backwards per sample, counted."""
    z, jac = oracle.logit_grads(x, None, torch.cat([labels[:, None], others], 1))
    diff = z.float().gather(1, labels[:, None]) - z.float().gather(1, others)
    return diff / (jac[:, :1] - jac[:, 1:]).flatten(2).float().norm(p=DUAL[norm], dim=2).clamp(min=1e-12)


#: how many of the most likely other classes :func:`nearest_class` ranks (MALT's default; all of them on 10 classes)
CANDIDATES = 9


def nearest_class(oracle: Oracle, x0: torch.Tensor, labels: torch.Tensor, norm: str) -> torch.Tensor:
    """Per sample, the class t != y (among the :data:`CANDIDATES` most likely others) whose decision boundary is
    nearest to ``x0`` by :func:`boundary_distances`. One forward and K + 1 backwards per sample
    (K = min(CANDIDATES, classes - 1)), counted; one more forward reads the logits that rank the candidates."""
    z0 = oracle.logits(x0, None)
    k = min(CANDIDATES, z0.shape[1] - 1)
    others = z0.scatter(1, labels[:, None], -math.inf).argsort(1, descending=True)[:, :k]
    est = boundary_distances(oracle, x0, labels, others, norm)
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
        goal = atk._goal(oracle, x, y, target)
        clean = oracle.logits(x, None)
        best = Smallest(x, clean)
        lo, up = torch.zeros(len(x), device=x.device), torch.full((len(x),), float(hi), device=x.device)
        best.update(torch.arange(len(x), device=x.device), x, clean, goal.reached(clean), lo.clone())
        for probe in range(probes):
            rows = torch.isinf(best.norm).nonzero().flatten() if probe == 0 else (best.norm > 0).nonzero().flatten()
            if len(rows) == 0:
                break
            eps = up[rows] if probe == 0 else (lo[rows] + up[rows]) / 2
            sub = goal.rows(rows)
            xa, za = _probe(atk, SubOracle(oracle, rows), x[rows], sub, eps, probe)
            ok = sub.reached(za)
            norm_found = distance(xa - x[rows], norm).to(x.device)
            best.update(rows, xa, za, ok, norm_found)
            up[rows] = torch.where(ok, torch.minimum(norm_found, up[rows]), up[rows])
            lo[rows] = torch.where(ok, lo[rows], torch.maximum(lo[rows], eps))
        res = result_from(oracle, x, best.x.to(x.dtype), goal, best.logits)
    res.min_eps = distances(res, x, norm)
    return res


def _probe(atk: APGD, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: torch.Tensor, probe: int) -> Found:
    """One APGD (or APGD-T: its targets in turn, by logit, on the samples still unbroken) run at per-sample ``eps``."""
    from advlab.attacks.apgd import APGDT

    if not isinstance(atk, APGDT) or goal.targeted:
        return atk._search(oracle, x, goal, eps, None, probe)
    clean = oracle.logits(x, None)
    order = wrong_classes(clean, goal.labels)
    return atk.in_turn(oracle, x, goal, eps, clean, order, first=probe * atk.n_targets, stride=1)
