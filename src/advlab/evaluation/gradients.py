"""Whether the input gradients an attack follows describe the model: two gradient checks, each with a threshold.

**Finite differences** (:func:`finite_difference_disagreement`; in every batch after the attacks, lazily: only on
samples they left unbroken, :data:`PROBE_CHUNK` at a time until the check fails, at most :data:`SAMPLES`; see
:func:`advlab.evaluation.cascade.run_batch`). At the clean point (pulled :data:`INSET` inside the [0, 1] box so that
every probe stays in it) and at one random vertex of the ball around it (clipped to the same box), the attack loss is
the margin ``L(x) = z_r(x) - z_y(x)`` against the base point's runner-up class r (y the clean prediction; smooth in the
logits). Along :data:`DIRECTIONS` random sign directions v (every pixel +-1: a step h moves each pixel by h, in
[0, 1] pixel units) autograd's directional derivative ``g.v`` is compared with the central difference

    d_h = (L(x + h v) - L(x - h v)) / (2 h),          h in :data:`STEPS` = 1e-2, 1e-3, 1e-4

by the relative disagreement ``|g.v - d_h| / (|g.v| + |d_h|)`` (0: equal, 1: unrelated or of opposite signs; 0
where both vanish). A sample's value is its median over probes at its best step size (the smallest over h); it is
unreliable above :data:`FD_THRESHOLD`, i.e. when autograd and finite differences disagree at every step size (a
wrong custom backward, a term that oscillates faster than 1e-4 pixels). The check ``fd_unreliable`` (the count,
with ``fd_disagreement`` the median value of those samples) fails at :data:`FD_MIN` of the :data:`SAMPLES`.

**Gradient steps against random ones** (:func:`weak_steps`, in the cascade, on the samples the white-box attacks
left unbroken): the margin ``max_{j != y} z_j - z_y`` at the attacks' returned points (their best) against the
best of the noise check's random points in the ball. An unbroken sample is weak when the attacks raised its margin
less than :data:`STEP_RATIO` times what the random points did; the check ``steps_weak`` fails at :data:`WEAK_MIN`
weak samples and :data:`WEAK_FRACTION` of those checked. This catches gradients that are right at 1e-4 pixels but
useless at the attack's scale (a small high-frequency term in the logits: finite differences agree at the smallest
step, yet the attacks' steps are random ones), at no cost (both margins are already computed).

Thresholds, from measurements (eps 0.1 L-inf on digits:test; the trap is :class:`advlab.zoo.traps.HighFrequency` on
the shipped digits CNN, amplitude 0.5, whose sine term cancels in the margin of about half the samples). Finite
differences, per-sample value at the best step size:

* digits-cnn (shipped): at most 0.0037 over 24 samples (median 0.0005); a randomly initialised digits CNN (3 seeds):
  at most 0.030 over 72 samples (float32 rounding at h = 1e-4); efficientnet-lite0 on 2 sample photos: 0.020, 0.021;
* HighFrequency at 1e3 rad per pixel unit: at most 0.0015 (right at h = 1e-4: the check passes; the steps
  check's case); at 1e4: 0.086 on the samples whose margin sees the sine (3-4 of 8), under 0.004 on the others;

so :data:`FD_THRESHOLD` = 0.05 (1.7x above the random init's worst, 1.7x below the trap's). Weak unbroken samples
at :data:`STEP_RATIO` = 1.5 (96 digits): the shipped CNN 0 of 32 under ``reliable``, 0 of 36 under ``fast``, 0 of 39
under 10-step PGD, 1 of 48 under FGSM; the 1e3 trap 17 of 59 under ``reliable`` (29%), 15 of 62 under ``fast``,
49 of 78 under PGD, 72 of 83 under FGSM. A ratio of 2 separated less (FGSM on the shipped CNN: 10 of 48, the trap
under ``reliable`` 44%), hence :data:`WEAK_FRACTION` = 0.15 with at least :data:`WEAK_MIN` = 3 weak samples.
Either check failing (or another of :func:`advlab.evaluation.checks.failed_gradient_checks`) makes the cascade run
Square with :data:`GRADIENT_FREE_QUERIES` queries per image on the samples still unbroken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from advlab.attacks.base import frozen_parameters

#: finite-difference step sizes, in [0, 1] pixel units (a probe moves every pixel by h)
STEPS = (1e-2, 1e-3, 1e-4)
#: the probes' base points lie in [INSET, 1 - INSET], so that x +- h v stays in the box for every h in STEPS
INSET = 0.02
#: samples (per batch, at most), random directions per base point
SAMPLES, DIRECTIONS = 8, 4
#: samples probed at once: the probe stops after a chunk once :data:`FD_MIN` unreliable samples are found
PROBE_CHUNK = 4
#: a sample's median relative disagreement at its best step size above which its gradient is unreliable, and the
#: unreliable samples (of :data:`SAMPLES`) at which the check fails
FD_THRESHOLD, FD_MIN = 0.05, 2
#: queries per image of the gradient-free stage (Square) that runs on the unbroken samples when a gradient check fails
GRADIENT_FREE_QUERIES = 5000
#: an unbroken sample is weak when the attacks' margin gain is below STEP_RATIO times the noise check's
#: (:func:`weak_steps`)
STEP_RATIO = 1.5
#: the weak samples at which the steps check fails: at least WEAK_MIN of them and WEAK_FRACTION of those checked
WEAK_MIN, WEAK_FRACTION = 3, 0.15
#: the stability probe (:func:`instability`): its steps' size as a fraction of eps, their number per sample, and
#: the band of gain over prediction outside which a sample's predictions are unstable
UNSTABLE_RADIUS, UNSTABLE_DRAWS, UNSTABLE_BAND = 0.025, 4, (0.25, 4.0)
#: the unstable samples (at least UNSTABLE_MIN and UNSTABLE_FRACTION of those probed) that make a batch's remedy run
UNSTABLE_MIN, UNSTABLE_FRACTION = 2, 0.1
#: samples probed for stability at once (each takes ``1 + UNSTABLE_DRAWS`` forwards in one call)
STABILITY_CHUNK = 32


def _runner_up_margin(logits: torch.Tensor, labels: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    z = logits.float()
    return z.gather(1, other[:, None])[:, 0] - z.gather(1, labels[:, None])[:, 0]


def _points(x: torch.Tensor, eps: float | None, gen: torch.Generator) -> torch.Tensor:
    """The clean points and, with an eps, one random L-inf vertex of the ball around each, inside the inset box."""
    base = [x]
    if eps is not None:
        s = torch.randint(0, 2, x.shape, generator=gen).to(x.device, x.dtype) * 2 - 1
        base.append(x + eps * s)
    return torch.cat(base).clamp(INSET, 1 - INSET)


def _gradient(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(runner-up classes, margin, its input gradient) at ``x``; the gradient is zero without a gradient path."""
    xs = x.detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad():
        z = model(xs).float()
        other = z.detach().scatter(1, labels[:, None], -torch.inf).argmax(1)
        m = _runner_up_margin(z, labels, other)
        if not m.requires_grad:
            return other, m.detach(), torch.zeros_like(x)
        (g,) = torch.autograd.grad(m.sum(), xs, allow_unused=True)
    return other, m.detach(), torch.zeros_like(x) if g is None else g


