"""The prototype generator: a targeted attack run as a generative process, the frozen classifier its discriminator.

For a start x0 (a blank image, noise or a photo) and a target class t, each step evaluates the objective

    L(x) = CE(f(J(x)), t) + tv * TV(x),          g = dL/dx

and moves x by the method's steepest direction s (``pgd``/``mifgsm``: sign, L-inf ball; ``pgdl2``: v/||v||_2,
L2 ball; ``mifgsm`` adds momentum v <- mu v + u/||u||_1), then projects onto the eps-ball around x0 and [0, 1]:

* ``min`` mode descends L until the input gradient vanishes: a pair stops (and costs nothing more) at the
  first step where ||g||_2 < ``tol``: a prototype in seed 000's sense (f(x) = t and df/dx = 0);
* ``max`` mode descends L while argmax f(x) != t; once the input is classified as t it ascends ||g||_2^2
  (double backprop) instead, so the gradient norm grows while the class holds. The result is the iterate
  classified as t with the largest ||g||_2 (the last iterate if none was).

J is an optional random shift by up to ``jitter`` pixels (one shift per step), TV the mean absolute
difference of neighbouring pixels, and ``blur`` a Gaussian blur (sigma in pixels) after every step: the
regularizers that make prototypes look more natural. eps = None (the default) is unconstrained descent (only
the box [0, 1]; eps = 1 with L-inf is the same).

Units: images in [0, 1]; eps and alpha in [0, 1] pixel units (L-inf) or L2 over the whole image (pgdl2).
Every step records, per pair, the target probability, the top-1 class, the margin z_t - max_{j != t} z_j,
||g||_2 and the L2 / L-inf distance from the start; step 0 is the start itself.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import frozen_parameters
from advlab.threat import distance, project, steepest_step

METHODS = {"pgd": "linf", "mifgsm": "linf", "pgdl2": "l2"}
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
    snapshots: tuple[int, ...] | None = None  # steps whose images are kept; default: 0, 1, 2, 5, 10, 20, 50, ... and the last

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
        for name in ("tol", "momentum", "tv", "blur"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.jitter < 0:
            raise ValueError(f"jitter must be >= 0, got {self.jitter}")

    @property
    def norm(self) -> str:
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
    ||g|| < tol was reached. ``final``: the step ``x`` was taken at (max mode keeps its best iterate).
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
            vals = [getattr(p, f.name) + o if f.name == "snapshot_pairs" else getattr(p, f.name) for p, o in zip(parts, offsets)]
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


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Per image: mean |x[i+1, j] - x[i, j]| + mean |x[i, j+1] - x[i, j]| (anisotropic TV, in pixel units)."""
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


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


