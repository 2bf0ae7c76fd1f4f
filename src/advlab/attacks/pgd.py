"""Projected gradient methods: FGSM (Goodfellow et al. 2015), PGD (Madry et al. 2018), MI-FGSM (Dong et al. 2018).

All maximize a per-sample loss L(f(x'), y) over the ball ||x' - x||_p <= eps with x' in [0, 1], through the
shared step of :mod:`advlab.attacks.step`:

    x' <- x + Proj_eps( x' + alpha * s(g) - x ),  clipped to [0, 1],   g = d L / d x'
    (MI-FGSM: g <- mu * g + grad / ||grad||_1 before the step)

where s is the steepest-ascent direction of the norm (sign for L-inf, g/||g||_2 for L2). ``eps`` and
``alpha`` are in [0, 1] pixel units. For PGD and MI-FGSM ``early_stop=True`` stops each sample at its first
success (the "any success" goal, cheapest); ``False`` spends the full budget and returns, per sample, the
most adversarial iterate seen (successful first, then highest loss): the "maximum confidence" goal.
"""

from __future__ import annotations

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
    check_counts,
    check_epsilons,
    check_positive,
    register,
    restarts,
)
from advlab.attacks.step import Ball, Iterate, StepRule
from advlab.losses import Loss, get_loss
from advlab.threat import Norm, check_norm, project, random_start


def start_delta(
    x: torch.Tensor,
    eps: float | torch.Tensor,
    norm: Norm,
    *,
    init: torch.Tensor | None,
    random: bool,
    seed: int,
    restart: int,
) -> torch.Tensor:
    """Where a run starts, as a perturbation of ``x``: the warm start ``init`` projected onto the ball when given,
    else a per-sample random point of the ball (from ``seed``, ``restart`` and each image's pixels), else zero."""
    if init is not None:
        return project(init, eps, norm)
    if random:
        return random_start(x, eps, norm, seed=seed, stream=restart)
    return torch.zeros_like(x)


@register
@dataclass(frozen=True, kw_only=True)
class FGSM(Attack):
    """Fast gradient sign method: one step x + eps * sign(d L / dx) (for norm="l2": eps * g / ||g||_2), from x.

    Per sample the result is the better (successful first, then higher loss) of x and the stepped point. On an
    ``eps`` list, each larger eps steps from the result at the previous eps of the samples still unbroken.
    """

    eps: float | Sequence[float] = 8 / 255
    norm: str = "linf"
    loss: str | Loss = "ce"

    name: ClassVar[str] = "fgsm"
    instead: ClassVar[dict[str, str]] = {
        "steps": "FGSM is one step of eps; for several steps use pgd (--no-random-start: BIM) or mifgsm",
        "alpha": "FGSM's step is eps; for another step size use pgd",
        "momentum": "use mifgsm for momentum",
        "restarts": "use pgd for restarts",
        "random_start": "use pgd for a random start",
    }

    def validate(self) -> None:
        check_epsilons(self.eps, self.norm)
        get_loss(self.loss)

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        assert eps is not None
        loss = goal.objective(get_loss(self.loss))
        it = self._iterate(x, eps, init)
        best = Best(x)
        xe = self._prepare(it.point(), x, eps)
        logits, value, grad = oracle.grad(xe, None, loss)
        best.record(None, xe, logits, goal, value)
        it.step(grad)
        xe = self._prepare(it.point(), x, eps)
        logits = oracle.logits(xe, None)
        best.record(None, xe, logits, goal, loss(logits))
        return best.result()

    def _last_iterate(self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None) -> torch.Tensor | None:
        """The stepped point itself, after one gradient and nothing else."""
        assert eps is not None
        it = self._iterate(x, eps, None)
        _, _, grad = oracle.grad(x, None, goal.objective(get_loss(self.loss)))
        it.step(grad)
        return it.point()

    def _iterate(self, x: torch.Tensor, eps: float, init: torch.Tensor | None) -> Iterate:
        norm = check_norm(self.norm)
        start = None if init is None else x + project(init, eps, norm)
        return Iterate(x, start, ball=Ball(eps, norm), rule=StepRule(norm), alpha=eps)


