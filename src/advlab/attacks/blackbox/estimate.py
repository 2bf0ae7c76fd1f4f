"""Projected ascent on a gradient estimated from queries: the loop that NES and SPSA share.

The loss L(x) = loss(f(x), y) is known only through queries of f. Its gradient is estimated from n
antithetic pairs of random directions u_i (Gaussian for NES, Rademacher for SPSA) and a smoothing scale s:

    g = 1 / (2 n s) * sum_i [L(x + s u_i) - L(x - s u_i)] u_i        (2n queries)

E[g] is the gradient of the Gaussian-smoothed loss (NES) or the gradient up to O(s^2) (SPSA), and
the antithetic pairs cancel the zeroth-order term L(x) exactly. The probes x +- s u_i are clipped to
[0, 1] (a real black box accepts images only); they need not lie in the eps-ball and are never
candidates. Each step then moves x along g (the attack's update rule), projects onto the eps-ball and
[0, 1], and spends one more query on the new iterate to check it: 2n + 1 queries per step, plus one on
the clean input before the first step. A sample stops at its first success or when its next step would
exceed ``max_queries``; the last step uses fewer pairs when that fits the budget exactly. The directions of
an image at step t are drawn from the seed, t and the image alone, the same in any batch (:mod:`advlab.attacks.draws`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch

from advlab.attacks.base import Attack, Best, Found, Goal, Oracle
from advlab.attacks.draws import ESTIMATE_STREAM, SampleDraws, Tag
from advlab.losses import Loss, get_loss
from advlab.threat import check_norm, project

BLACKBOX_NORMS = ("linf", "l2")
#: how a direction is drawn: ``SampleDraws.normal`` or ``SampleDraws.signs`` (draws, rows, tag, per-sample shape)
Direction = Callable[[SampleDraws, torch.Tensor | None, Tag, Sequence[int]], torch.Tensor]
#: an attack's per-sample optimizer state: tensors like the batch, by name
State = dict[str, torch.Tensor]


def check_ball(eps: object, norm: str) -> None:
    """Raise ValueError unless ``eps`` is one positive number (a query budget is per eps) and ``norm`` is linf/l2."""
    if norm not in BLACKBOX_NORMS:
        raise ValueError(f"norm must be one of {', '.join(BLACKBOX_NORMS)}, got {norm!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool):
        raise ValueError(f"eps must be one positive number (a query budget is per eps), got {eps!r}")
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if norm == "linf" and eps > 1:
        raise ValueError(f"an L-inf eps above 1 means nothing for [0, 1] images, got {eps}")


def estimate_gradient(
    oracle: Oracle,
    x: torch.Tensor,
    idx: torch.Tensor,
    objective: Callable[[torch.Tensor], torch.Tensor],
    directions: Iterable[torch.Tensor],
    scale: float,
) -> torch.Tensor:
    """The antithetic finite-difference estimate of d objective / dx at ``x`` (N, ...); ``objective`` maps logits
    to (N,) values.

    ``directions``: the n tensors u_i (each like ``x``; an iterator is consumed one at a time, so only one is held);
    costs 2n queries per sample, counted on ``oracle`` at rows ``idx``.
    """
    g, n = torch.zeros_like(x), 0
    for u in directions:
        up = objective(oracle.logits((x + scale * u).clamp(0, 1), idx))
        down = objective(oracle.logits((x - scale * u).clamp(0, 1), idx))
        g += (up - down).to(x.dtype).view(-1, *[1] * (x.ndim - 1)) * u
        n += 1
    return g / (2 * max(n, 1) * scale)


@dataclass(frozen=True, kw_only=True)
class EstimatedGradientAttack(Attack):
    """Shared config and loop of the query-based gradient attacks (see the module docstring).

    ``eps``: radius of the ``norm`` ball ("linf" or "l2") in [0, 1] pixel units. ``max_queries``: model
    evaluations per sample, the first (clean) one included. ``samples``: antithetic pairs per estimate
    (2 * samples queries). ``loss``: the objective ascended (default the margin max_{j != y} z_j - z_y,
    z_t - max_{j != t} z_j when targeted; any name of :mod:`advlab.losses` or a callable).
    """

    eps: float = 8 / 255
    norm: str = "linf"
    max_queries: int = 1000
    samples: int = 10
    loss: str | Loss = "margin"

    white_box: ClassVar[bool] = False
    #: the names of the per-sample optimizer state, tensors like ``x`` that start at zero (e.g. Adam's moments)
    moments: ClassVar[tuple[str, ...]] = ()

    def validate(self) -> None:
        check_ball(self.eps, self.norm)
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1 (antithetic pairs per gradient estimate), got {self.samples}")
        if self.max_queries < 4:
            raise ValueError(
                f"max_queries must be >= 4 (1 clean query + one step of 2 probes and 1 check), got {self.max_queries}"
            )
        get_loss(self.loss)

    # ---------------------------------------------------------------- for subclasses
    def _probes(self) -> tuple[float, Direction]:
        """The smoothing scale s of the probes x +- s u, and how each direction u is drawn."""
        raise NotImplementedError

    def _ascent(self, g: torch.Tensor, state: State, rows: torch.Tensor, eps: float, t: int) -> torch.Tensor:
        """The step added to delta (before projection) from the estimate ``g`` at step ``t`` (1, 2, ...) for
        ``rows``."""
        raise NotImplementedError

    # ---------------------------------------------------------------- the loop
    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        assert eps is not None
        norm = check_norm(self.norm)
        loss, (scale, direction) = get_loss(self.loss), self._probes()
        best = Best(x)
        rows = torch.arange(len(x), device=x.device)
        logits = oracle.logits(self._prepare(x, x, eps), rows)
        succ = best.record(rows, x, logits, goal, goal.objective(loss)(logits))
        active, used = rows[~succ], 1
        delta, state = torch.zeros_like(x), {name: torch.zeros_like(x) for name in self.moments}
        draws = SampleDraws(x, self.seed, stream=ESTIMATE_STREAM)  # each image's probes: from the seed and the image
        t = 0
        while len(active) and self.max_queries - used >= 3:
            pairs = min(self.samples, (self.max_queries - used - 1) // 2)
            xa, aim = x[active], goal.rows(active)
            objective = aim.objective(loss)
            u = (direction(draws, active, (t, i), xa.shape[1:]).to(xa) for i in range(pairs))
            g = estimate_gradient(oracle, xa + delta[active], active, objective, u, scale)
            t += 1
            d = project(delta[active] + self._ascent(g, state, active, eps, t), eps, norm)
            d = (xa + d).clamp(0, 1) - xa
            delta[active] = d
            xe = self._prepare(xa + d, xa, eps)
            logits = oracle.logits(xe, active)
            succ = best.record(active, xe, logits, aim, objective(logits))
            used += 2 * pairs + 1
            active = active[~succ]
        return best.result()
