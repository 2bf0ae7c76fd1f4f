"""Auto-PGD (Croce & Hein, "Reliable evaluation of adversarial robustness...", ICML 2020).

PGD with momentum and a step size that adapts per sample, no step-size tuning:

    z_{k+1} = P(x_k + eta_k * s(grad L(x_k)))
    x_{k+1} = P(x_k + a (z_{k+1} - x_k) + (1 - a)(x_k - x_{k-1})),   a = 0.75 (a = 1 on the first step)

with eta_0 = 2 eps. At checkpoints w_j = ceil(p_j N) (p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1}
- 0.03, 0.06)) a sample halves its step and restarts from its best point when fewer than rho = 0.75 of the
steps since the last checkpoint increased the loss, or when neither its step nor its best loss changed.

``loss="dlr"`` (the Difference of Logits Ratio) is invariant to shifting and scaling the logits, so a
model whose softmax saturates (and whose CE gradients vanish) does not fool it. :class:`APGDT` is the
targeted version run against the model's top-k other classes in turn (AutoAttack's APGD-T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from advlab.attacks.base import Attack, Best, Oracle, SubOracle, is_success
from advlab.attacks.pgd import PGD
from advlab.losses import dlr, get_loss
from advlab.threat import project, steepest_step


def checkpoints(steps: int) -> list[int]:
    """The iterations at which APGD reconsiders each sample's step size."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return sorted({math.ceil(q * steps) for q in p if q <= 1})[1:]


