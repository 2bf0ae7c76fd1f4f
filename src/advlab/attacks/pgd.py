"""Projected gradient methods: PGD (Madry et al. 2018), FGSM (Goodfellow et al. 2015), MI-FGSM (Dong et al. 2018).

All maximize a per-sample loss L(f(x + delta), y) over the ball ||delta||_p <= eps with x + delta in [0, 1]:

    delta <- Proj_eps( delta + alpha * s(g) ),   g = d L / d delta (MI-FGSM: g <- mu * g + grad / ||grad||_1)

where s is the steepest-ascent direction of the norm (sign for L-inf, g/||g||_2 for L2). ``eps`` and
``alpha`` are in [0, 1] pixel units. ``early_stop=True`` stops each sample at its first success (the
"any success" goal, cheapest); ``False`` spends the full budget and returns, per sample, the most
adversarial iterate seen (successful first, then highest loss): the "maximum confidence" goal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from advlab.attacks.base import Attack, Best, Oracle, is_success
from advlab.losses import Loss, get_loss
from advlab.threat import NORMS, Norm, project, random_start, steepest_step


@dataclass(frozen=True, kw_only=True)
class PGD(Attack):
    """PGD with random start and restarts; ``eps`` may be a list (a robustness curve in one call)."""

    eps: float | Sequence[float] = 8 / 255
    alpha: float | None = None  # default 2.5 * eps / steps (Madry et al.)
    steps: int = 10
    norm: str = "linf"
    random_start: bool = True
    restarts: int = 1
    loss: str | Loss = "ce"
    early_stop: bool = False
    momentum: float = 0.0

    name: str = field(default="pgd", init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "threat_norm", self.norm)

    def validate(self) -> None:
        eps = self._epsilons()
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if not eps or any(e is None or not (e > 0) for e in eps):
            raise ValueError(f"eps must be positive, got {self.eps}")
        if self.norm == "linf" and any(e > 1 for e in eps):  # type: ignore[operator]
            raise ValueError(f"an L-inf eps above 1 means nothing for [0, 1] images, got {self.eps}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if self.restarts < 1:
            raise ValueError(f"restarts must be >= 1, got {self.restarts}")
        if self.momentum < 0:
            raise ValueError(f"momentum must be >= 0, got {self.momentum}")
        get_loss(self.loss)

    def _epsilons(self) -> list[float | None]:
        if isinstance(self.eps, (int, float)):
            return [float(self.eps)]
        return sorted(float(e) for e in self.eps)

    def step_size(self, eps: float) -> float:
        return self.alpha if self.alpha is not None else 2.5 * eps / self.steps

    def _start(self, x: torch.Tensor, eps: float, restart: int, init: torch.Tensor | None, gen: torch.Generator) -> torch.Tensor:
        if init is not None and restart == 0:
            return project(init, eps, self.norm)  # type: ignore[arg-type]
        if self.random_start:
            return random_start(x, eps, self.norm, gen)  # type: ignore[arg-type]
        return torch.zeros_like(x)

    def _attack(self, oracle: Oracle, x: torch.Tensor, labels: torch.Tensor, targeted: bool, eps: float | None,
                init: torch.Tensor | None, gen: torch.Generator, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        assert eps is not None
        best = Best(x)
        for restart in range(self.restarts):
            if restart == 0:
                self._ascend(oracle, x, labels, targeted, eps, self._start(x, eps, 0, init, gen), best, None)
                continue
            rows = best.standing()
            if len(rows) == 0:
                break
            delta = self._start(x[rows], eps, restart, None, gen)
            self._ascend(oracle, x[rows], labels[rows], targeted, eps, delta, best, rows)
        return best.result()

    def _x_adv_only(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, targeted: bool,
                    gen: torch.Generator) -> torch.Tensor:  # fmt: skip
        """One full-budget run needs no scoring: the last iterate after exactly ``steps`` gradients."""
        eps = self._epsilons()
        if len(eps) > 1 or self.restarts > 1 or self.early_stop or self.quantize:
            return super()._x_adv_only(oracle, x, y, labels, targeted, gen)
        e = eps[0]
        assert e is not None
        return self._ascend(oracle, x, labels, targeted, e, self._start(x, e, 0, None, gen), None, None).detach()

    def _ascend(self, oracle: Oracle, x0: torch.Tensor, labels: torch.Tensor, targeted: bool, eps: float,
                delta: torch.Tensor, best: Best | None, rows: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """``steps`` ascent steps from ``x0 + delta``; returns the last iterate.

        With ``best``, every iterate (the last one included, with a gradient-free forward) is scored into it at
        ``rows`` (None: x0 is best's whole batch), and ``early_stop`` drops each sample at its first success.
        Without, nothing is scored and the loop costs exactly ``steps`` forward/backward passes. While every
        sample is running, whole tensors are used (no gathers or scatters).
        """
        norm: Norm = self.norm  # type: ignore[assignment]
        loss_fn = get_loss(self.loss)
        alpha = self.step_size(eps)
        delta = (x0 + delta).clamp(0, 1) - x0
        velocity = torch.zeros_like(delta) if self.momentum else None
        active: torch.Tensor | None = None  # rows of x0 still running; None: all of them
        for step in range(self.steps + 1):
            last = step == self.steps
            if last and best is None:
                break
            if active is None:
                xb, lab, where = x0, labels, rows
            else:
                xb, lab = x0[active], labels[active]
                where = active if rows is None else rows[active]
            xe = self._prepare(xb + (delta if active is None else delta[active]), xb, eps)
            logits, loss, grad = oracle.evaluate(xe, where, lambda z, lab=lab: loss_fn(z, lab, targeted), not last)
            if best is not None:
                succ = is_success(logits, lab, targeted)
                best.update(where, xe, logits, succ, loss)
                if self.early_stop and not last and bool(succ.any()):
                    keep = ~succ
                    active = keep.nonzero().flatten() if active is None else active[keep]
                    grad = grad[keep] if grad is not None else None
                    if len(active) == 0:
                        break
                    xb = x0[active]
            if last:
                break
            assert grad is not None
            if velocity is not None:
                g = grad / (grad.flatten(1).abs().sum(1).view(-1, *[1] * (grad.ndim - 1)) + 1e-12)
                g = g + self.momentum * (velocity if active is None else velocity[active])
                if active is None:
                    velocity = g
                else:
                    velocity[active] = g
                grad = g
            if active is None:
                delta = (x0 + project(delta + alpha * steepest_step(grad, norm), eps, norm)).clamp(0, 1) - x0
            else:
                d = project(delta[active] + alpha * steepest_step(grad, norm), eps, norm)
                delta[active] = (xb + d).clamp(0, 1) - xb
        return x0 + delta


@dataclass(frozen=True, kw_only=True)
class FGSM(PGD):
    """Fast gradient sign method: one step x + eps * sign(d L / dx) (for norm="l2": eps * g / ||g||_2), no random start."""

    steps: int = 1
    random_start: bool = False

    name: str = field(default="fgsm", init=False, repr=False)

    def step_size(self, eps: float) -> float:
        return self.alpha if self.alpha is not None else eps


@dataclass(frozen=True, kw_only=True)
class MIFGSM(PGD):
    """Momentum iterative FGSM: g <- mu * g + grad / ||grad||_1, step alpha * sign(g); alpha defaults to eps / steps."""

    momentum: float = 1.0
    random_start: bool = False

    name: str = field(default="mifgsm", init=False, repr=False)

    def step_size(self, eps: float) -> float:
        return self.alpha if self.alpha is not None else eps / self.steps
