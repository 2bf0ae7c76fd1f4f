"""The one optimization step shared by the projected-gradient attacks (FGSM, PGD, MI-FGSM, APGD's inner step)
and by prototypes: a batch of iterates, a step rule and a threat model.

For each running sample, with g the gradient of the objective to *ascend* (pass -g to descend):

    v <- mu v + g / ||g||_1                       (momentum, when mu > 0: Dong et al. 2018)
    x <- x0 + Proj_eps( T(x + alpha * s(v)) - x0 ),  then clipped to [0, 1]

where s is the unit steepest-ascent direction of the step norm (sign for L-inf, g/||g||_2 for L2, the sign of
the top-|g| coordinates for L1, see :func:`advlab.threat.steepest_step`), Proj_eps the projection onto the
``ball`` around the start x0 (none when eps is None: only the box [0, 1]) and T an optional transform of the
stepped image (prototypes' blur). Images are in [0, 1]; eps and alpha in [0, 1] pixel units.

:class:`Iterate` also keeps the rows still running (an attack drops a sample at its first success, a prototype
at convergence): while every row runs it works on whole tensors (no gathers or scatters), afterwards on the
running rows only. Gradients come from :func:`gradient` (or an attack's :class:`~advlab.attacks.base.Oracle`,
which counts them).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch

from advlab.threat import Norm, project, steepest_step


@dataclass(frozen=True)
class StepRule:
    """How a gradient becomes a step: the norm of the steepest direction and MI-FGSM's momentum mu (0: none)."""

    norm: Norm = "linf"
    momentum: float = 0.0


@dataclass(frozen=True)
class Ball:
    """The threat model: ||x - x0||_norm <= eps and x in [0, 1]; eps None is the box alone. eps may be (N,)."""

    eps: float | torch.Tensor | None
    norm: Norm = "linf"

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """The closest point to ``x`` in the ball around ``x0`` (per sample), clipped to [0, 1]."""
        if self.eps is None:
            return x.clamp(0, 1)
        return (x0 + project(x - x0, self.eps, self.norm)).clamp(0, 1)


def take_rows(t: torch.Tensor | float, rows: torch.Tensor | None) -> torch.Tensor | float:
    """``t[rows]`` for a per-sample tensor ``t``; a float, or any ``t`` when ``rows`` is None, as it is."""
    return t[rows] if isinstance(t, torch.Tensor) and rows is not None else t


def _per_sample(t: torch.Tensor | float, like: torch.Tensor) -> torch.Tensor | float:
    return t.to(like).view(-1, *[1] * (like.ndim - 1)) if isinstance(t, torch.Tensor) else t


class Iterate:
    """A batch being optimized: the starts ``x0`` (N, ...), the current points ``x``, the momentum buffer and the
    rows still running (``active`` None: all of them). ``alpha`` is a float or a per-sample (N,) tensor."""

    def __init__(
        self,
        x0: torch.Tensor,
        x: torch.Tensor | None = None,
        *,
        ball: Ball,
        rule: StepRule,
        alpha: float | torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.x0 = x0.detach()
        self.x = ball.project(self.x0 if x is None else x.detach(), self.x0)
        self.ball, self.rule, self.alpha, self.transform = ball, rule, alpha, transform
        self.velocity = torch.zeros_like(self.x) if rule.momentum else None
        self.active: torch.Tensor | None = None

    @property
    def rows(self) -> torch.Tensor | None:
        """Indices (into the batch) of the running rows; None while every row runs."""
        return self.active

    @property
    def running(self) -> int:
        return len(self.x) if self.active is None else len(self.active)

    def point(self) -> torch.Tensor:
        """The current points of the running rows."""
        return self.x if self.active is None else self.x[self.active]

    def start(self) -> torch.Tensor:
        """The starts of the running rows."""
        return self.x0 if self.active is None else self.x0[self.active]

    def keep(self, mask: torch.Tensor) -> None:
        """Keep running only the running rows where ``mask`` (over the running rows) is True."""
        idx = mask.nonzero().flatten()
        self.active = idx if self.active is None else self.active[idx]

    def step(self, ascent: torch.Tensor, *, descend: bool = False) -> None:
        """One step of the running rows along ``ascent`` (their gradient of the objective to maximize);
        ``descend=True``: against it (``step(g, descend=True)`` is ``step(-g)``, one operation fewer)."""
        a = self.active
        g = ascent
        if self.velocity is not None:
            g = g / (g.flatten(1).abs().sum(1).view(-1, *[1] * (g.ndim - 1)) + 1e-12)
            g = g + self.rule.momentum * (self.velocity if a is None else self.velocity[a])
            if a is None:
                self.velocity = g
            else:
                self.velocity[a] = g
        x, x0 = self.point(), self.start()
        direction = steepest_step(g, self.rule.norm)
        if isinstance(self.alpha, torch.Tensor):
            alpha = _per_sample(take_rows(self.alpha, a), x)
            moved = x - alpha * direction if descend else x + alpha * direction
        else:  # one fused x + alpha * s
            moved = torch.add(x, direction, alpha=-self.alpha if descend else self.alpha)
        if self.transform is not None:
            moved = self.transform(moved)
        eps = self.ball.eps
        if eps is None and self.transform is None:  # the box alone, on the fresh tensor: in place
            new = moved.clamp_(0, 1)
        else:
            ball = Ball(take_rows(eps, a), self.ball.norm) if isinstance(eps, torch.Tensor) else self.ball
            new = ball.project(moved, x0)
        if a is None:
            self.x = new
        else:
            self.x[a] = new


#: Adam's betas and epsilon (Kingma & Ba's defaults, used by C&W, SPSA and the one-hot attack)
BETA1, BETA2, ADAM_EPS = 0.9, 0.999, 1e-8


class Adam(NamedTuple):
    """Kingma & Ba's moment estimates ``m`` and ``v`` per element of a batch (updated in place):

        m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,   step = lr * m_hat / (sqrt(v_hat) + 1e-8)

    with the bias corrections m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t) at step t = 1, 2, ... The step is
    about ``lr`` per element whatever the gradient's scale.
    """

    m: torch.Tensor
    v: torch.Tensor

    @classmethod
    def like(cls, x: torch.Tensor) -> Adam:
        """Zero moments for a batch shaped like ``x``."""
        return cls(torch.zeros_like(x), torch.zeros_like(x))

    def moments(self, rows: torch.Tensor, g: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Fold the gradient ``g`` of the rows ``rows`` into their moments at step ``t``; return m_hat and
        sqrt(v_hat) + 1e-8 (the step is lr * m_hat / the second; callers keep their own order of operations)."""
        m = BETA1 * self.m[rows] + (1 - BETA1) * g
        v = BETA2 * self.v[rows] + (1 - BETA2) * g * g
        self.m[rows], self.v[rows] = m, v
        return m / (1 - BETA1**t), (v / (1 - BETA2**t)).sqrt() + ADAM_EPS


def gradient(
    forward: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    objective: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    create_graph: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One forward and one backward: ``(logits, objective(x, logits) per sample, d sum(objective) / dx, x)``.

    ``objective(x, logits)`` returns (N,) values (it may use the image itself, e.g. total variation). The input
    ``x`` that required grad is returned too, so that ``create_graph=True`` callers can differentiate the
    gradient again (double backprop); logits and values are returned detached unless ``create_graph``.
    """
    xg = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = forward(xg)
        value = objective(xg, logits)
        (g,) = torch.autograd.grad(value.sum(), xg, create_graph=create_graph)
    if create_graph:
        return logits, value, g, xg
    return logits.detach(), value.detach(), g, xg
