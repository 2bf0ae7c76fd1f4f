"""The prototype generator: a targeted attack run as a generative process, the frozen classifier its discriminator.

For a start x0 (a blank image, noise or a photo) and a target class t, each step evaluates an objective to
MINIMIZE (:mod:`advlab.prototypes.objectives`; by default)

    L(x) = CE(f(J(x)), t) + tv * TV(x),          g = dL/dx

and takes one step of the shared optimization step :class:`advlab.attacks.step.Iterate` along -g: the method's
steepest direction s (``pgd``/``mifgsm``: sign, L-inf ball; ``pgdl2``: v/||v||_2, L2 ball; ``mifgsm`` adds
momentum v <- mu v + u/||u||_1, ``StepRule(momentum=mu)``), then the projection onto the eps-ball around x0 and
[0, 1]:

* ``min`` mode descends L until the input gradient vanishes: a pair stops (and costs nothing more) at the
  first step where ||g||_2 < ``tol``: a prototype in research note 000's sense (f(x) = t and df/dx = 0);
* ``max`` mode descends L while argmax f(x) != t; once the input is classified as t it ascends ||g||_2^2
  (double backprop) instead, so the gradient norm grows while the class holds. The result is the iterate
  classified as t with the largest ||g||_2 (the last iterate if none was).

J is an optional random shift by up to ``jitter`` pixels (one shift per step), or, with ``scale``, ``rotate`` or
``transforms_per_step`` > 1, that many random shift / zoom / rotation views per image and step
(:mod:`.transforms`; L is then the mean over the views), TV the mean absolute
difference of neighbouring pixels, and ``blur`` a Gaussian blur (sigma in pixels) after every step (the
iterate's transform): the regularizers that make prototypes look more natural. eps = None (the default) is
unconstrained descent (only the box [0, 1]; eps = 1 with L-inf is the same).

``param`` chooses the variable the step moves (:mod:`.parametrize`): ``pixels`` (x itself, as above),
``fourier`` (decorrelated colour, 1/f-scaled spectrum) or ``phase`` (MACO's phase with a natural magnitude).
For the last two the step moves the parameters p of x(p) (g = dL/dp, no eps ball and no blur: the map keeps
x in [0, 1]); ||g||_2 and min mode's tol then refer to dL/dp, and every distance is still ||x(p) - x0|| in
pixel units from the start image x0 = x(p0).

Units: images in [0, 1]; eps and alpha in [0, 1] pixel units (L-inf) or L2 over the whole image (pgdl2).
Every step records, per pair, the target probability, the top-1 class, the margin z_t - max_{j != t} z_j,
||g||_2 and the L2 / L-inf distance from the start; step 0 is the start itself.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import frozen_parameters
from advlab.attacks.step import Ball, Iterate, StepRule, gradient
from advlab.device import device_of
from advlab.losses import margin
from advlab.prototypes.objectives import Objective, cross_entropy, total_variation
from advlab.prototypes.parametrize import PARAMS, Parametrization, bind
from advlab.prototypes.transforms import Transforms
from advlab.threat import Norm, distance

METHODS: dict[str, Norm] = {"pgd": "linf", "mifgsm": "linf", "pgdl2": "l2"}
MODES = ("min", "max")


@dataclass(frozen=True, kw_only=True)
class Config:
    """How prototypes are evolved (see the module docstring for the maths)."""

    mode: str = "min"
    method: str = "pgd"
    eps: float | None = None  # radius of the ball around the start; None: unconstrained
    alpha: float | None = None  # step size; default 1/255 (L-inf) or 0.5 (L2, for the whole image)
    steps: int = 200
    tol: float = 1e-4  # min mode: a pair has converged when ||g||_2 < tol
    momentum: float = 1.0  # mifgsm only
    tv: float = 0.0
    jitter: int = 0
    blur: float = 0.0
    seed: int = 0
    snapshots: tuple[int, ...] | None = (
        None  # steps whose images are kept; default: 0, 1, 2, 5, 10, 20, 50, ... and the last
    )
    objective: Objective | None = None  # what is minimized; default: cross_entropy() (+ tv * total_variation())
    param: str = "pixels"  # the variable the step moves: pixels, fourier or phase (advlab.prototypes.parametrize)
    scale: float = 0.0  # random zoom by up to +-scale per view (a fraction)
    rotate: float = 0.0  # random rotation by up to +-rotate degrees per view
    transforms_per_step: int = 1  # random views per image and step (their mean loss is minimized)

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be 'min' or 'max', got {self.mode!r}")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.eps is not None and not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"alpha must be positive, got {self.alpha}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.snapshots is not None and (not self.snapshots or any(not 0 <= s <= self.steps for s in self.snapshots)):
            raise ValueError(
                f"snapshots must be steps in 0..{self.steps} (the last step is {self.steps}), "
                f"got {list(self.snapshots)}"
            )
        for name in ("tol", "momentum", "tv", "blur"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")
        if self.objective is not None and not isinstance(self.objective, Objective):
            raise ValueError(
                "objective must be an Objective (see advlab.prototypes.objectives), "
                f"got {type(self.objective).__name__}"
            )
        if self.objective is not None and self.tv:
            raise ValueError(
                "tv applies to the default objective only: add tv * total_variation() to the objective instead"
            )
        if self.param not in PARAMS:
            raise ValueError(f"param must be one of {', '.join(PARAMS)}, got {self.param!r}")
        if self.param != "pixels" and (self.eps is not None or self.blur):
            raise ValueError(
                f"eps and blur act on pixels: with param {self.param!r} use a prior term "
                "(advlab.prototypes.priors) instead"
            )
        self.transforms.validate()

    @property
    def transforms(self) -> Transforms:
        """The random views of each step (the legacy one-roll ``jitter`` when only jitter is set)."""
        return Transforms(float(self.jitter), self.scale, self.rotate, self.transforms_per_step)

    @property
    def rolls(self) -> bool:
        """True when the views are today's one random roll per step (only ``jitter``, one view)."""
        return self.scale == 0 and self.rotate == 0 and self.transforms_per_step == 1

    def minimized(self) -> Objective:
        """The objective evolve minimizes: ``objective``, or cross_entropy() (+ tv * total_variation() when tv > 0)."""
        if self.objective is not None:
            return self.objective
        return cross_entropy() + self.tv * total_variation() if self.tv else cross_entropy()

    @property
    def norm(self) -> Norm:
        return METHODS[self.method]

    @property
    def step_size(self) -> float:
        if self.alpha is not None:
            return self.alpha
        return 1 / 255 if self.norm == "linf" else 0.5

    def snapshot_steps(self) -> list[int]:
        if self.snapshots is not None:
            return sorted({s for s in self.snapshots if 0 <= s <= self.steps})
        out, k = [0], 1
        while k < self.steps:
            out += [s for s in (k, 2 * k, 5 * k) if s < self.steps]
            k *= 10
        return sorted(set(out)) + [self.steps]


