"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness...", ICML 2020).

PGD with momentum and a step size that adapts per sample, no step-size tuning:

    z_{k+1} = P(x_k + eta_k * s(grad L(x_k)))
    x_{k+1} = P(x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1})),   a = 0.75 (a = 1 on the first step)

with eta_0 = 2 eps. At checkpoints w_j = ceil(p_j N) (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
- 0.03, 0.06)) a sample halves its step and restarts from its best point when fewer than rho = 0.75 of the
steps since the last checkpoint increased the loss, or when neither its step nor its best loss changed.

The heavy-ball coefficient a = 0.75 is AutoAttack's (:data:`HEAVY_BALL`), not a PGD-style momentum; there is no
step size to set. ``loss="dlr"`` (the Difference of Logits Ratio) is invariant to shifting and scaling the logits, so a
model whose softmax saturates (and whose CE gradients vanish) does not fool it. :class:`APGDT` is the
targeted version run against the model's top-k other classes in turn (AutoAttack's APGD-T).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from advlab.attacks.base import (
    Attack,
    Best,
    Found,
    Goal,
    Oracle,
    SubOracle,
    check_counts,
    check_epsilons,
    register,
    restarts,
)
from advlab.attacks.minimal import boundary_distances, wrong_classes
from advlab.attacks.pgd import start_delta
from advlab.attacks.step import Ball, take_rows
from advlab.losses import Loss, get_loss
from advlab.threat import check_norm, steepest_step

#: AutoAttack's heavy-ball coefficient a: the weight of the new projected step against the previous move
HEAVY_BALL = 0.75


def loss_name(loss: str | Loss) -> str:
    """A loss as a name: the string itself, else the function's ``__name__``."""
    return loss if isinstance(loss, str) else getattr(loss, "__name__", type(loss).__name__)


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD reconsiders each sample's step size."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p if q <= 1})[1:]


@register
@dataclass(frozen=True, kw_only=True)
class APGD(Attack):
    """Auto-PGD: ``steps`` iterations per restart on ``loss`` ("ce", "dlr" or any advlab loss) in the ``norm``
    ball of radius ``eps`` (a float or a list: a robustness curve); ``rho`` the checkpoint threshold;
    ``restarts`` further runs from new random starts for the samples still unbroken; ``early_stop`` drops a
    sample at its first success. No step size: it adapts, from 2 eps."""

    eps: float | Sequence[float] = 8 / 255
    steps: int = 100
    norm: str = "linf"
    loss: str | Loss = "ce"
    rho: float = 0.75
    restarts: int = 1
    random_start: bool = True
    early_stop: bool = False

    name: ClassVar[str] = "apgd"

    @property
    def label(self) -> str:
        """``apgd-ce``, ``apgd-dlr``, ...: APGD named by its loss, as AutoAttack does."""
        return f"{self.name}-{loss_name(self.loss)}"

    def validate(self) -> None:
        check_epsilons(self.eps, self.norm)
        check_counts(self, "steps", "restarts")
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")
        get_loss(self.loss)

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        assert eps is not None
        return self._search(oracle, x, goal, eps, init, 0)

    def _search(
        self,
        oracle: Oracle,
        x: torch.Tensor,
        goal: Goal,
        eps: float | torch.Tensor,
        init: torch.Tensor | None,
        stream: int,
    ) -> Found:
        """``restarts`` APGD runs, each on the samples still unbroken; random starts from streams ``stream + r``.
        ``eps``: a float, or per sample (N,) (:func:`advlab.attacks.minimal.bisect`)."""
        norm = check_norm(self.norm)
        best = Best(x)
        for restart, unbroken in restarts(best, self.restarts):
            rows = torch.arange(len(x), device=x.device) if unbroken is None else unbroken
            x0 = x[rows]
            warm = init[rows] if init is not None and restart == 0 else None
            e = take_rows(eps, unbroken)
            delta = start_delta(
                x0, e, norm, init=warm, random=self.random_start, seed=self.seed, restart=stream + restart
            )
            self._climb(oracle, goal.rows(rows), _Run(x0, (x0 + delta).clamp(0, 1), e, rows), best)
        return best.result()

    def _climb(self, oracle: Oracle, goal: Goal, run: _Run, best: Best) -> None:
        """One APGD run of ``steps`` iterations from ``run.xk``; every iterate is scored into ``best`` at
        ``run.rows``."""
        norm = check_norm(self.norm)
        loss_fn, ball, x0, xk = get_loss(self.loss), Ball(run.eps, norm), run.x0, run.xk
        sizes = _StepSizes(xk, run.eps)
        x_prev = xk.clone()
        marks = set(checkpoints(self.steps))
        active = torch.arange(len(x0), device=x0.device)
        for k in range(self.steps + 1):
            a, where, aim = active, run.rows[active], goal.rows(active)
            xe = self._prepare(xk[a], x0[a], run.eps)  # eps per row only in bisect, where no row stops early
            logits, loss, grad = oracle.evaluate(xe, where, aim.objective(loss_fn), k < self.steps)
            succ = best.record(where, xe, logits, aim, loss)
            if k == self.steps:
                break
            assert grad is not None
            g = sizes.record(a, loss, xk, grad)  # on the running iterate, not the quantized one
            if self.early_stop:
                active = a[~succ]
                if len(active) == 0:
                    break
            if k + 1 in marks:  # halving samples restart from their best point and its gradient
                hx = sizes.checkpoint(k + 1, self.rho)
                xk[hx], g[hx] = sizes.best_x[hx], sizes.best_grad[hx]
                x_prev[hx] = xk[hx]
            a = active
            nxt = heavy_ball_step(xk[a], x_prev[a], g[a], sizes.eta[a], x0[a], ball, 1.0 if k == 0 else HEAVY_BALL)
            x_prev[a], xk[a] = xk[a], nxt


