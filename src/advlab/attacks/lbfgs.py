"""Box-constrained L-BFGS (Szegedy et al., "Intriguing properties of neural networks", ICLR 2014).

For a target class t, Szegedy et al. look for the smallest r with f(x + r) = t and x + r in [0, 1] by solving,
for a penalty weight c > 0,

    minimize_r   c * |r| + loss_f(x + r, t)     subject to  x + r in [0, 1]^m

with box-constrained L-BFGS, and then search c for the smallest perturbation that still reaches t. Here
|r| = ||r||_2^2 (Szegedy write |r|; the squared L2 norm is what common implementations use, and it is smooth
at r = 0) and loss_f is the cross-entropy to the target, -log softmax(f(x + r))_t. Pixels are in [0, 1], so
||r||_2 is in [0, 1]-pixel units.

Untargeted (``target=None``), loss_f is the cross-entropy to "any class but y": -log(1 - softmax(f(x + r))_y),
the two-class counterpart of the targeted loss; like it, it is bounded below by 0 and flattens once the
sample is misclassified with confidence, so the norm term is what decides how far past the boundary the
minimizer lies (ascending CE(x + r, y) instead has no such floor and overshoots).

The penalty c is searched per sample, as in Carlini & Wagner's binary search: start at ``c_init``; after each
L-BFGS-B run (from r = 0, at most ``steps`` iterations), a sample whose last iterate reaches its goal keeps
that point if its norm is the smallest so far and raises c (more weight on the norm: a smaller perturbation),
one whose last iterate does not lowers c; both by a factor 10 until a success and a failure bracket c, then
by geometric bisection, sqrt(c_ok * c_fail). Samples never successful are returned unchanged (with
``quantize``: rounded to the 8-bit grid). With ``quantize`` each last iterate is rounded to the nearest grid
point and judged there.

The sub-batch is optimized jointly as one separable float64 problem sum_i [c_i ||r_i||_2^2 + loss_f,i] with
``scipy.optimize.minimize(method="L-BFGS-B")``; the model sees x's dtype (float32). Each function evaluation
is one forward and one backward of the whole batch, about 1.1 per iteration (capped at 2 * ``steps`` a run,
checked between iterations), so an attack costs about search_steps * 1.1 * steps forwards and backwards per
sample. On the 8x8 digits the joint problem reaches the same norms as one L-BFGS-B problem per sample in
under a tenth of the time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.optimize import Bounds, minimize

from advlab.attacks.base import Attack, Found, Goal, Oracle, check_counts, check_positive, register


def target_ce(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """-log softmax(z)_t per sample: the loss a targeted L-BFGS minimizes."""
    return torch.nn.functional.cross_entropy(logits.float(), t, reduction="none")


def not_label_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """-log(1 - softmax(z)_y) = logsumexp(z) - logsumexp_{j != y}(z) per sample: the untargeted loss."""
    z = logits.float()
    return z.logsumexp(1) - z.scatter(1, y[:, None], float("-inf")).logsumexp(1)


@register
@dataclass(frozen=True, kw_only=True)
class LBFGS(Attack):
    """Szegedy et al.'s box-constrained L-BFGS attack: minimize c ||r||_2^2 + CE with a per-sample search over c.

    ``c_init``: the first penalty weight (per unit of squared [0, 1]-pixel L2); ``search_steps``: L-BFGS-B runs
    per sample (each updates c); ``steps``: the iteration cap of one L-BFGS-B run. Unbounded (no eps); the
    result is the smallest successful perturbation found, or ``x`` itself.
    """

    c_init: float = 1.0
    search_steps: int = 8
    steps: int = 30

    name: ClassVar[str] = "lbfgs"

    def validate(self) -> None:
        check_positive(self, "c_init")
        check_counts(self, "search_steps", "steps")

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        x = x.detach()
        n, rows = len(x), torch.arange(len(x), device=x.device)
        loss_f = target_ce if goal.targeted else not_label_ce
        best_x = self._prepare(x, x, None).clone()  # never successful: x itself (on the 8-bit grid with quantize)
        best_logits = oracle.logits(best_x, rows)
        best_norm = torch.full((n,), float("inf"), dtype=torch.float64, device=x.device)

        def keep(xe: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
            """Keep the successful rows of ``xe`` that are closer to ``x`` than the best so far; return success."""
            ok = goal.reached(logits)
            norm = (xe - x).flatten(1).double().norm(dim=1)
            better = ok & (norm < best_norm)
            best_x[better], best_logits[better], best_norm[better] = (
                xe[better].to(x.dtype),
                logits[better],
                norm[better],
            )
            return ok

        c = torch.full((n,), float(self.c_init), dtype=torch.float64, device=x.device)
        lo = torch.zeros_like(c)  # per sample, the largest c whose minimizer reached the goal (0: none yet)
        hi = torch.full_like(c, float("inf"))  # and the smallest c whose minimizer did not
        for _ in range(self.search_steps):
            x_end, z_end = _lbfgsb(oracle, x, rows, lambda z: loss_f(z, goal.labels), c, self.steps)
            x_end = self._prepare(x_end, x, None)
            if z_end is None or self.quantize:
                z_end = oracle.logits(x_end, rows)
            ok = keep(x_end, z_end)
            lo, hi = torch.where(ok, torch.maximum(lo, c), lo), torch.where(ok, hi, torch.minimum(hi, c))
            c = torch.where((lo > 0) & torch.isfinite(hi), (lo * hi).sqrt(), torch.where(ok, c * 10, c / 10))
        return best_x, best_logits


def _lbfgsb(
    oracle: Oracle,
    x: torch.Tensor,
    rows: torch.Tensor,
    loss: Callable[[torch.Tensor], torch.Tensor],
    c: torch.Tensor,
    steps: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One L-BFGS-B run from x' = x of sum_i c_i ||x'_i - x_i||_2^2 + loss(f(x'))_i over x' in [0, 1] (float64).

    Returns the last iterate (x's dtype and device) and the model's logits on it when it was the last point
    evaluated (else None).
    """
    shape, m = x.shape, len(x)
    start = x.detach().double().cpu().numpy().reshape(m, -1)
    cw = c.double().cpu().numpy()[:, None]
    seen: list[tuple[np.ndarray, torch.Tensor]] = []  # the last evaluated point and its logits

    def fun(v: np.ndarray) -> tuple[float, np.ndarray]:
        xt = torch.from_numpy(v).view(shape).to(x.device, x.dtype)
        logits, value, g = oracle.grad(xt, rows, loss)
        r = v.reshape(m, -1) - start
        grad = 2 * cw * r + g.double().cpu().numpy().reshape(m, -1)
        seen[:] = [(v.copy(), logits)]
        return float((cw * r * r).sum() + value.double().sum().item()), grad.ravel()

    bounds = Bounds(np.zeros(start.size), np.ones(start.size))
    res = minimize(
        fun, start.ravel(), jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": steps, "maxfun": 2 * steps}
    )
    x_end = torch.from_numpy(res.x).view(shape).to(x.device, x.dtype)
    same = bool(seen) and np.array_equal(res.x, seen[0][0])
    return x_end, seen[0][1] if same else None
