"""DeepFool (Moosavi-Dezfooli, Fawzi & Frossard, "DeepFool: a simple and accurate method to fool deep
neural networks", CVPR 2016).

A minimum-norm, untargeted attack: no eps, it walks to the nearest decision boundary of the classifier
linearized around the current point. With y the true class and k over the K - 1 other classes the model
ranks highest on the clean image (K = min(``candidates``, classes); for a correctly classified image y and
these are the clean top K), at the iterate x_i:

    f_k = z_k(x_i) - z_y(x_i),   w_k = grad z_k(x_i) - grad z_y(x_i)
    l = argmin_k |f_k| / ||w_k||_q                       (q the dual norm: 2 for L2, 1 for L-inf)
    r_i = (|f_l| + 1e-4) / ||w_l||_2^2 * w_l              (L2: the orthogonal projection onto the plane)
    r_i = (|f_l| + 1e-4) / ||w_l||_1 * sign(w_l)          (L-inf)
    x_{i+1} = clip_[0,1](x0 + (1 + overshoot) * sum_{j <= i} r_j)

stopping each sample as soon as argmax z(x_{i+1}) != y (at most ``steps`` linearizations). For a linear
binary classifier one step lands at distance (1 + overshoot) |f(x0)| / ||w||_2 (+ the 1e-4 nudge, in
logits, that puts the unscaled step just past the plane), the exact minimal perturbation scaled by
1 + overshoot. Samples never broken come back unchanged.

Units: pixels in [0, 1]; the norm of the result is in [0, 1] pixel units. Cost per sample: one forward on
the clean image, then per linearization one forward and K backwards (``Oracle.logit_grads``) plus one
forward testing the new iterate, so that K backwards are never spent on a point that is already
adversarial: T linearizations cost 1 + 2 T forwards and K T backwards.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from advlab.attacks.base import Attack, Found, Goal, Oracle, Target, check_counts, register
from advlab.types import AttackResult

_NUDGE = 1e-4  # logits added to |f_l| so that the step crosses the linearized boundary, not just reaches it


@register
@dataclass(frozen=True, kw_only=True)
class DeepFool(Attack):
    """DeepFool in ``norm`` "l2" or "linf": at most ``steps`` linearizations over the top ``candidates``
    classes of the clean logits (the true class included), final step scaled by 1 + ``overshoot``."""

    steps: int = 50
    overshoot: float = 0.02
    candidates: int = 10
    norm: str = "l2"

    name: ClassVar[str] = "deepfool"

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target = None) -> AttackResult:
        if target is not None:
            raise ValueError("DeepFool is untargeted (it moves to the nearest boundary); call it without a target")
        return super().__call__(model, x, y)

    def validate(self) -> None:
        if self.norm not in ("l2", "linf"):
            raise ValueError(f"norm must be 'l2' or 'linf' for DeepFool, got {self.norm!r}")
        check_counts(self, "steps")
        if not self.overshoot >= 0:
            raise ValueError(f"overshoot must be >= 0, got {self.overshoot}")
        if self.candidates < 2:
            raise ValueError(f"candidates must be >= 2 (the true class and at least one other), got {self.candidates}")

    def _step(self, logits: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
        """The step r_i to the nearest linearized boundary; column 0 of ``logits``/``grads`` is the true class."""
        f = logits[:, 1:] - logits[:, :1]  # (n, K-1), negative while the true class leads
        w = (grads[:, 1:] - grads[:, :1]).flatten(2)  # (n, K-1, D)
        dual = w.norm(p=2 if self.norm == "l2" else 1, dim=2)
        dist = f.abs() / dual.clamp(min=1e-12)
        dist = torch.where(dual > 0, dist, torch.inf)  # a flat direction never reaches its boundary
        near = dist.argmin(1)  # the paper's l-hat
        rows = torch.arange(len(f), device=f.device)
        fl, wl, nl = f[rows, near].abs() + _NUDGE, w[rows, near], dual[rows, near].clamp(min=1e-12)
        if self.norm == "l2":
            r = (fl / nl**2)[:, None] * wl
        else:
            r = (fl / nl)[:, None] * wl.sign()
        r = torch.where(torch.isfinite(dist[rows, near])[:, None], r, torch.zeros_like(r))
        return r.view(len(f), *grads.shape[2:])

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        if goal.targeted:
            raise ValueError("DeepFool is untargeted")
        labels = goal.labels
        n, dev = len(x), x.device
        x0 = x.detach().float()
        xe = self._prepare(x0, x0, None)
        logits = oracle.logits(xe.to(x.dtype), torch.arange(n, device=dev))
        if logits.shape[1] < 2:
            raise ValueError(f"DeepFool needs a model with at least 2 logits, got {logits.shape[1]}")
        out_x, out_logits = xe.clone(), logits.clone()  # x0 (or its 8-bit rounding): what never-broken samples get
        # candidate classes: the true class first, then the clean top-(K-1) of the others
        k = min(self.candidates, logits.shape[1])
        others = logits.scatter(1, labels[:, None], -torch.inf).argsort(1, descending=True)[:, : k - 1]
        classes = torch.cat([labels[:, None], others], 1)
        r_tot = torch.zeros_like(x0)
        cur = xe.clone()  # the point linearized next
        active = (~goal.reached(logits)).nonzero().flatten()
        for _ in range(self.steps):
            if len(active) == 0:
                break
            a = active
            z, grads = oracle.logit_grads(cur[a].to(x.dtype), a, classes[a])
            r_tot[a] += self._step(z.float().gather(1, classes[a]), grads.float())
            xa = (x0[a] + (1 + self.overshoot) * r_tot[a]).clamp(0, 1)
            xe = self._prepare(xa, x0[a], None)
            za = oracle.logits(xe.to(x.dtype), a)
            cur[a] = xe
            ok = goal.rows(a).reached(za)
            out_x[a[ok]], out_logits[a[ok]] = xe[ok], za[ok]
            active = a[~ok]
        return out_x.to(x.dtype), out_logits