@dataclass
class Evolution:
    """One batch of (start, target) pairs, evolved. N pairs, T = steps + 1 recorded points (0 = the start).

    ``x``: the prototypes (N, C, H, W); ``start``/``target``: (N,) the start index and target class of each pair.
    ``prob``/``margin``/``grad_norm``/``l2``/``linf``: (N, T) float, ``top1``: (N, T) long; after a pair stops,
    its last values are repeated. ``stopped``: the step each pair ended at; ``converged``: min mode's
    ||g|| < tol was reached (not at a start where the gradient is exactly zero: that is :attr:`zero_start`).
    ``final``: the step ``x`` was taken at (max mode keeps its best iterate).
    ``snapshots``: (M, S, C, H, W) images at ``snapshot_steps`` for the M pairs ``snapshot_pairs`` (batch rows).
    """

    x: torch.Tensor
    start: torch.Tensor
    target: torch.Tensor
    prob: torch.Tensor
    top1: torch.Tensor
    margin: torch.Tensor
    grad_norm: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    stopped: torch.Tensor
    converged: torch.Tensor
    final: torch.Tensor
    snapshots: torch.Tensor
    snapshot_pairs: torch.Tensor
    snapshot_steps: list[int] = field(default_factory=list)

    def tensors(self) -> dict[str, torch.Tensor]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "snapshot_steps"}
        out["snapshot_steps"] = torch.tensor(self.snapshot_steps, dtype=torch.long)
        return {k: v.detach().cpu() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> Evolution:
        kw = {k: v for k, v in t.items() if k != "snapshot_steps"}
        return cls(**kw, snapshot_steps=[int(s) for s in t["snapshot_steps"]])

    @classmethod
    def cat(cls, parts: list[Evolution]) -> Evolution:
        """Join batches (pair rows and snapshot rows are renumbered in order)."""
        offsets = [0]
        for p in parts[:-1]:
            offsets.append(offsets[-1] + len(p.target))
        kw: dict[str, torch.Tensor] = {}
        for f in dataclasses.fields(cls):
            if f.name == "snapshot_steps":
                continue
            vals = [
                getattr(p, f.name) + o if f.name == "snapshot_pairs" else getattr(p, f.name)
                for p, o in zip(parts, offsets, strict=True)
            ]
            kw[f.name] = torch.cat(vals)
        return cls(**kw, snapshot_steps=parts[0].snapshot_steps)

    @property
    def final_prob(self) -> torch.Tensor:
        return self.prob.gather(1, self.final[:, None]).squeeze(1)

    @property
    def final_top1(self) -> torch.Tensor:
        return self.top1.gather(1, self.final[:, None]).squeeze(1)

    @property
    def final_grad_norm(self) -> torch.Tensor:
        return self.grad_norm.gather(1, self.final[:, None]).squeeze(1)

    @property
    def zero_start(self) -> torch.Tensor:
        """Per pair (bool): the input gradient is exactly zero at the start (||g||_2 = 0 at step 0) and the start
        is not already classified as the target. No step can move such a pair (the start lies in a dead region of
        the model, e.g. every ReLU off on a blank image), so stopping there is not convergence: start from noise
        (``noise:gaussian``) instead."""
        return (self.grad_norm[:, 0] == 0) & (self.top1[:, 0] != self.target)


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with standard deviation ``sigma`` pixels (reflect padding; channels separately)."""
    r = max(1, math.ceil(2 * sigma))
    r = min(r, x.shape[-1] - 1, x.shape[-2] - 1)
    if r < 1:
        return x
    k = torch.exp(-(torch.arange(-r, r + 1, dtype=x.dtype, device=x.device) ** 2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    y = F.conv2d(F.pad(x, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


#: the per-step records, in the order of the (T, 6, N) buffer: three from the logits, three from the image side
RECORDS = ("prob", "top1", "margin", "grad_norm", "l2", "linf")
#: logits wait at most this many steps (and bytes) before they become records together
PENDING_STEPS, PENDING_BYTES = 32, 16 << 20


class _Records:
    """Per-step records of every pair in one preallocated (T, 6, N) buffer.

    Each step only keeps references to its logits, ||g||_2 and points (no copy, no arithmetic); every k steps
    (k <= 32, at most 16 MiB of pending points) they become p_t = softmax(z)_t, the top-1 class, the margin
    z_t - max_{j != t} z_j (:func:`advlab.losses.margin`), ||g||_2, ||x - x0||_2 and ||x - x0||_inf in one batched
    computation, instead of about fifteen small operations per step. The caller flushes before the running rows
    change (the iterate is then updated in place). A row that stopped leaves zeros behind; what they give lies
    after its stopping step, which :meth:`finish` replaces by the last value recorded. The class index is stored
    as a float (exact below 2^24 classes).
    """

    def __init__(self, targets: torch.Tensor, x0: torch.Tensor, steps: int) -> None:
        self.targets, self.x0 = targets, x0
        self.buf = torch.zeros(steps + 1, len(RECORDS), len(targets), device=targets.device)
        self.pending: list[tuple[torch.Tensor | None, torch.Tensor, torch.Tensor, torch.Tensor]] = []
        self.first = 0
        self.limit = 0

    def write(
        self, t: int, rows: torch.Tensor | None, logits: torch.Tensor, gnorm: torch.Tensor, x: torch.Tensor
    ) -> None:
        """Step ``t`` of the running ``rows`` (None: all): their logits (n, K), ||g||_2 and points (kept, not
        copied)."""
        if not self.limit:
            n, k, d = len(self.targets), logits.shape[1], self.x0[0].numel()
            self.limit = max(1, min(PENDING_STEPS, PENDING_BYTES // (4 * n * (k + d))))
        self.pending.append((rows, logits, gnorm, x))
        if len(self.pending) == self.limit:
            self.flush(t + 1)

    def _gathered(self, i: int) -> torch.Tensor:
        """The pending steps' i-th item as (m, N, ...), running rows in place, zeros elsewhere."""
        items = [(p[0], p[1:][i]) for p in self.pending]  # p[1:]: the three tensors
        if all(rows is None for rows, _ in items):
            return torch.stack([v for _, v in items])
        out = torch.zeros(
            len(items), len(self.targets), *items[0][1].shape[1:], device=items[0][1].device, dtype=items[0][1].dtype
        )
        for j, (rows, v) in enumerate(items):
            out[j] = v if rows is None else out[j].index_copy(0, rows, v)
        return out

    def flush(self, end: int) -> None:
        """Turn the pending steps first .. end - 1 into records."""
        m = len(self.pending)
        if m == 0:
            return
        z, gnorm, points = (self._gathered(i) for i in range(3))
        n, t = len(self.targets), self.targets.repeat(m)
        z = z.flatten(0, 1)
        d = (points - self.x0[None]).flatten(0, 1)
        prob = z.softmax(1).gather(1, t[:, None]).squeeze(1)
        values = torch.stack(
            (
                prob,
                z.argmax(1).float(),
                margin(z, t, targeted=True),
                gnorm.flatten().float(),
                distance(d, "l2").to(prob),
                distance(d, "linf").to(prob),
            )
        )
        self.buf[self.first : self.first + m] = values.view(len(RECORDS), m, n).transpose(0, 1)
        self.first, self.pending = self.first + m, []
        assert self.first == end, "records are written one step after another"

    def finish(self, last: int, stopped: torch.Tensor) -> dict[str, torch.Tensor]:
        """(N, T) records by name after the ``last`` step recorded, each pair's last values repeated after the
        step it ``stopped`` at."""
        self.flush(last + 1)
        T = self.buf.shape[0]
        cols = torch.minimum(torch.arange(T, device=stopped.device)[None, :], stopped[:, None])
        out = {k: self.buf[:, i].t().gather(1, cols) for i, k in enumerate(RECORDS)}
        out["top1"] = out["top1"].long()
        return out


class _Unconstrained(Ball):
    """No ball and no box: parameters of a map that keeps images in [0, 1] move freely (eps = inf, never clipped)."""

    def __init__(self) -> None:
        super().__init__(float("inf"), "linf")

    def project(self, x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        return x


class _Evolver:
    """One batch being evolved: the iterate (with its running rows), the records and what each mode keeps."""

    def __init__(
        self,
        model: nn.Module,
        x0: torch.Tensor,
        targets: torch.Tensor,
        config: Config,
        snapshot_pairs: torch.Tensor | None,
        batch_seed: int,
    ) -> None:
        n, dev, steps = len(x0), x0.device, config.steps
        self.model, self.config, self.targets, self.objective = model, config, targets, config.minimized()
        blur = (lambda x: gaussian_blur(x, config.blur)) if config.blur else None
        rule = StepRule(config.norm, config.momentum if config.method == "mifgsm" else 0.0)
        self.parametrization: Parametrization = bind(config.param, x0, seed=config.seed * 1_000_003 + batch_seed)
        ball = _Unconstrained() if self.parametrization.free else Ball(config.eps, config.norm)
        self.it = Iterate(self.parametrization.p0, ball=ball, rule=rule, alpha=config.step_size, transform=blur)
        x0 = (
            self.image() if self.parametrization.free else self.it.x0
        )  # the start as its own transform (clamped into the box)
        self.records = _Records(targets, x0, steps)
        self.snap_steps = config.snapshot_steps()
        self.snap_at = {s: i for i, s in enumerate(self.snap_steps)}
        self.snap_rows = (snapshot_pairs if snapshot_pairs is not None else torch.zeros(0, dtype=torch.long)).to(dev)
        self.snaps = torch.zeros(len(self.snap_rows), len(self.snap_steps), *x0.shape[1:], device=dev, dtype=x0.dtype)
        self.stopped = torch.full((n,), steps, dtype=torch.long, device=dev)
        self.converged = torch.zeros(n, dtype=torch.bool, device=dev)
        self.final = torch.full((n,), steps, dtype=torch.long, device=dev)
        self.best_x, self.best_g = x0.clone(), torch.full((n,), -1.0, device=dev)
        self.gen = torch.Generator().manual_seed(config.seed * 1_000_003 + batch_seed)
        self.running_targets = targets  # of the running rows

    def image(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """The images x(p) of the batch ``rows`` (None: all) at their current parameters, detached."""
        p = self.it.x if rows is None else self.it.x[rows]
        if not self.parametrization.free:
            return p
        with torch.no_grad():
            return self.parametrization.image(p, rows)

    def forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The model, behind this step's random views J of the image (drawn every step, also the last): one roll
        by up to ``jitter`` pixels, or :class:`~advlab.prototypes.transforms.Transforms`' views."""
        j, views = self.config.jitter, self.config.transforms
        if self.config.rolls:
            if not j:
                return self.model
            shift = tuple(int(s) for s in torch.randint(-j, j + 1, (2,), generator=self.gen))
            return lambda x: self.model(torch.roll(x, shift, dims=(-2, -1)))
        return lambda x: self.model(views(x, self.gen))

    def gradients(
        self, t: int, p: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """(logits, g = dL/dp, ||g||_2, max mode's d||g||^2/dp or None, the image x(p)) at the running rows'
        parameters ``p`` (the pixels themselves unless ``param`` says otherwise); with several views per step the
        logits and L are their means over the views."""
        ta, objective, k, rows = self.running_targets, self.objective, self.config.transforms_per_step, self.it.rows
        second = self.config.mode == "max" and t < self.config.steps
        model, seen = self.forward(), {}

        def forward(v: torch.Tensor) -> torch.Tensor:
            seen["x"] = x = self.parametrization.image(v, rows) if self.parametrization.free else v
            return model(x)

        def value(v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            x = seen["x"]
            if k == 1:
                return objective(x, z, ta)
            return objective(x.repeat(k, *[1] * (x.ndim - 1)), z, ta.repeat(k)).view(k, -1).mean(0)

        logits, _, g, pg = gradient(forward, p, value, create_graph=second)
        gnorm = torch.linalg.vector_norm(g.detach().flatten(1), dim=1)
        ascent = None
        if second:
            with torch.enable_grad():
                (ascent,) = torch.autograd.grad(g.pow(2).sum(), pg)
        logits = logits.detach().float()
        if k > 1:
            logits = logits.view(k, len(p), -1).mean(0)
        return logits, g.detach(), gnorm, ascent, seen["x"].detach()

    def keep_best(self, t: int, pred: torch.Tensor, gnorm: torch.Tensor, x: torch.Tensor) -> None:
        """Max mode (every row runs): keep the iterate (image ``x``) classified as the target with the largest
        ||g||_2."""
        better = (pred == self.targets) & (gnorm > self.best_g)
        self.best_x = torch.where(better.view(-1, *[1] * (self.best_x.ndim - 1)), x, self.best_x)
        self.best_g = torch.where(better, gnorm, self.best_g)
        self.final = torch.where(better, t, self.final)

    def converge(self, t: int, gnorm: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Min mode: the running rows with ||g||_2 < tol stop at step ``t``; returns g of the rows that go on."""
        if not float(gnorm.min()) < self.config.tol:  # one reduction and one read per step, as cheap as it gets
            return g
        done = gnorm < self.config.tol
        self.records.flush(t + 1)  # the running rows change: the iterate is updated in place from now on
        rows = self.it.rows
        idx = done.nonzero().flatten() if rows is None else rows[done]
        self.stopped[idx], self.converged[idx], self.final[idx] = t, True, t
        keep = ~done
        self.it.keep(keep)
        self.running_targets = self.running_targets[keep]
        return g[keep]

    def step(self, t: int) -> bool:
        """Record step ``t`` and, unless it is the last or every pair has stopped, move; False when finished."""
        logits, g, gnorm, ascent, x = self.gradients(t, self.it.point())
        self.records.write(t, self.it.rows, logits, gnorm, x)
        ta, pred = self.running_targets, None
        if self.config.mode == "max":  # every row runs
            pred = logits.argmax(1)
            self.keep_best(t, pred, gnorm, x)
        if t in self.snap_at and len(self.snap_rows):
            self.snaps[:, self.snap_at[t]] = self.image(self.snap_rows)
        if t == self.config.steps:
            return False
        if self.config.mode == "min":
            g = self.converge(t, gnorm, g)
            if self.it.running == 0:
                return False
        if ascent is not None and pred is not None:  # max mode ascends ||g||^2 where the target is top-1
            self.it.step(torch.where((pred == ta).view(-1, *[1] * (g.ndim - 1)), ascent, -g))
        else:  # descend L
            self.it.step(g, descend=True)
        return True

    def run(self) -> int:
        """Every step; returns the last step recorded."""
        with frozen_parameters(self.model), self.objective.attached(self.model):
            for t in range(self.config.steps + 1):
                if not self.step(t):
                    break
        return t

    def result(self, last: int, start: torch.Tensor) -> Evolution:
        """The :class:`Evolution`, after the last step recorded: max mode's best iterates, repeated records."""
        x = self.image()
        for i, s in enumerate(self.snap_steps):
            if s > last and len(self.snap_rows):  # every pair stopped before this step: its image is the final one
                self.snaps[:, i] = x[self.snap_rows]
        if self.config.mode == "max":
            x = torch.where((self.best_g >= 0).view(-1, *[1] * (x.ndim - 1)), self.best_x, x)
        records = self.records.finish(last, self.stopped)
        stuck = (records["grad_norm"][:, 0] == 0) & (records["top1"][:, 0] != self.targets)  # Evolution.zero_start
        return Evolution(
            x=x.detach(),
            start=start.to(x.device).long(),
            target=self.targets,
            stopped=self.stopped,
            converged=self.converged & ~stuck,
            final=self.final,
            snapshots=self.snaps,
            snapshot_pairs=self.snap_rows,
            snapshot_steps=self.snap_steps,
            **records,
        )


def evolve(
    model: nn.Module,
    x0: torch.Tensor,
    targets: torch.Tensor,
    config: Config,
    *,
    start: torch.Tensor | None = None,
    snapshot_pairs: torch.Tensor | None = None,
    batch_seed: int = 0,
) -> Evolution:
    """Evolve each start image ``x0[i]`` (N, C, H, W, in [0, 1]) towards class ``targets[i]``; one batch, one call.

    ``start``: the start index of each pair (kept in the result; default 0..N-1). ``snapshot_pairs``: batch rows
    whose images are kept at the snapshot steps (default: none). ``batch_seed`` seeds the jitter of this batch
    (with ``config.seed``), so a batch gives the same result wherever it falls in a run. The model's parameters
    are frozen during the run and restored; the model should be in eval mode. The images are moved to the
    model's device (:func:`advlab.device.device_of`).
    """
    config.validate()
    x0 = x0.to(device_of(model, x0.device))
    evolver = _Evolver(model, x0, targets.to(x0.device).long(), config, snapshot_pairs, batch_seed)
    last = evolver.run()
    return evolver.result(last, start if start is not None else torch.arange(len(x0)))