@dataclass(frozen=True)
class _Run:
    """One APGD run: the clean points ``x0`` of its rows, the first iterate ``xk`` (updated in place), the radius
    ``eps`` (a float or per row) and the rows' positions in the batch of the search."""

    x0: torch.Tensor
    xk: torch.Tensor
    eps: float | torch.Tensor
    rows: torch.Tensor


def heavy_ball_step(
    x: torch.Tensor, x_prev: torch.Tensor, grad: torch.Tensor, eta: torch.Tensor, x0: torch.Tensor, ball: Ball, a: float
) -> torch.Tensor:
    """APGD's update: z = P(x + eta * s(grad)), then P(x + a (z - x) + (1 - a)(x - x_prev)); eta is (N,)."""
    z = ball.project(x + eta.view(-1, *[1] * (x.ndim - 1)) * steepest_step(grad, ball.norm), x0)
    return ball.project(x + a * (z - x) + (1 - a) * (x - x_prev), x0)


class _StepSizes:
    """APGD's per-sample step size eta (from 2 eps) and what its checkpoint rule needs: per sample the best loss
    of the run with its point and gradient, and how many steps raised the loss since the last checkpoint."""

    def __init__(self, xk: torch.Tensor, eps: float | torch.Tensor) -> None:
        m, dev = len(xk), xk.device
        self.eta = torch.full((m,), 2.0, device=dev) * eps  # eps: a float, or (m,) per sample (minimal.bisect)
        self.best_loss = torch.full((m,), -torch.inf, device=dev)
        self.best_x, self.best_grad = xk.clone(), torch.zeros_like(xk)
        self.increases = torch.zeros(m, device=dev)
        self.loss_prev = torch.full((m,), -torch.inf, device=dev)
        self.last_mark, self.eta_at_mark, self.best_at_mark = 0, self.eta.clone(), self.best_loss.clone()

    def record(self, rows: torch.Tensor, loss: torch.Tensor, xk: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Count the loss increases of ``rows`` and keep their best points; return the gradient over every row
        of the run (zero where not evaluated)."""
        self.increases[rows] += (loss > self.loss_prev[rows]).float()
        self.loss_prev[rows] = loss
        improved = loss > self.best_loss[rows]
        ia = rows[improved]
        self.best_loss[ia], self.best_x[ia], self.best_grad[ia] = loss[improved], xk[ia], grad[improved]
        g = torch.zeros_like(xk)
        g[rows] = grad
        return g

    def checkpoint(self, k: int, rho: float) -> torch.Tensor:
        """At checkpoint ``k``, halve eta where fewer than ``rho`` of the steps since the last checkpoint raised the
        loss, or where neither eta nor the best loss changed since; return those rows."""
        span = k - self.last_mark
        halve = (self.increases < rho * span) | ((self.eta_at_mark == self.eta) & (self.best_at_mark == self.best_loss))
        self.eta = torch.where(halve, self.eta / 2, self.eta)
        self.increases.zero_()
        self.last_mark, self.eta_at_mark, self.best_at_mark = k, self.eta.clone(), self.best_loss.clone()
        return halve.nonzero().flatten()


#: how APGD-T picks its targets: the most likely wrong classes (AutoAttack), or MALT's closest boundaries
TARGET_RULES = ("logits", "malt")
#: APGD-T's first random-start stream: its targets never restart from the points a plain APGD at the same seed
#: started from (streams 0 .. restarts - 1), so in the reliable preset APGD-T does not retrace APGD-CE's start
TARGET_STREAM = 1000


def malt_targets(
    oracle: Oracle, x: torch.Tensor, labels: torch.Tensor, logits: torch.Tensor, candidates: int, norm: str
) -> torch.Tensor:
    """MALT's target order (Melamed, Yehudai & Shamir 2024, "MALT powers up adversarial attacks"): the
    ``candidates`` most likely classes t != y (y = ``labels``), ranked per sample by the linear estimate of the
    distance from ``x`` to the decision boundary between y and t, closest first:

        d_t = (z_y - z_t) / ||grad_x (z_y - z_t)||_*      (||.||_* the dual norm: L1 for L-inf, L2 for L2)

    For a linear model z = W x + b this is the exact distance to the hyperplane z_y = z_t (in [0, 1] pixel units,
    ignoring the box). Costs one forward and candidates + 1 backwards per sample (the Jacobian rows of y and of
    each candidate); ties (e.g. zero gradients) keep the logit order. Returns (N, candidates) class indices.
    """
    wrong = wrong_classes(logits, labels)[:, : min(candidates, logits.shape[1] - 1)]
    order = boundary_distances(oracle, x, labels, wrong, norm).argsort(dim=1, stable=True)
    return wrong.gather(1, order)


@register
@dataclass(frozen=True, kw_only=True)
class APGDT(APGD):
    """Targeted APGD with the targeted DLR loss, run against ``n_targets`` wrong classes in turn, each on the
    samples still unbroken: an untargeted goal reached by targeted attacks.

    ``targets="logits"``: the model's most likely wrong classes at the clean point, in order (AutoAttack's APGD-T).
    ``targets="malt"``: the ``candidates`` most likely wrong classes re-ranked by the linear estimate of the
    distance to their decision boundary at the clean point (:func:`malt_targets`), closest first; MALT needs far
    fewer targets for the same strength. Its Jacobian rows are counted as backward passes.
    """

    loss: str | Loss = "dlr"
    n_targets: int = 9
    targets: str = "logits"
    candidates: int = 9

    name: ClassVar[str] = "apgd-t"

    @property
    def label(self) -> str:
        """``apgd-t`` (targeted DLR, AutoAttack's name), ``apgd-t-ce`` with another loss."""
        loss = loss_name(self.loss)
        return self.name if loss == "dlr" else f"{self.name}-{loss}"

    def validate(self) -> None:
        super().validate()
        if self.n_targets < 1:
            raise ValueError(f"n_targets must be >= 1, got {self.n_targets}")
        if self.targets not in TARGET_RULES:
            raise ValueError(f"targets must be one of {', '.join(TARGET_RULES)}, got {self.targets!r}")
        if self.candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {self.candidates}")

    def _order(self, oracle: Oracle, x: torch.Tensor, labels: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
        """The wrong classes to target per sample, best first (N, n): by logit, or by MALT's distance estimate."""
        if self.targets == "malt":
            return malt_targets(oracle, x, labels, clean, self.candidates, self.norm)
        return wrong_classes(clean, labels)

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        assert eps is not None
        if goal.targeted:  # the user named the targets: one plain targeted APGD search
            return self._search(oracle, x, goal, eps, init, 0)
        clean = oracle.logits(x, torch.arange(len(x), device=x.device))
        unbroken = (~goal.reached(clean)).nonzero().flatten()
        if len(unbroken) == 0:
            return x.detach().clone(), clean.clone()
        ranked = self._order(SubOracle(oracle, unbroken), x[unbroken], goal.labels[unbroken], clean[unbroken])
        order = torch.zeros(len(x), ranked.shape[1], dtype=torch.long, device=x.device)
        order[unbroken] = ranked
        # each target its own random starts, none of APGD's
        return self.in_turn(oracle, x, goal, eps, clean, order, first=TARGET_STREAM, stride=self.restarts)

    def in_turn(
        self,
        oracle: Oracle,
        x: torch.Tensor,
        goal: Goal,
        eps: float | torch.Tensor,
        clean: torch.Tensor,
        order: torch.Tensor,
        *,
        first: int,
        stride: int,
    ) -> Found:
        """The untargeted ``goal`` reached by targeted APGD searches: at rank r = 0, 1, ... (at most ``n_targets``),
        every sample not yet broken is attacked towards the class ``order[:, r]``, with random starts from the
        streams ``first + r * stride`` on. ``clean``: the model's logits on ``x`` (what unbroken samples get)."""
        best_x, best_logits = x.detach().clone(), clean.clone()
        done = goal.reached(clean)
        for rank in range(min(self.n_targets, order.shape[1])):
            todo = (~done).nonzero().flatten()
            if len(todo) == 0:
                break
            sub = goal.rows(todo)
            aim = Goal(order[todo, rank], True, sub.labels)
            xa, za = self._search(
                SubOracle(oracle, todo), x[todo], aim, take_rows(eps, todo), None, first + rank * stride
            )
            broke = sub.reached(za)
            hit = todo[broke]
            best_x[hit], best_logits[hit], done[hit] = xa[broke], za[broke], True
        return best_x, best_logits