@dataclass(frozen=True, kw_only=True)
class APGD(PGD):
    """Auto-PGD with ``loss`` "ce" or "dlr" (or any advlab loss); ``steps`` iterations per restart."""

    steps: int = 100
    loss: str = "ce"
    rho: float = 0.75
    momentum: float = 0.75  # AutoAttack's alpha

    name: str = field(default="apgd", init=False, repr=False)

    def validate(self) -> None:
        super().validate()
        if not 0 < self.rho <= 1:
            raise ValueError(f"rho must be in (0, 1], got {self.rho}")

    def _x_adv_only(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, labels: torch.Tensor, targeted: bool,
                    gen: torch.Generator) -> torch.Tensor:  # fmt: skip
        """APGD's steps are chosen by scoring iterates, so there is no cheaper path than the full run."""
        return Attack._x_adv_only(self, oracle, x, y, labels, targeted, gen)

    def _objective(self, labels: torch.Tensor, targeted: bool, y_true: torch.Tensor):  # noqa: ANN202
        if self.loss == "dlr" and targeted:
            return lambda z, t, yt: dlr(z, t, True, y_true=yt)
        fn = get_loss(self.loss)
        return lambda z, t, yt: fn(z, t, targeted)

    def _attack(self, oracle: Oracle, x: torch.Tensor, labels: torch.Tensor, targeted: bool, eps: float | None,
                init: torch.Tensor | None, gen: torch.Generator, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        assert eps is not None
        objective = self._objective(labels, targeted, y_true)
        best = Best(x)
        marks = set(checkpoints(self.steps))
        for restart in range(self.restarts):
            rows = torch.arange(len(x), device=x.device) if restart == 0 else best.standing()
            if len(rows) == 0:
                break
            x0, lab, yt = x[rows], labels[rows], y_true[rows]
            delta = self._start(x0, eps, restart, None if init is None else init[rows], gen)
            xk = (x0 + delta).clamp(0, 1)
            x_prev = xk.clone()
            m = len(rows)
            step = torch.full((m,), 2.0 * eps, device=x.device)
            run_best_loss = torch.full((m,), -torch.inf, device=x.device)
            run_best_x = xk.clone()
            grad_at_best = torch.zeros_like(xk)
            increases = torch.zeros(m, device=x.device)
            loss_prev = torch.full((m,), -torch.inf, device=x.device)
            last_mark, step_at_mark, best_at_mark = 0, step.clone(), run_best_loss.clone()
            active = torch.arange(m, device=x.device)
            for k in range(self.steps + 1):
                xe = self._prepare(xk[active], x0[active], eps)
                la, ya = lab[active], yt[active]
                logits, loss, grad = oracle.evaluate(xe, rows[active], lambda z, la=la, ya=ya: objective(z, la, ya), k < self.steps)
                succ = is_success(logits, la, targeted)
                best.update(rows[active], xe, logits, succ, loss)
                if k == self.steps:
                    break
                assert grad is not None
                # bookkeeping for the step-size rule (on the running iterate, not the quantized one)
                increases[active] += (loss > loss_prev[active]).float()
                loss_prev[active] = loss
                improved = loss > run_best_loss[active]
                ia = active[improved]
                run_best_loss[ia], run_best_x[ia], grad_at_best[ia] = loss[improved], xk[ia], grad[improved]
                g_full = torch.zeros_like(xk)
                g_full[active] = grad
                if self.early_stop:
                    active = active[~succ]
                    if len(active) == 0:
                        break
                if k + 1 in marks:
                    span = k + 1 - last_mark
                    cond1 = increases < self.rho * span
                    cond2 = (step_at_mark == step) & (best_at_mark == run_best_loss)
                    halve = cond1 | cond2
                    step = torch.where(halve, step / 2, step)
                    hx = halve.nonzero().flatten()
                    xk[hx], g_full[hx] = run_best_x[hx], grad_at_best[hx]
                    x_prev[hx] = xk[hx]
                    increases.zero_()
                    last_mark, step_at_mark, best_at_mark = k + 1, step.clone(), run_best_loss.clone()
                a = active
                s = step[a].view(-1, *[1] * (x.ndim - 1))
                z = x0[a] + project(xk[a] + s * steepest_step(g_full[a], self.norm) - x0[a], eps, self.norm)  # type: ignore[arg-type]
                z = z.clamp(0, 1)
                mom = 1.0 if k == 0 else self.momentum
                nxt = xk[a] + mom * (z - xk[a]) + (1 - mom) * (xk[a] - x_prev[a])
                nxt = (x0[a] + project(nxt - x0[a], eps, self.norm)).clamp(0, 1)  # type: ignore[arg-type]
                x_prev[a], xk[a] = xk[a], nxt
        return best.result()


@dataclass(frozen=True, kw_only=True)
class APGDT(APGD):
    """Targeted APGD with the targeted DLR loss, run against each of the model's ``n_targets`` most likely
    wrong classes in turn, on the samples still standing: an untargeted goal reached by targeted attacks."""

    loss: str = "dlr"
    n_targets: int = 9

    name: str = field(default="apgd-t", init=False, repr=False)

    def validate(self) -> None:
        super().validate()
        if self.n_targets < 1:
            raise ValueError(f"n_targets must be >= 1, got {self.n_targets}")

    def _attack(self, oracle: Oracle, x: torch.Tensor, labels: torch.Tensor, targeted: bool, eps: float | None,
                init: torch.Tensor | None, gen: torch.Generator, y_true: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        if targeted:  # the user named the targets: one plain targeted APGD run
            return super()._attack(oracle, x, labels, True, eps, init, gen, y_true)
        clean = oracle.logits(x, torch.arange(len(x), device=x.device))
        ranking = clean.argsort(1, descending=True)
        best_x, best_logits = x.detach().clone(), clean.clone()
        done = is_success(clean, labels, False)
        for rank in range(1, min(self.n_targets, clean.shape[1] - 1) + 1):
            todo = (~done).nonzero().flatten()
            if len(todo) == 0:
                break
            wrong = ranking[todo][ranking[todo] != labels[todo, None]].view(len(todo), -1)  # ranked, true class removed
            tgt = wrong[:, rank - 1]
            xa, za = super()._attack(SubOracle(oracle, todo), x[todo], tgt, True, eps, None, gen, labels[todo])
            broke = is_success(za, labels[todo], False)
            hit = todo[broke]
            best_x[hit], best_logits[hit], done[hit] = xa[broke], za[broke], True
        return best_x, best_logits
