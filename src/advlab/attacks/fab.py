"""FAB, the Fast Adaptive Boundary attack (Croce & Hein, "Minimally distorted adversarial examples with a fast
adaptive boundary attack", ICML 2020), in L-inf, L2 and L1.

A minimum-norm attack: from the clean point x_orig of class c it walks to the nearest point of the linearized
decision boundary, biased towards x_orig, and steps back towards x_orig after every success. At the iterate x_i,
with the logit differences f_l = z_l - z_c (l != c) and their gradients w_l = grad z_l(x_i) - grad z_c(x_i), each
class's decision boundary is replaced by its hyperplane pi_l = {z : f_l(x_i) + <w_l, z - x_i> = 0}, and

    s        = argmin_{l != c} |f_l(x_i)| / ||w_l||_q                  (q the dual norm: 1, 2, inf for linf, l2, l1)
    delta    = P_p(x_i, pi_s, C) - x_i,   delta_o = P_p(x_orig, pi_s, C) - x_orig
    alpha    = min(||delta||_p / (||delta||_p + ||delta_o||_p), alpha_max)
    x_{i+1}  = clip_C((1 - alpha)(x_i + eta delta) + alpha (x_orig + eta delta_o))
    if x_{i+1} is adversarial:  keep it if it is the smallest found,  x_{i+1} <- (1 - beta) x_orig + beta x_{i+1}

where C = [0, 1]^d and P_p(x, pi, C) = x + argmin {||d||_p : x + d in pi, x + d in C} is the projection onto the
hyperplane intersected with the box (:func:`hyperplane_projection`; exact, by sorting, in O(d log d)). eta > 1
oversteps the plane a little (the paper's 1.05), beta < 1 is the backward step (0.9) and alpha_max (0.1) bounds the
bias towards x_orig. The first run starts at x_orig; restart r >= 1 starts at a random point of the ball around
x_orig of radius ||x_out - x_orig|| / 2 where a point was found, else ``eps`` (else the norm of the first linear
estimate delta_o), clipped to the box. The result is, per sample, the adversarial point of smallest norm found.

Targeted (``target=`` t): one hyperplane, that of the margin z_t - max_{l != t} z_l; success is argmax = t.
:class:`FABT` (AutoAttack's FAB-T) reaches the untargeted goal with one hyperplane per run, that of z_t - z_c,
for t over the ``n_targets`` most likely wrong classes at the clean point in turn, each on the samples still
unbroken. With ``eps`` FAB is an eps-bounded attack: a sample whose smallest adversarial point lies farther than
eps gets x back (not a success), only such samples restart, and with ``early_stop`` a sample stops at its first
adversarial point within eps.

On an affine model z = W x + b the linearization is exact, so the first step lands at x_orig + eta delta_o with
delta_o the true minimal perturbation towards class s (box included), and the later steps (back by beta, then over
the plane by eta again) settle at the minimal distance times 1.005 with the defaults (measured; eta -> 1 makes it
exact: :mod:`tests.attacks.test_fab`).

Units: pixels in [0, 1]; norms in [0, 1] pixel units. Cost per sample: one forward on the clean point, then per
iteration one forward with K backwards (the Jacobian of all K logits; untargeted FAB) or with one backward (FAB-T
and targeted FAB: the gradient of one logit difference), plus one forward checking x_{i+1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from advlab.attacks.base import (
    Attack,
    Found,
    Goal,
    Oracle,
    Target,
    check_counts,
    check_epsilons,
    register,
)
from advlab.attacks.minimal import Smallest, distances, wrong_classes
from advlab.threat import DUAL, check_norm, distance, random_start
from advlab.types import AttackResult

#: the norms FAB works in
FAB_NORMS = ("linf", "l2", "l1")
#: FAB's random restarts draw from streams from here on (the targets of FAB-T: a block each), none of APGD's
FAB_STREAM = 2000
_TINY = 1e-12


def hyperplane_projection(x: torch.Tensor, w: torch.Tensor, f: torch.Tensor, norm: str) -> torch.Tensor:
    """The smallest step onto a hyperplane inside the box: for x, w (N, D) and f (N,),

        argmin_d ||d||_p   subject to   f + <w, d> = 0   and   0 <= x + d <= 1      (p = ``norm``)

    Writing m = -f (flipping w and m so that m >= 0) and d_j = sign(w_j) t_j with 0 <= t_j <= r_j (r_j the room of
    coordinate j towards sign(w_j): 1 - x_j or x_j), the constraint is sum_j |w_j| t_j = m and

        L2:    t_j = min(lambda |w_j|, r_j)   (KKT)
        L-inf: t_j = min(tau, r_j)
        L1:    t fills the coordinates by decreasing |w_j| (a fractional knapsack)

    with lambda, tau found exactly by sorting the breakpoints r_j / |w_j| (L2) or r_j (L-inf): the gain
    sum_j |w_j| t_j is piecewise linear and nondecreasing in lambda (tau). Where even the whole box cannot reach the
    plane (sum_j |w_j| r_j < m) the result is the box corner that comes closest, t = r. Computed in x's dtype.
    """
    norm = check_norm(norm)
    need = -f.to(x.dtype)
    flip = torch.where(need < 0, -1.0, 1.0).to(x.dtype)
    v, m = w.to(x.dtype) * flip[:, None], need.abs()
    a = v.abs()
    room = torch.where(v > 0, 1 - x, x).clamp(min=0)
    live = a > 0
    pos = torch.arange(x.shape[1], device=x.device)
    if norm == "l1":
        order = a.argsort(1, descending=True)
        a_s, r_s = a.gather(1, order), room.gather(1, order)
        cum = (a_s * r_s).cumsum(1)
        full = (cum < m[:, None]).sum(1)  # coordinates filled completely
        k = full.clamp(max=x.shape[1] - 1)
        before = torch.where(full > 0, cum.gather(1, (full - 1).clamp(min=0)[:, None]).squeeze(1), torch.zeros_like(m))
        part = ((m - before) / a_s.gather(1, k[:, None]).squeeze(1).clamp(min=_TINY)).clamp(min=0)
        part = torch.minimum(part, r_s.gather(1, k[:, None]).squeeze(1))
        t_s = torch.where(pos < full[:, None], r_s, torch.where(pos == full[:, None], part[:, None], 0))
        t = torch.zeros_like(x).scatter(1, order, t_s)
    else:
        # breakpoints: where coordinate j saturates (inf where w_j = 0: it never moves)
        brk = room / a.clamp(min=_TINY) if norm == "l2" else room.clone()
        brk = torch.where(live, brk, torch.inf)
        order = brk.argsort(1)
        b_s, a_s, r_s = brk.gather(1, order), a.gather(1, order), room.gather(1, order)
        slope = a_s * a_s if norm == "l2" else a_s  # d gain / d lambda of a coordinate not yet saturated
        cum_sat = (a_s * r_s).cumsum(1)  # the gain of the coordinates saturated up to breakpoint k
        rest = slope.sum(1, keepdim=True) - slope.cumsum(1)  # the slope of those still moving after it
        gain = torch.where(torch.isfinite(b_s), cum_sat + b_s.nan_to_num(posinf=0.0) * rest, torch.inf)
        k = (gain < m[:, None]).sum(1)  # breakpoints passed before the gain reaches m
        prev = (k - 1).clamp(min=0)[:, None]
        done = torch.where(k > 0, cum_sat.gather(1, prev).squeeze(1), torch.zeros_like(m))
        moving = torch.where(k > 0, rest.gather(1, prev).squeeze(1), slope.sum(1))
        lam = torch.where(moving > 0, (m - done) / moving.clamp(min=_TINY), torch.inf)
        scale = lam[:, None] * a if norm == "l2" else lam[:, None].expand_as(a)
        t = torch.where(live, torch.minimum(scale.nan_to_num(posinf=math.inf), room), 0)
    return v.sign() * t


def _norm(d: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample ``norm`` of ``d`` (N, D) in its own dtype."""
    if norm == "linf":
        return d.abs().amax(1)
    return d.norm(p=2 if norm == "l2" else 1, dim=1)