@dataclass(frozen=True)
class Disagreement:
    """What :func:`finite_difference_disagreement` measured: ``per_step`` the median relative disagreement over every
    probe at each step size h; ``per_sample`` (S,) each sample's median over its probes at its best step size (the
    smallest over h); ``vanished`` (S,) whether autograd's gradient is exactly zero at each sample's every base point
    (no direction to follow, whatever finite differences say); ``forwards``/``backwards`` per probed sample."""

    per_step: dict[float, float]
    per_sample: torch.Tensor
    vanished: torch.Tensor
    forwards: int
    backwards: int

    @property
    def unreliable(self) -> torch.Tensor:
        """Per sample, whether autograd and finite differences disagree at every step size (above
        :data:`FD_THRESHOLD`)."""
        return self.per_sample > FD_THRESHOLD


def finite_difference_disagreement(
    model: nn.Module, x: torch.Tensor, labels: torch.Tensor, radius: float | None = None, seed: int = 0
) -> Disagreement:
    """Autograd against central finite differences on the samples ``x`` ([0, 1], on the model's device; a few
    suffice), ``labels`` their clean predictions; ``radius``: the per-pixel size of the random vertex around each
    clean point (L-inf eps; None: the clean points only). See the module docstring. Cost per sample and base point:
    ``1 + 2 |STEPS| DIRECTIONS`` forwards and 1 backward."""
    gen = torch.Generator().manual_seed(seed)
    pts = _points(x, radius, gen)
    n_pts = len(pts) // len(x)
    lab = labels.repeat(n_pts)
    other, _, g = _gradient(model, pts, lab)
    v = (torch.randint(0, 2, (DIRECTIONS, *pts.shape), generator=gen) * 2 - 1).to(pts.device, pts.dtype)
    auto = (g[None] * v).flatten(2).sum(2)  # (D, points): autograd's directional derivatives
    rep_lab, rep_other = lab.repeat(DIRECTIONS), other.repeat(DIRECTIONS)
    per_step, per_sample = {}, []
    with torch.no_grad():
        for h in STEPS:
            up = _runner_up_margin(model((pts[None] + h * v).flatten(0, 1)), rep_lab, rep_other)
            down = _runner_up_margin(model((pts[None] - h * v).flatten(0, 1)), rep_lab, rep_other)
            fd = ((up - down) / (2 * h)).view(DIRECTIONS, -1)
            den = auto.abs() + fd.abs()
            rel = torch.where(den > 0, (auto - fd).abs() / den.clamp_min(1e-30), torch.zeros_like(den))
            per_step[h] = float(rel.median())
            per_sample.append(rel.view(DIRECTIONS, n_pts, len(x)).permute(2, 0, 1).flatten(1).median(1).values)
    best = torch.stack(per_sample).amin(0).cpu()
    vanished = (g.flatten(1).abs().amax(1) == 0).view(n_pts, len(x)).all(0).cpu()
    return Disagreement(per_step, best, vanished, (1 + 2 * len(STEPS) * DIRECTIONS) * n_pts, n_pts)