@register
@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """PGD with random start and restarts; ``eps`` may be a list (a robustness curve in one call).

    ``alpha``: the step size, default 2.5 * eps / steps (Madry et al.). ``restarts``: further runs from new
    random starts for the samples still unbroken. ``loss``: any :mod:`advlab.losses` name or callable.
    """

    eps: float | Sequence[float] = 8 / 255
    alpha: float | None = None
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    loss: str | Loss = "ce"
    early_stop: bool = False

    name: ClassVar[str] = "pgd"

    def validate(self) -> None:
        check_epsilons(self.eps, self.norm)
        check_counts(self, "steps")
        check_positive(self, "alpha")
        check_counts(self, "restarts")
        get_loss(self.loss)

    def step_size(self, eps: float) -> float:
        """alpha, in [0, 1] pixel units (L-inf: per pixel; L2/L1: per image)."""
        return self.alpha if self.alpha is not None else 2.5 * eps / self.steps

    def rule(self) -> StepRule:
        """The step rule: the steepest direction of ``norm``, no momentum."""
        return StepRule(check_norm(self.norm))

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        assert eps is not None
        best = Best(x)
        for restart, rows in restarts(best, self.restarts):
            x0 = x if rows is None else x[rows]
            delta = self._start(x0, eps, init if restart == 0 else None, restart)
            self._ascend(oracle, self._iterate(x0, eps, delta), goal.rows(rows), best, rows)
        return best.result()

    def _last_iterate(self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None) -> torch.Tensor | None:
        """One full-budget run needs no scoring: the last iterate after exactly ``steps`` gradients."""
        if self.restarts > 1 or self.early_stop:
            return None
        assert eps is not None
        return self._ascend(oracle, self._iterate(x, eps, self._start(x, eps, None, 0)), goal, None, None).detach()

    def _start(self, x: torch.Tensor, eps: float, init: torch.Tensor | None, restart: int) -> torch.Tensor:
        norm = check_norm(self.norm)
        return start_delta(x, eps, norm, init=init, random=self.random_start, seed=self.seed, restart=restart)

    def _iterate(self, x0: torch.Tensor, eps: float, delta: torch.Tensor) -> Iterate:
        """The batch ``x0`` at ``x0 + delta`` (projected), in the ``norm`` ball of radius ``eps``, with :meth:`rule`."""
        norm = check_norm(self.norm)
        return Iterate(x0, x0 + delta, ball=Ball(eps, norm), rule=self.rule(), alpha=self.step_size(eps))

    def _ascend(
        self, oracle: Oracle, it: Iterate, goal: Goal, best: Best | None, rows: torch.Tensor | None
    ) -> torch.Tensor:
        """``steps`` ascent steps of ``it`` (whose rows have the goal ``goal``); returns the last iterate.

        With ``best``, every iterate (the last one included, with a gradient-free forward) is scored into it at
        ``rows`` (None: the iterate is best's whole batch), and ``early_stop`` drops each sample at its first
        success. Without, nothing is scored and the loop costs exactly ``steps`` forward/backward passes. While
        every sample is running, :class:`Iterate` works on whole tensors (no gathers or scatters).
        """
        loss_fn = get_loss(self.loss)
        for step in range(self.steps + 1):
            last = step == self.steps
            if last and best is None:
                break
            a = it.rows
            aim = goal.rows(a)
            where = rows if a is None else (a if rows is None else rows[a])
            xe = self._prepare(it.point(), it.start(), it.ball.eps)
            logits, loss, grad = oracle.evaluate(xe, where, aim.objective(loss_fn), not last)
            if best is not None:
                succ = best.record(where, xe, logits, aim, loss)
                if self.early_stop and not last and bool(succ.any()):
                    it.keep(~succ)
                    grad = grad[~succ] if grad is not None else None
                    if it.running == 0:
                        break
            if last:
                break
            assert grad is not None
            it.step(grad)
        return it.x


@register
@dataclass(frozen=True, kw_only=True)
class MIFGSM(PGD):
    """Momentum iterative FGSM: g <- mu * g + grad / ||grad||_1, step alpha * s(g); alpha defaults to eps / steps,
    no random start by default (Dong et al. 2018). ``momentum``: mu >= 0."""

    momentum: float = 1.0
    random_start: bool = False

    name: ClassVar[str] = "mifgsm"

    def validate(self) -> None:
        super().validate()
        if not self.momentum >= 0:
            raise ValueError(f"momentum must be >= 0, got {self.momentum}")

    def step_size(self, eps: float) -> float:
        return self.alpha if self.alpha is not None else eps / self.steps

    def rule(self) -> StepRule:
        """The steepest direction of ``norm`` applied to the L1-normalized gradient accumulated with mu."""
        return StepRule(check_norm(self.norm), self.momentum)
