"""Carlini & Wagner's L2 attack ("Towards evaluating the robustness of neural networks", S&P 2017).

A minimum-norm attack: no eps, it looks for the smallest L2 perturbation that changes the decision. Per
sample it minimizes, over w (one real number per pixel),

    ||x(w) - x0||_2^2 + c * f(x(w)),        x(w) = (tanh(w) + 1) / 2   (in [0, 1] for every w)

    f(x) = -min(m(x), kappa) = max(z_y - max_{j != y} z_j, -kappa)          (untargeted)

with z the logits and m :func:`advlab.losses.margin` (untargeted m = max_{j != y} z_j - z_y, targeted
m = z_t - max_{j != t} z_j, so targeted f = max(max_{j != t} z_j - z_t, -kappa)): m > 0 exactly when the
attack succeeds, and f reaches its floor -kappa once it succeeds by ``kappa`` logits.

``steps`` iterations of Adam (step ``lr`` in w units) per round, each round restarting from x0; between
rounds a per-sample binary search on c, starting at ``c``: a sample broken in the round lowers its upper
bound on c, one not broken raises its lower bound (or, with no upper bound yet, multiplies c by 10), and
c moves to the middle. Per sample the result is the smallest-L2 successful point seen in any round (with
``kappa > 0`` success needs m >= kappa); samples never broken come back unchanged (success False).

Units: pixels in [0, 1], so the L2 norm is in [0, 1] pixel units (sqrt(sum of squared changes)); kappa
and f are in logits. Cost per sample: one forward and one backward per Adam step, i.e. at most
``steps * binary_search_steps`` of each (fewer with ``abort_early``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch

from advlab.attacks.base import Attack, Found, Goal, Oracle, check_counts, check_positive, register
from advlab.attacks.minimal import Smallest
from advlab.attacks.step import Adam
from advlab.losses import margin

#: w0 = atanh(2 x0 - 1) is taken of 2 x0 - 1 clamped to +-(1 - _EDGE), so pixels at 0 or 1 get a finite w0.
#: The reference code's 1e-6 puts them at |w0| = 7.3, where dx/dw is 1e-6 and Adam (steps of about lr in w)
#: needs hundreds of steps before they move at all: on 8x8 digits (60 % of pixels at 0 or 1) that cost 7-17 %
#: in median L2 and a few successes. At 1e-2 they start at |w0| = 2.6; x(w) (see :class:`_Tanh`) is still
#: exactly x0 at w0, and its clamp keeps the box.
_EDGE = 1e-2


class _Tanh(NamedTuple):
    """The change of variables from w (one real number per pixel) to images in [0, 1]:

        x(w) = clip(x0 + (tanh(w) - tanh(w0)) / 2, 0, 1)

    which is (tanh(w) + 1) / 2 away from the edges, and exactly x0 where w has not moved (no round-trip error of
    tanh(atanh(.)) counted as a change, no L0 noise). ``dtype``: the model's input dtype (the attack works in
    float32)."""

    x0: torch.Tensor
    w0: torch.Tensor
    t0: torch.Tensor
    dtype: torch.dtype

    @classmethod
    def around(cls, x: torch.Tensor) -> _Tanh:
        """The change of variables around the images ``x`` (w0 = atanh(2 x0 - 1), clamped by ``_EDGE``)."""
        x0 = x.detach().float()
        w0 = torch.atanh((2 * x0 - 1).clamp(-1 + _EDGE, 1 - _EDGE))
        return cls(x0, w0, torch.tanh(w0), x.dtype)


@register
@dataclass(frozen=True, kw_only=True)
class CW(Attack):
    """Carlini-Wagner L2: ``c`` initial trade-off constant, ``kappa`` confidence (logits), ``steps`` Adam
    iterations per binary-search round, ``binary_search_steps`` rounds, ``lr`` Adam's step size on w.

    ``abort_early``: every ``steps // 10`` iterations a sample whose objective fell by less than 0.01 %
    since the last check stops for the rest of the round (Carlini & Wagner's rule, per sample).
    """

    c: float = 1.0
    kappa: float = 0.0
    steps: int = 200
    binary_search_steps: int = 5
    lr: float = 1e-2
    abort_early: bool = True

    name: ClassVar[str] = "cw"

    def validate(self) -> None:
        check_positive(self, "c")
        if not self.kappa >= 0:
            raise ValueError(f"kappa must be >= 0, got {self.kappa}")
        check_counts(self, "steps", "binary_search_steps")
        check_positive(self, "lr")

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        box, n, dev = _Tanh.around(x), len(x), x.device
        c = torch.full((n,), float(self.c), device=dev)
        lo, hi = torch.zeros(n, device=dev), torch.full((n,), torch.inf, device=dev)
        best: Smallest | None = None
        for _ in range(self.binary_search_steps):
            found, best = self._round(oracle, box, goal, c, best)
            # binary search on c, per sample
            hi = torch.where(found, torch.minimum(hi, c), hi)
            lo = torch.where(found, lo, torch.maximum(lo, c))
            c = torch.where(torch.isfinite(hi), (lo + hi) / 2, c * 10)
        assert best is not None
        return best.x.to(x.dtype), best.logits

    def _round(
        self, oracle: Oracle, box: _Tanh, goal: Goal, c: torch.Tensor, best: Smallest | None
    ) -> tuple[torch.Tensor, Smallest]:
        """One round: ``steps`` Adam steps on w from w0 at the trade-off ``c`` (per sample), recording into ``best``
        (None before the first round) the smallest successful point, measured on exactly what the model saw.
        Returns which samples the round broke, and ``best``."""
        n = len(box.x0)
        w, adam = box.w0.clone(), Adam.like(box.w0)
        found = torch.zeros(n, dtype=torch.bool, device=box.x0.device)
        prev = torch.full((n,), torch.inf, device=box.x0.device)
        active, check = torch.arange(n, device=box.x0.device), max(1, self.steps // 10)
        for step in range(self.steps):
            a, aim = active, goal.rows(active)
            th = torch.tanh(w[a])
            xa = (box.x0[a] + (th - box.t0[a]) / 2).clamp(0, 1)
            xe = self._prepare(xa, box.x0[a], None)  # with ``quantize`` the gradient is taken at the rounded point
            logits, cf, g = oracle.grad(xe.to(box.dtype), a, self._objective(aim, c[a]))
            if best is None:  # round 0, step 0: x0 itself (or its 8-bit rounding), the fallback
                best = Smallest(xe, logits)
            ok = aim.reached(logits) & (margin(logits, aim.labels, aim.targeted) >= self.kappa)
            best.update(a, xe, logits, ok, (xe - box.x0[a]).flatten(1).norm(dim=1))
            found[a[ok]] = True
            # Adam on w: d/dw [||x - x0||^2 + c f] = (2 (x - x0) + c df/dx) * (1 - tanh(w)^2) / 2
            d = xa - box.x0[a]
            m_hat, root = adam.moments(a, (2 * d + g.float()) * (1 - th * th) / 2, step + 1)
            w[a] = w[a] - self.lr * m_hat / root
            if self.abort_early and step % check == 0:
                loss = d.flatten(1).pow(2).sum(1) + cf.float()
                stalled = torch.isfinite(prev[a]) & (loss > prev[a] - 1e-4 * prev[a].abs())
                prev[a] = loss
                active = a[~stalled]
                if len(active) == 0:
                    break
        assert best is not None
        return found, best

    def _objective(self, goal: Goal, c: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
        """c f(z) = -c min(margin, kappa), the objective's model term (to minimize; its gradient is added to w's)."""
        return lambda z: -c * margin(z, goal.labels, goal.targeted, kappa=self.kappa)