@dataclass(frozen=True)
class Instability:
    """What :func:`instability` measured: ``per_sample`` (S,) each sample's median gain over prediction (1: the
    loss rose as its gradient predicts); ``forwards``/``backwards`` per probed sample."""

    per_sample: torch.Tensor
    forwards: int
    backwards: int

    @property
    def unstable(self) -> torch.Tensor:
        """Per sample, whether the loss moved far from what its gradient predicts (outside :data:`UNSTABLE_BAND`)."""
        low, high = UNSTABLE_BAND
        return (self.per_sample < low) | (self.per_sample > high)


def instability(model: nn.Module, x: torch.Tensor, labels: torch.Tensor, radius: float, seed: int = 0) -> Instability:
    """Unstable predictions (Pintor et al., NeurIPS 2022): whether small steps along the gradient change the loss as
    the gradient predicts. At each sample of ``x`` ([0, 1], on the model's device; ``labels`` its clean predictions)
    with runner-up margin ``L`` and gradient ``g``, :data:`UNSTABLE_DRAWS` steps ``delta = radius * b * sign(g)``
    (``b`` a random half of the pixels; the box clipped) give the gain over prediction

        e = (L(x + delta) - L(x)) / (g . delta)

    whose median over steps is the sample's value: about 1 for a smooth model at a small step (0.96-1.04 for the
    digits CNN at a fortieth of L-inf 0.1, 0.30-0.96 for efficientnet-lite0/lite1 on 10 photos at a fortieth of
    4/255 to 16/255: a concave loss gains less), far outside :data:`UNSTABLE_BAND` where the function jumps or
    oscillates faster than the step (a steep staircase: 85% of 200 digits; k-winners-take-all: 35-50%; a
    high-frequency sine term: about 20-25%): there its gradients say little about where an attack's steps go. Samples
    whose ``g . delta`` vanishes (no gradient: another indicator) count as stable. Cost per sample:
    ``1 + UNSTABLE_DRAWS`` forwards and 1 backward."""
    gen = torch.Generator().manual_seed(seed)
    other, m, g = _gradient(model, x, labels)
    half = torch.randint(0, 2, (UNSTABLE_DRAWS, *x.shape), generator=gen).to(x.device, x.dtype)
    moved = (x[None] + radius * half * g.sign()[None]).clamp(0, 1)
    predicted = (g[None] * (moved - x[None])).flatten(2).sum(2)
    with torch.no_grad():
        after = _runner_up_margin(
            model(moved.flatten(0, 1)), labels.repeat(UNSTABLE_DRAWS), other.repeat(UNSTABLE_DRAWS)
        )
    change = after.view(UNSTABLE_DRAWS, len(x)) - m[None]
    tiny = 1e-6 * (1 + m.abs()[None])
    gain = torch.where(predicted > tiny, change / predicted.clamp_min(1e-30), torch.ones_like(change))
    return Instability(gain.median(0).values.cpu(), 1 + UNSTABLE_DRAWS, 1)


def unstable_failed(unstable: float, probed: float) -> bool:
    """Whether a batch's stability probe calls for its remedy with ``unstable`` of ``probed`` unbroken samples: at
    least :data:`UNSTABLE_MIN` and :data:`UNSTABLE_FRACTION`."""
    return unstable >= UNSTABLE_MIN and unstable >= UNSTABLE_FRACTION * probed


def pixel_radius(eps: float, norm: str, x: torch.Tensor) -> float | None:
    """The per-pixel size of a random sign vertex inside the ``norm`` ball of radius ``eps`` around ``x[0]``: eps for
    L-inf, eps / sqrt(d) for L2, eps / d for L1 (d pixels per sample); None for L0."""
    d = x[0].numel()
    return {"linf": eps, "l2": eps / math.sqrt(d), "l1": eps / d}.get(norm)


def weak_steps(clean: torch.Tensor, attack: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Per sample left unbroken by the gradient attacks, whether their best point raised the untargeted margin loss
    ``max_{j != y} z_j - z_y`` (y the clean prediction) above the clean point's by less than :data:`STEP_RATIO` times
    what the best of the noise check's random points did: ``attack - clean < STEP_RATIO (noise - clean)``. The
    three margins are (N,) tensors on one device."""
    return (attack - clean) < STEP_RATIO * (noise - clean)


def fd_failed(unreliable: float) -> bool:
    """Whether the finite-difference check fails with ``unreliable`` probed samples (:attr:`Disagreement.unreliable`):
    at least :data:`FD_MIN`."""
    return unreliable >= FD_MIN


def steps_failed(weak: float, checked: float) -> bool:
    """Whether the steps check fails with ``weak`` of ``checked`` unbroken samples: at least :data:`WEAK_MIN` and
    :data:`WEAK_FRACTION`."""
    return weak >= WEAK_MIN and weak >= WEAK_FRACTION * checked