@register
@dataclass(frozen=True, kw_only=True)
class FAB(Attack):
    """FAB in ``norm`` (linf, l2, l1): ``steps`` iterations per run, ``restarts`` runs (the first from x_orig, each
    further one on the samples not yet broken within eps), bias bound ``alpha_max``, overstep ``eta`` and backward
    step ``beta`` (the paper's 0.1, 1.05, 0.9). ``eps``: None (minimize the norm only) or the radius a success must
    lie within (x comes back where none is found within it); with ``early_stop`` a sample stops at its first success
    within eps. Untargeted or targeted."""

    norm: str = "linf"
    eps: float | None = None
    steps: int = 100
    restarts: int = 1
    alpha_max: float = 0.1
    eta: float = 1.05
    beta: float = 0.9
    early_stop: bool = False

    name: ClassVar[str] = "fab"

    def validate(self) -> None:
        if self.norm not in FAB_NORMS:
            raise ValueError(f"norm must be one of {', '.join(FAB_NORMS)} for FAB, got {self.norm!r}")
        if self.eps is not None:
            if not isinstance(self.eps, (int, float)):
                raise ValueError(f"eps must be one number (or None) for FAB, got {self.eps!r}")
            check_epsilons(self.eps, self.norm)
        check_counts(self, "steps", "restarts")
        if not 0 <= self.alpha_max <= 1:
            raise ValueError(f"alpha_max must be in [0, 1], got {self.alpha_max}")
        if not self.eta >= 1:
            raise ValueError(f"eta must be >= 1 (it oversteps the linearized boundary), got {self.eta}")
        if not 0 < self.beta < 1:
            raise ValueError(f"beta must be in (0, 1) (the backward step towards x_orig), got {self.beta}")

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target = None) -> AttackResult:
        """As every attack; ``min_eps`` holds each sample's distance: the norm of ``x_adv - x`` where it succeeded,
        inf where not (with ``eps``: none found within eps)."""
        res = super().__call__(model, x, y, target)
        res.min_eps = distances(res, x, self.norm)
        return res

    # ---------------------------------------------------------------- the search
    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        x0, clean, best, guess = self._start(oracle, x, goal)
        others = None if goal.targeted else wrong_classes(clean, goal.labels)
        self._runs(oracle, x0, goal, others, best, eps, guess, FAB_STREAM)
        return self._within(best, x0, clean, eps)

    def _start(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal
    ) -> tuple[torch.Tensor, torch.Tensor, Smallest, torch.Tensor]:
        """(x, its clean logits, the smallest adversarial points so far: x where it already meets the goal, and the
        running guess of each sample's distance: inf)."""
        x0 = x.detach()
        everyone = torch.arange(len(x), device=x.device)
        clean = oracle.logits(x0, everyone)
        if clean.shape[1] < 2:
            raise ValueError(f"FAB needs a model with at least 2 logits, got {clean.shape[1]}")
        best = Smallest(x0, clean)
        best.update(everyone, x0, clean, goal.reached(clean), torch.zeros(len(x), device=x.device))
        return x0, clean, best, torch.full((len(x),), math.inf, device=x.device)

    def _within(self, best: Smallest, x0: torch.Tensor, clean: torch.Tensor, eps: float | None) -> Found:
        """The smallest adversarial points, but x (and its clean logits) where the point lies outside eps."""
        if eps is None:
            return best.x, best.logits
        far = best.norm > eps * (1 + 1e-5) + 1e-6
        return torch.where(far.view(-1, *[1] * (x0.ndim - 1)), x0, best.x), torch.where(
            far[:, None], clean, best.logits
        )

    def _runs(
        self,
        oracle: Oracle,
        x0: torch.Tensor,
        goal: Goal,
        toward: torch.Tensor | None,
        best: Smallest,
        eps: float | None,
        guess: torch.Tensor,
        stream: int,
    ) -> None:
        """Up to ``restarts`` runs towards the classes ``toward``: (N,) one class per sample (FAB-T), (N, K - 1) FAB's
        choice among them (untargeted), None for a targeted goal; each run on the
        samples still to break: not yet adversarial within eps (without eps: not yet at norm 0)."""
        for restart in range(self.restarts):
            rows = self._todo(best, eps)
            if len(rows) == 0:
                return
            start = x0[rows]
            if restart > 0:
                found = torch.isfinite(best.norm[rows])
                radius = torch.where(found, best.norm[rows] / 2, guess[rows] if eps is None else eps)
                radius = torch.where(torch.isfinite(radius), radius, 0.0).to(x0.dtype)
                delta = random_start(start, radius, check_norm(self.norm), seed=self.seed, stream=stream + restart)
                start = (start + delta).clamp(0, 1)
            self._walk(oracle, x0, goal, rows, start, toward, best, eps, guess if restart == 0 else None)

    def _todo(self, best: Smallest, eps: float | None) -> torch.Tensor:
        if eps is None:
            return (best.norm > 0).nonzero().flatten()
        return (best.norm > eps * (1 + 1e-5) + 1e-6).nonzero().flatten()

    def _walk(
        self,
        oracle: Oracle,
        x0: torch.Tensor,
        goal: Goal,
        rows: torch.Tensor,
        start: torch.Tensor,
        toward: torch.Tensor | None,
        best: Smallest,
        eps: float | None,
        guess: torch.Tensor | None,
    ) -> None:
        """One FAB run of ``steps`` iterations on the batch positions ``rows`` from ``start``; every checked point is
        scored into ``best``; ``guess`` (first run only) gets the norm of the first delta_o per sample."""
        norm = self.norm
        shape = x0.shape[1:]
        xo = x0[rows].flatten(1)
        xk = start.flatten(1).clone()
        active = torch.arange(len(rows), device=x0.device)  # positions within ``rows``
        for k in range(self.steps):
            if len(active) == 0:
                return
            a, where = active, rows[active]
            aim = goal.rows(where)
            f, w = self._linearize(oracle, xk[a].view(-1, *shape), where, aim, None if toward is None else toward[a])
            dual = w.norm(p=DUAL[norm], dim=2)
            dist = torch.where(dual > 0, f.abs() / dual.clamp(min=_TINY), torch.inf)
            s = dist.argmin(1)
            pick = torch.arange(len(a), device=x0.device)
            fs, ws = f[pick, s], w[pick, s]
            xa, oa = xk[a], xo[a]
            d = hyperplane_projection(xa, ws, fs, norm)
            do = hyperplane_projection(oa, ws, fs + (ws * (oa - xa)).sum(1), norm)
            nd, ndo = _norm(d, norm), _norm(do, norm)
            if guess is not None and k == 0:
                guess[where] = ndo.to(guess.dtype)
            total = nd + ndo
            alpha = torch.where(total > 0, nd / total.clamp(min=_TINY), 0).clamp(max=self.alpha_max)[:, None]
            nxt = ((1 - alpha) * (xa + self.eta * d) + alpha * (oa + self.eta * do)).clamp(0, 1)
            xe = self._prepare(nxt.view(-1, *shape), x0[where], None)
            z = oracle.logits(xe, where)
            adv = aim.reached(z)
            best.update(where, xe, z, adv, distance(xe - x0[where], norm).to(best.norm.device))
            back = (1 - self.beta) * oa + self.beta * nxt
            xk[a] = torch.where(adv[:, None], back, nxt)
            if self.early_stop and eps is not None:
                active = a[best.norm[where] > eps * (1 + 1e-5) + 1e-6]

    def _linearize(
        self, oracle: Oracle, x: torch.Tensor, where: torch.Tensor, goal: Goal, toward: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The hyperplanes at ``x``: values f (n, H) and normals w (n, H, D), adversarial where f > 0.

        Untargeted (``toward`` (n, K - 1), every other class): f_l = z_l - z_c for every l != c, from the Jacobian of
        all K logits (one forward, K backwards). Towards one class t per sample (``toward`` (n,)): f = z_t - z_c (one
        forward, one backward).
        Targeted goal: f = z_t - max_{l != t} z_l, the targeted margin (one forward, one backward)."""
        labels = goal.labels
        if goal.targeted or (toward is not None and toward.ndim == 1):
            t = labels if goal.targeted else toward
            assert t is not None

            def objective(z: torch.Tensor) -> torch.Tensor:
                zt = z.gather(1, t[:, None]).squeeze(1)
                if goal.targeted:
                    return zt - z.scatter(1, t[:, None], -math.inf).amax(1)
                return zt - z.gather(1, labels[:, None]).squeeze(1)

            _, value, g = oracle.grad(x, where, objective)
            return value[:, None].to(x.dtype), g.flatten(1)[:, None].to(x.dtype)
        assert toward is not None and toward.ndim == 2
        z, jac = oracle.logit_grads(x, where, torch.cat([labels[:, None], toward], 1))
        f = z.gather(1, toward) - z.gather(1, labels[:, None])
        return f.to(x.dtype), (jac[:, 1:] - jac[:, :1]).flatten(2).to(x.dtype)


@register
@dataclass(frozen=True, kw_only=True)
class FABT(FAB):
    """FAB-T (AutoAttack's targeted FAB): the untargeted goal reached by FAB runs towards the ``n_targets`` most
    likely wrong classes at the clean point in turn, each on the samples still unbroken (within eps), each run
    linearizing one logit difference z_t - z_c (one backward per iteration instead of K). With ``target=`` given,
    it is targeted FAB."""

    n_targets: int = 9

    name: ClassVar[str] = "fab-t"

    def validate(self) -> None:
        super().validate()
        if self.n_targets < 1:
            raise ValueError(f"n_targets must be >= 1, got {self.n_targets}")

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        if goal.targeted:
            return super()._attack(oracle, x, goal, eps, init)
        x0, clean, best, guess = self._start(oracle, x, goal)
        order = wrong_classes(clean, goal.labels)
        for rank in range(min(self.n_targets, order.shape[1])):
            self._runs(oracle, x0, goal, order[:, rank], best, eps, guess, FAB_STREAM + (rank + 1) * self.restarts)
        return self._within(best, x0, clean, eps)
