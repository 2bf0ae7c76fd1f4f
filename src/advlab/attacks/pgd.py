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
        norm: Norm = self.norm  # type: ignore[assignment]
        loss_fn = get_loss(self.loss)
        alpha = self.step_size(eps)
        best = Best(x)
        for restart in range(self.restarts):
            rows = torch.arange(len(x), device=x.device) if restart == 0 else best.standing()
            if len(rows) == 0:
                break
            x0, lab = x[rows], labels[rows]
            delta = self._start(x0, eps, restart, None if init is None else init[rows], gen)
            delta = (x0 + delta).clamp(0, 1) - x0
            velocity = torch.zeros_like(delta) if self.momentum else None
            active = torch.arange(len(rows), device=x.device)
            for step in range(self.steps + 1):
                xa, la = x0[active] + delta[active], lab[active]
                xe = self._prepare(xa, x0[active], eps)
                logits, loss, grad = oracle.evaluate(xe, rows[active], lambda z, la=la: loss_fn(z, la, targeted), step < self.steps)
                succ = is_success(logits, la, targeted)
                best.update(rows[active], xe, logits, succ, loss)
                if step == self.steps:
                    break
                assert grad is not None
                if self.early_stop:
                    keep = ~succ
                    active, grad = active[keep], grad[keep]
                    if len(active) == 0:
                        break
                if velocity is not None:
                    g = velocity[active] * self.momentum + grad / (grad.flatten(1).abs().sum(1).view(-1, *[1] * (grad.ndim - 1)) + 1e-12)
                    velocity[active] = g
                    grad = g
                d = delta[active] + alpha * steepest_step(grad, norm)
                d = project(d, eps, norm)
                delta[active] = (x0[active] + d).clamp(0, 1) - x0[active]
        return best.result()


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
