"""Known-answer models: classifiers whose minimal adversarial distance is known exactly, and the self-test that
holds every minimum-norm attack to it.

Both models take (N, 1, 8, 8) images in [0, 1] (digits-sized) and are piecewise linear:

- :class:`LinearModel`, z = W x + b (times :data:`SCALE`, as both models). Sample x of class y is adversarial
  at x + delta exactly when some class t beats y, i.e. delta lies in one of the halfspaces
  (w_t - w_y) . delta >= z_y - z_t. Without the box the distance to halfspace t is (z_y - z_t) / ||w_t - w_y||_q
  (q the dual norm); :func:`halfspace_distance` computes it exactly with the [0, 1] box as well (per coordinate
  -x_j <= delta_j <= 1 - x_j).
- :class:`MaxoutModel`, z_0 = 0 and z_c = max_p (w_cp . x + b_cp) for c >= 1: its linear regions are the
  pieces p. The samples are of class 0 and adversarial wherever one piece is positive, so their distance is
  the smallest over the pieces of the distance to the halfspace w_cp . delta >= -(w_cp . x + b_cp). Here the
  gradient at x points to the largest piece, not necessarily the nearest: a test of the attack's search.

Distances are in [0, 1] pixel units (L0: the number of changed values), computed in float64.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import Attack
from advlab.attacks.minimal import distances

SHAPE = (1, 8, 8)
#: the logits are the affine functions times this: distances do not change, softmax is confident (as a trained
#: network's), so CE-driven attacks (DDN) see the direction of the nearest boundary, not a blend of all classes
SCALE = 10.0
_BISECT = 100  # bisection steps of the box-constrained L2 / L-inf distances (float64: exact to ~1e-15)


class LinearModel(nn.Module):
    """z = W flatten(x) + b, ``W`` (K, D)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w.float()), nn.Parameter(b.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SCALE * (x.flatten(1) @ self.w.t() + self.b)


class MaxoutModel(nn.Module):
    """z_0 = 0, z_c = max_p (w_cp . x + b_cp): ``w`` (K - 1, P, D), ``b`` (K - 1, P)."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w, self.b = nn.Parameter(w.float()), nn.Parameter(b.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.einsum("nd,cpd->ncp", x.flatten(1), self.w) + self.b
        return SCALE * torch.cat([torch.zeros(len(x), 1, dtype=pieces.dtype, device=x.device), pieces.amax(2)], 1)


@dataclass(frozen=True)
class Known:
    """A known-answer problem: ``model``, images ``x`` (N, 1, 8, 8), labels ``y`` (the model's own predictions)
    and ``truth(norm)`` -> (N,) float64, the exact minimal untargeted distance of each sample."""

    name: str
    model: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    truth: Callable[[str], torch.Tensor]


def halfspace_distance(v: torch.Tensor, m: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    """min ||delta||_norm subject to v . delta >= m and 0 <= x + delta <= 1, for v (N, T, D), m (N, T) > 0, x (N, D).

    L2: delta = clip(lambda v, -x, 1 - x) for the lambda that makes v . delta = m (KKT; found by bisection).
    L-inf: delta = clip(eps sign(v), -x, 1 - x) for the smallest such eps (bisection). L1 and L0: coordinates
    taken greedily, L1 by |v_j| (a fractional knapsack), L0 by the most each can add, |v_j| times its room.
    inf where even the whole box cannot reach the halfspace.
    """
    v, m, x = v.double(), m.double(), x.double()[:, None, :].expand_as(v)
    room = torch.where(v > 0, 1 - x, x)  # how far each coordinate can move in its useful direction
    gain = room * v.abs()
    reachable = gain.sum(2) >= m
    if norm in ("l1", "l0"):
        key = v.abs() if norm == "l1" else gain
        order = key.argsort(2, descending=True)
        g = gain.gather(2, order).cumsum(2)
        count = (g < m[..., None]).sum(2)  # coordinates filled completely before the one that covers m
        if norm == "l0":
            d = (count + 1).double()
        else:
            r, a = room.gather(2, order), v.abs().gather(2, order)
            full = (r * (g < m[..., None])).sum(2)
            before = torch.where(
                count > 0, g.gather(2, (count - 1).clamp(min=0)[..., None]).squeeze(2), torch.zeros_like(m)
            )
            part = (m - before) / a.gather(2, count.clamp(max=v.shape[2] - 1)[..., None]).squeeze(2)
            d = full + part
        return torch.where(reachable, d, torch.full_like(d, math.inf))
    lo, hi = torch.zeros_like(m), torch.full_like(m, 1e6 if norm == "l2" else 1.0)
    for _ in range(_BISECT):
        mid = (lo + hi) / 2
        delta = _box_point(mid, v, x, norm)
        ok = (v * delta).sum(2) >= m
        hi, lo = torch.where(ok, mid, hi), torch.where(ok, lo, mid)
    delta = _box_point(hi, v, x, norm)
    d = delta.norm(dim=2) if norm == "l2" else delta.abs().amax(2)
    return torch.where(reachable, d, torch.full_like(d, math.inf))


def _box_point(t: torch.Tensor, v: torch.Tensor, x: torch.Tensor, norm: str) -> torch.Tensor:
    step = t[..., None] * (v if norm == "l2" else v.sign())
    return torch.minimum(torch.maximum(step, -x), 1 - x)


def linear_problem(n: int = 64, classes: int = 5, seed: int = 0) -> Known:
    """A random linear classifier on 8x8 images and ``n`` images in [0.25, 0.75] labelled by it."""
    gen = torch.Generator().manual_seed(seed)
    d = math.prod(SHAPE)
    w = torch.randn(classes, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    b = torch.randn(classes, generator=gen, dtype=torch.float64) * 0.1
    x = 0.25 + 0.5 * torch.rand(n, d, generator=gen, dtype=torch.float64)
    x = x.float().double()  # the float32 images the attacks see
    model = LinearModel(w, b)
    y = (x @ w.t() + b).argmax(1)

    def truth(norm: str) -> torch.Tensor:
        z = x @ w.t() + b
        others = torch.stack([torch.arange(classes)[torch.arange(classes) != int(c)] for c in y])  # (n, K-1)
        v = w[others] - w[y][:, None, :]
        gap = z.gather(1, y[:, None]) - z.gather(1, others)
        return halfspace_distance(v, gap, x, norm).amin(1)

    return Known("linear", model, x.float().view(n, *SHAPE), y, truth)


def maxout_problem(n: int = 64, classes: int = 4, pieces: int = 4, seed: int = 0) -> Known:
    """A random maxout classifier (``pieces`` linear regions per class) and ``n`` images of its class 0."""
    gen = torch.Generator().manual_seed(seed + 1)
    d = math.prod(SHAPE)
    w = torch.randn(classes - 1, pieces, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    w = w * (0.5 + torch.rand(classes - 1, pieces, 1, generator=gen, dtype=torch.float64))  # unequal slopes
    x = (0.25 + 0.5 * torch.rand(n, d, generator=gen, dtype=torch.float64)).float().double()
    act = torch.einsum("nd,cpd->ncp", x, w)
    b = -act.amax(0) - 0.05 - 0.3 * torch.rand(classes - 1, pieces, generator=gen, dtype=torch.float64)
    model = MaxoutModel(w, b)

    def truth(norm: str) -> torch.Tensor:
        v = w.reshape(1, -1, d).expand(n, -1, -1)
        gap = -(act + b).reshape(n, -1)
        return halfspace_distance(v, gap, x, norm).amin(1)

    return Known("maxout", model, x.float().view(n, *SHAPE), torch.zeros(n, dtype=torch.long), truth)


def ratios(attack: Attack, problem: Known) -> torch.Tensor:
    """(N,) float64: each sample's distance found by ``attack`` over the true minimal one (inf where it failed)."""
    res = attack(problem.model, problem.x, problem.y)
    found = distances(res, problem.x, attack.threat_norm).double()
    return found / problem.truth(attack.threat_norm)


@dataclass(frozen=True)
class Expect:
    """What an attack must reach on a problem: at least ``need`` of the samples within ``1 + tol`` of the true
    minimum (a failure counts as outside)."""

    tol: float
    need: float


#: the self-test: label -> (attack factory of a norm, norms, expectations on the linear and maxout problems).
#: Thresholds sit below what each attack measured over seeds 0-2 (see tests/experiments/test_known.py); the
#: linear ones for FMN and DDN in L2 / L-inf are the issue's bar (1 %, 99 %). DeepFool overshoots by 2 %. The maxout
#: problem has local optima (the gradient leads to the largest piece, not the nearest), so its bars are lower.
SUITE: dict[str, tuple[Callable[[str], Attack], tuple[str, ...], dict[str, Expect]]] = {
    "fmn": (
        lambda norm: _attack("fmn", norm=norm, steps=200),
        ("l2", "linf"),
        {"linear": Expect(0.01, 0.99), "maxout": Expect(0.01, 0.6)},
    ),
    "fmn-l1": (
        lambda norm: _attack("fmn", norm=norm, steps=200),
        ("l1",),
        {"linear": Expect(0.03, 0.9), "maxout": Expect(0.05, 0.6)},
    ),
    "fmn-l0": (
        lambda norm: _attack("fmn", norm=norm, steps=200),
        ("l0",),
        {"linear": Expect(0.0, 0.75), "maxout": Expect(0.0, 0.55)},
    ),
    "ddn": (
        lambda norm: _attack("ddn", steps=300),
        ("l2",),
        {"linear": Expect(0.01, 0.99), "maxout": Expect(0.01, 0.6)},
    ),
    "cw": (lambda norm: _attack("cw"), ("l2",), {"linear": Expect(0.05, 0.85), "maxout": Expect(0.05, 0.45)}),
    "lbfgs": (lambda norm: _attack("lbfgs"), ("l2",), {"linear": Expect(0.05, 0.6), "maxout": Expect(0.05, 0.5)}),
    "deepfool": (
        lambda norm: _attack("deepfool", norm=norm),
        ("l2", "linf"),
        {"linear": Expect(0.05, 0.99), "maxout": Expect(0.05, 0.6)},
    ),
    # FAB oversteps by eta = 1.05, refined by its backward steps to 1.005 on the linear problem (seeds 0-2)
    "fab": (
        lambda norm: _attack("fab", norm=norm),
        ("l2", "linf"),
        {"linear": Expect(0.01, 0.99), "maxout": Expect(0.01, 0.6)},
    ),
    "fab-l1": (
        lambda norm: _attack("fab", norm=norm),
        ("l1",),
        {"linear": Expect(0.03, 0.9), "maxout": Expect(0.05, 0.55)},
    ),
}


def _attack(name: str, **options: Any) -> Attack:
    from advlab.attacks.catalog import attack_classes

    return attack_classes()[name](**options)


@dataclass(frozen=True)
class Check:
    """One (attack, problem, norm) of the self-test: the ratio statistics and whether it passed. ``below``: the
    smallest ratio; below 1 would mean an attack beat the true minimum (a bug in the answer or the measure)."""

    attack: str
    problem: str
    norm: str
    n: int
    median: float
    worst: float
    below: float
    within: float
    expect: Expect

    @property
    def passed(self) -> bool:
        return self.within >= self.expect.need and self.below >= 1 - 1e-3

    def to_dict(self) -> dict[str, object]:
        return {
            "attack": self.attack,
            "problem": self.problem,
            "norm": self.norm,
            "n": self.n,
            "median_ratio": self.median,
            "worst_ratio": self.worst,
            "min_ratio": self.below,
            "within": self.within,
            "tolerance": self.expect.tol,
            "need": self.expect.need,
            "passed": self.passed,
        }


def selftest(attacks: list[str] | None = None, n: int = 64, seed: int = 0) -> list[Check]:
    """Run the :data:`SUITE` (or the labels ``attacks`` of it) on the linear and the maxout problem."""
    problems = [linear_problem(n, seed=seed), maxout_problem(n, seed=seed)]
    out = []
    for label in attacks or list(SUITE):
        factory, norms, expect = SUITE[label]
        for problem in problems:
            for norm in norms:
                r = ratios(factory(norm), problem)
                e = expect[problem.name]
                fin = r[torch.isfinite(r)]
                out.append(
                    Check(
                        label,
                        problem.name,
                        norm,
                        len(r),
                        float(r.median()),
                        float(r.max()),
                        float(fin.min()) if len(fin) else math.inf,
                        float((r <= 1 + e.tol).double().mean()),
                        e,
                    )
                )
    return out
