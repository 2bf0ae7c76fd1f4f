"""Square Attack (Andriushchenko, Croce, Flammarion, Hein, "Square Attack: a query-efficient black-box
adversarial attack via random search", ECCV 2020).

Random search on the boundary of the ball, one localized square change per query, no gradient estimate.
It keeps, per sample, the best point x_hat seen so far and minimizes

    untargeted: the margin  z_y - max_{j != y} z_j      targeted: the cross-entropy  CE(z, t)

(the paper's choices; here maximized as their negatives, the convention of :mod:`advlab.losses`). Each
iteration draws a square window of side h = round(sqrt(p * H * W)) at a uniformly random position,
proposes a new perturbation that differs from x_hat - x only there (and, for L2, in a second window),
queries it once and keeps it only if the loss improved. The fraction p of the image a window covers
shrinks with a fixed schedule: p_init is halved after iterations 10, 50, 200, 500, 1000, 2000, 4000,
6000 and 8000 of 10,000, rescaled to the attack's budget.

L-inf (``eps`` per pixel): initialized with vertical stripes (x + eps * s, one random sign s per column
and channel); a step sets the window, per channel, to +eps or -eps at random (resampled when that would
change nothing), clipped to [0, 1].

L2 (``eps`` per image): initialized with a grid of tiles of side min(H, W) // 5, each carrying the
pattern below with a random sign per channel, scaled to ||delta||_2 = eps. The step moves the
perturbation's mass from a second window W2 into the window W1 and adds a new pattern there: per
channel, with rho = +-1 at random, eta* the unit-norm pattern and nu = x_hat - x,

    nu_W1 <- (rho eta* + nu_W1 / ||nu_W1||) / ||...|| * sqrt(||nu_{W1 u W2}||^2 + (eps^2 - ||nu||^2) / C)
    nu_{W2 \\ W1} <- 0

so that ||nu||_2 = eps before clipping to [0, 1]. The pattern eta on an h x h window is two halves of
opposite sign, each a stack of concentric rectangles (1 / (k + 1)^2 on the ring at Chebyshev distance
k from the centre and inside), transposed at random.

Queries: the initialization is the first; every iteration costs one; a sample stops at its first
success. Pixels in [0, 1]. The paper uses p_init = 0.05 (L-inf) and 0.1 (L2) on ImageNet; on the 8 x 8
digits any p_init from 0.05 to 0.8 gives the same success within a few points (the default 0.8 starts
with windows of 7 x 7 pixels there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch

from advlab.attacks.base import Attack, Best, Found, Goal, Oracle, register
from advlab.attacks.blackbox.estimate import check_ball
from advlab.attacks.draws import SQUARE_STREAM, SampleDraws
from advlab.losses import cross_entropy, margin
from advlab.threat import project

#: iterations (out of 10,000) after which p is halved (the paper's schedule)
HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
#: tries to draw L-inf signs that change the current window before giving up on the iteration's proposal
RESAMPLE = 10
_TINY = 1e-12


def square_fraction(p_init: float, iteration: int, iterations: int) -> float:
    """The fraction p of the pixels a window covers at ``iteration`` (0-based) of ``iterations``."""
    scaled = int(iteration / max(iterations, 1) * 10000)
    halvings = sum(1 for b in HALVINGS if scaled > b)
    return p_init / 2.0**halvings


def square_side(p: float, height: int, width: int, smallest: int = 1) -> int:
    """round(sqrt(p * H * W)) clamped to [smallest, min(H, W) - 1] (at least 1)."""
    top = max(min(height, width) - 1, 1)
    return int(min(max(round(math.sqrt(p * height * width)), smallest), top))


def rings(rows: int, cols: int) -> torch.Tensor:
    """Concentric rectangles on a rows x cols grid: sum_{k >= d} 1 / (k + 1)^2 for k below the outer ring,
    d the Chebyshev distance to the centre (rows // 2, cols // 2)."""
    if rows == 0 or cols == 0:
        return torch.zeros(rows, cols)
    k_max = max(rows // 2, cols // 2) + 1
    tail = (1.0 / torch.arange(1, k_max + 1, dtype=torch.float64) ** 2).flip(0).cumsum(0).flip(0)
    dr = (torch.arange(rows) - rows // 2).abs()
    dc = (torch.arange(cols) - cols // 2).abs()
    return tail[torch.maximum(dr[:, None], dc[None, :])].float()


def pattern(h: int) -> torch.Tensor:
    """The L2 step's h x h pattern eta: the top h // 2 rows positive rings, the rest negative; unit L2 norm."""
    top = h // 2
    eta = torch.cat([rings(top, h), -rings(h - top, h)], 0)
    unit: torch.Tensor = eta / eta.norm().clamp_min(_TINY)
    return unit


def windows(r: torch.Tensor, c: torch.Tensor, h: int, height: int, width: int) -> torch.Tensor:
    """(N, 1, H, W) boolean masks of the h x h windows with top-left corners (r, c)."""
    ar, ac = torch.arange(height, device=r.device), torch.arange(width, device=r.device)
    in_r = (ar[None] >= r[:, None]) & (ar[None] < r[:, None] + h)
    in_c = (ac[None] >= c[:, None]) & (ac[None] < c[:, None] + h)
    return (in_r[:, :, None] & in_c[:, None, :])[:, None]


def place(patterns: torch.Tensor, r: torch.Tensor, c: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Each (h, h) pattern of ``patterns`` (N, h, h) written at (r, c) on a zero (N, 1, H, W) canvas."""
    n, h = patterns.shape[0], patterns.shape[1]
    dr = torch.arange(height, device=r.device)[None] - r[:, None]
    dc = torch.arange(width, device=r.device)[None] - c[:, None]
    inside = ((dr >= 0) & (dr < h))[:, :, None] & ((dc >= 0) & (dc < h))[:, None, :]
    vals = patterns[
        torch.arange(n, device=r.device)[:, None, None], dr.clamp(0, h - 1)[:, :, None], dc.clamp(0, h - 1)[:, None, :]
    ]
    return (vals * inside)[:, None]


class _Draw:
    """The random numbers of one iteration for the rows ``rows`` of the batch, drawn at once per sample (one
    call: the iteration's cost stays that of a query): 4 window coordinates, 1 flip, and ``RESAMPLE + 2`` vectors
    of ``channels`` signs. Each number of a sample depends on (seed, image, iteration) only."""

    def __init__(self, draws: SampleDraws, rows: torch.Tensor, iteration: int, channels: int) -> None:
        self.u = draws.uniform(rows, iteration, (5 + (RESAMPLE + 2) * channels,))
        self.c = channels

    def integers(self, slot: int, low: int, high: int) -> torch.Tensor:
        """Uniform in [low, high), one per row; ``slot`` 0..3 (two corners' row and column)."""
        return (low + (self.u[:, slot].double() * (high - low)).floor().long()).clamp(max=high - 1)

    def flip(self) -> torch.Tensor:
        return self.u[:, 4] < 0.5

    def signs(self, which: int, sub: torch.Tensor | None = None) -> torch.Tensor:
        """(rows, C, 1, 1) random signs; ``which`` 0..RESAMPLE + 1 (the step's, then one per resampling)."""
        u = self.u[:, 5 + which * self.c : 5 + (which + 1) * self.c]
        u = u if sub is None else u[sub]
        return ((u < 0.5).float() * 2 - 1)[:, :, None, None]


@register
@dataclass(frozen=True, kw_only=True)
class Square(Attack):
    """Square Attack, ``norm`` "linf" or "l2", ``eps`` in [0, 1] pixel units, at most ``max_queries``
    queries per sample (the initialization included); ``p_init``: the fraction of the image the first
    windows cover."""

    eps: float = 8 / 255
    norm: str = "linf"
    max_queries: int = 1000
    p_init: float = 0.8

    name: ClassVar[str] = "square"
    white_box: ClassVar[bool] = False

    def validate(self) -> None:
        check_ball(self.eps, self.norm)
        if self.max_queries < 1:
            raise ValueError(f"max_queries must be >= 1 (the initialization is a query), got {self.max_queries}")
        if not 0 < self.p_init <= 1:
            raise ValueError(f"p_init must be in (0, 1] (a fraction of the image), got {self.p_init}")

    @staticmethod
    def _objective(logits: torch.Tensor, goal: Goal) -> torch.Tensor:
        """The loss to raise: the margin untargeted, -CE(z, t) targeted (the paper's choices)."""
        if goal.targeted:
            return cross_entropy(logits, goal.labels, True)
        return margin(logits, goal.labels, False)

    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        assert eps is not None
        if x.ndim != 4:
            raise ValueError(f"the Square attack needs images (N, C, H, W), got shape {tuple(x.shape)}")
        rows, best = torch.arange(len(x), device=x.device), Best(x)
        draws = SampleDraws(x, self.seed, stream=SQUARE_STREAM)  # each image's squares: from the seed and the image
        start = self._prepare(self._init(x, eps, draws), x, eps)
        logits = oracle.logits(start, rows)
        best.record(rows, start, logits, goal, self._objective(logits, goal))
        iterations = self.max_queries - 1
        step = self._linf_step if self.norm == "linf" else self._l2_step
        for it in range(iterations):  # a proposal replaces the best point if it succeeds or raises the loss
            active = best.unbroken()
            if len(active) == 0:
                break
            xa, aim, draw = x[active], goal.rows(active), _Draw(draws, active, it + 1, x.shape[1])
            cand = step(xa, best.x[active], eps, square_fraction(self.p_init, it, iterations), draw)
            cand = self._prepare(cand, xa, eps)
            z = oracle.logits(cand, active)
            best.record(active, cand, z, aim, self._objective(z, aim))
        return best.result()

    # ---------------------------------------------------------------- initialization
    def _init(self, x: torch.Tensor, eps: float, draws: SampleDraws) -> torch.Tensor:
        n, c, height, width = x.shape
        if self.norm == "linf":  # vertical stripes: one sign per column and channel
            s = draws.signs(None, (0, 0), (c, 1, width)).to(x)
            return (x + eps * s).clamp(0, 1)
        side = max(min(height, width) // 5, 1)
        tiles_r, tiles_c = height // side, width // side
        off_r, off_c = (height - tiles_r * side) // 2, (width - tiles_c * side) // 2
        eta = pattern(side).to(x)
        delta = torch.zeros_like(x)
        signs = draws.signs(None, (0, 1), (c, tiles_r, tiles_c)).to(x)
        for i in range(tiles_r):
            for j in range(tiles_c):
                r0, c0 = off_r + i * side, off_c + j * side
                delta[:, :, r0 : r0 + side, c0 : c0 + side] = signs[:, :, i, j, None, None] * eta
        delta = delta * (eps / delta.flatten(1).norm(dim=1).clamp_min(_TINY)).view(-1, 1, 1, 1)
        start: torch.Tensor = (x + delta).clamp(0, 1)
        return start

    # ---------------------------------------------------------------- steps
    @staticmethod
    def _corners(draw: _Draw, which: int, h: int, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-left corners (rows, columns) of h x h windows, uniform over the positions inside the image."""
        return draw.integers(2 * which, 0, height - h + 1), draw.integers(2 * which + 1, 0, width - h + 1)

    def _linf_step(self, x: torch.Tensor, x_best: torch.Tensor, eps: float, p: float, draw: _Draw) -> torch.Tensor:
        n, c, height, width = x.shape
        h = square_side(p, height, width)
        mask = windows(*self._corners(draw, 0, h, height, width), h, height, width)
        delta = x_best - x
        signs = draw.signs(0).to(x)
        cand = (x + torch.where(mask, eps * signs, delta)).clamp(0, 1)
        for k in range(RESAMPLE):  # a proposal equal to x_best inside its window wastes a query
            same = ((cand - x_best).abs() * mask).flatten(1).amax(1) < 1e-7
            if not bool(same.any()):
                break
            idx = same.nonzero().flatten()
            signs[idx] = draw.signs(1 + k, idx).to(x)
            cand[idx] = (x[idx] + torch.where(mask[idx], eps * signs[idx], delta[idx])).clamp(0, 1)
        return cand

    def _l2_step(self, x: torch.Tensor, x_best: torch.Tensor, eps: float, p: float, draw: _Draw) -> torch.Tensor:
        n, c, height, width = x.shape
        h = square_side(p, height, width, smallest=2)
        r1, c1 = self._corners(draw, 0, h, height, width)
        r2, c2 = self._corners(draw, 1, h, height, width)
        m1 = windows(r1, c1, h, height, width).to(x)
        union = torch.maximum(m1, windows(r2, c2, h, height, width).to(x))
        eta = pattern(h).to(x)
        flip = draw.flip()
        eta_n = torch.where(flip[:, None, None], eta.t()[None], eta[None])
        canvas = place(eta_n, r1, c1, height, width)  # (n, 1, H, W), unit norm inside W1
        rho = draw.signs(0).to(x)
        nu = x_best - x
        unused = (eps**2 - nu.flatten(1).pow(2).sum(1)).clamp(min=0)  # (n,)
        norm_union = (nu * union).pow(2).sum((2, 3))  # (n, c), squared
        in_w1 = nu * m1
        temp = rho * canvas + in_w1 / in_w1.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(_TINY)
        temp = temp / temp.pow(2).sum((2, 3), keepdim=True).sqrt().clamp_min(_TINY)
        avail = (norm_union + unused[:, None] / c).sqrt()[:, :, None, None]
        cand = (x + nu * (1 - union) + temp * avail).clamp(0, 1)
        return x + project(cand - x, eps, "l2")