def _margin(logits: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    zt = logits.gather(1, t[:, None]).squeeze(1)
    other = logits.scatter(1, t[:, None], -torch.inf).amax(1)
    return zt - other


def evolve(model: nn.Module, x0: torch.Tensor, targets: torch.Tensor, config: Config, *, start: torch.Tensor | None = None,
           snapshot_pairs: torch.Tensor | None = None, batch_seed: int = 0) -> Evolution:  # fmt: skip
    """Evolve each start image ``x0[i]`` (N, C, H, W, in [0, 1]) towards class ``targets[i]``; one batch, one call.

    ``start``: the start index of each pair (kept in the result; default 0..N-1). ``snapshot_pairs``: batch rows
    whose images are kept at the snapshot steps (default: none). ``batch_seed`` seeds the jitter of this batch
    (with ``config.seed``), so a batch gives the same result wherever it falls in a run. The model's parameters
    are frozen during the run and restored; the model should be in eval mode.
    """
    config.validate()
    n, dev = len(x0), x0.device
    targets = targets.to(dev).long()
    steps, alpha, norm = config.steps, config.step_size, config.norm
    snap_steps = config.snapshot_steps()
    snap_rows = (snapshot_pairs if snapshot_pairs is not None else torch.zeros(0, dtype=torch.long)).to(dev)
    T = steps + 1
    rec = {k: torch.zeros(n, T, device=dev) for k in ("prob", "margin", "grad_norm", "l2", "linf")}
    top1 = torch.zeros(n, T, dtype=torch.long, device=dev)
    snaps = torch.zeros(len(snap_rows), len(snap_steps), *x0.shape[1:], device=dev, dtype=x0.dtype)
    x = x0.detach().clone()
    stopped = torch.full((n,), steps, dtype=torch.long, device=dev)
    converged = torch.zeros(n, dtype=torch.bool, device=dev)
    best_x, best_g = x.clone(), torch.full((n,), -1.0, device=dev)
    final = torch.full((n,), steps, dtype=torch.long, device=dev)
    velocity = torch.zeros_like(x) if config.method == "mifgsm" else None
    gen = torch.Generator().manual_seed(config.seed * 1_000_003 + batch_seed)
    active: torch.Tensor | None = None  # rows still running; None: all
    with frozen_parameters(model):
        for t in range(T):
            rows = slice(None) if active is None else active
            xa, x0a, ta = x[rows], x0[rows], targets[rows]
            shift = tuple(int(s) for s in torch.randint(-config.jitter, config.jitter + 1, (2,), generator=gen)) if config.jitter else (0, 0)
            xg = xa.detach().requires_grad_(True)
            with torch.enable_grad():
                logits = model(torch.roll(xg, shift, dims=(-2, -1)) if config.jitter else xg)
                objective = F.cross_entropy(logits.float(), ta, reduction="none")
                if config.tv:
                    objective = objective + config.tv * total_variation(xg)
                (g,) = torch.autograd.grad(objective.sum(), xg, create_graph=config.mode == "max" and t < steps)
                gnorm = g.detach().flatten(1).norm(dim=1)
                ascent = None
                if config.mode == "max" and t < steps:
                    (ascent,) = torch.autograd.grad(g.pow(2).sum(), xg)
            logits = logits.detach().float()
            d = (xa - x0a).detach()
            pred = logits.argmax(1)
            values = {"prob": logits.softmax(1).gather(1, ta[:, None]).squeeze(1), "margin": _margin(logits, ta),
                      "grad_norm": gnorm, "l2": distance(d, "l2").to(dev), "linf": distance(d, "linf").to(dev)}  # fmt: skip
            for k, v in values.items():
                rec[k][rows, t] = v
            top1[rows, t] = pred
            if config.mode == "max":
                better = (pred == ta) & (gnorm > best_g[rows])
                idx = torch.arange(n, device=dev)[rows][better]
                best_x[idx], best_g[idx], final[idx] = xa[better].detach(), gnorm[better], t
            if t in snap_steps and len(snap_rows):
                snaps[:, snap_steps.index(t)] = x[snap_rows]
            if t == steps:
                break
            if config.mode == "min" and bool((done := gnorm < config.tol).any()):
                idx = torch.arange(n, device=dev)[rows]
                stopped[idx[done]], converged[idx[done]], final[idx[done]] = t, True, t
                keep = ~done
                active, xa, x0a, g = idx[keep], xa[keep], x0a[keep], g[keep]
                if len(active) == 0:
                    break
                rows = active
            u = -g.detach()
            if ascent is not None:  # max mode: ascend ||g||^2 where the target is top-1, else descend the loss
                u = torch.where((pred == ta).view(-1, *[1] * (x.ndim - 1)), ascent, u)
            if velocity is not None:
                v = config.momentum * velocity[rows] + u / (u.flatten(1).abs().sum(1).view(-1, *[1] * (u.ndim - 1)) + 1e-12)
                velocity[rows] = v
                u = v
            xn = xa.detach() + alpha * steepest_step(u, norm)  # type: ignore[arg-type]
            if config.blur:
                xn = gaussian_blur(xn, config.blur)
            if config.eps is not None:
                xn = x0a + project(xn - x0a, config.eps, norm)  # type: ignore[arg-type]
            x[rows] = xn.clamp(0, 1)
    for i, s in enumerate(snap_steps):
        if s > t and len(snap_rows):  # every pair stopped before this step: its image is the final one
            snaps[:, i] = x[snap_rows]
    if config.mode == "max":
        reached = best_g >= 0
        x = torch.where(reached.view(-1, *[1] * (x.ndim - 1)), best_x, x)
    # repeat each pair's last recorded values after it stopped
    cols = torch.minimum(torch.arange(T, device=dev)[None, :], stopped[:, None])
    rec = {k: v.gather(1, cols) for k, v in rec.items()}
    top1 = top1.gather(1, cols)
    return Evolution(
        x=x.detach(), start=(start if start is not None else torch.arange(n)).to(dev).long(), target=targets, top1=top1,
        stopped=stopped, converged=converged, final=final, snapshots=snaps, snapshot_pairs=snap_rows,
        snapshot_steps=snap_steps, **rec,
    )  # fmt: skip
