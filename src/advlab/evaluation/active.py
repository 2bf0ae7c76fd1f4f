"""The active test of an evaluation: the binarization test of Zimmermann et al. (NeurIPS 2022, "Increasing
confidence in adversarial robustness evaluations").

An evaluation that reports "no adversarial example found" may have found none because there is none, or because
its attacks are too weak for the model. The binarization test tells the two apart on tasks where an adversarial
example provably exists. For each sample x (N, C, H, W in [0, 1]) it builds a binary classifier from the user's
model, keeping the feature extractor and replacing the classification head:

* features f(.): the input of the model's last ``nn.Linear`` (the one its forward calls last, found by a forward
  hook; everything in front of it, preprocessing, quantizers, randomness included, stays as it is), or the
  model's outputs where it has no such layer;
* "inner" points, class 0: x and ``inner_points`` points x + delta with ||delta|| <= ``inner_radius`` * eps;
  "boundary" points, class 1: ``boundary_points`` points x + delta with ||delta|| = eps (L-inf: eps * a random sign
  vector; L2/L1: a random direction scaled to eps); a coordinate that would leave [0, 1] takes the opposite sign,
  then the point is clipped to [0, 1], so every point lies in the eps-ball and the box;
* a linear readout z(p) = w . f(p) + b: w the direction of a ridge regression of the labels on the standardized
  features (inner and boundary weighted 1/2 each, float64), b the threshold halfway between the highest inner
  score and the highest boundary score (if no boundary point scores above every inner one, halfway between x's
  score and it), z scaled so that the best boundary point, the witness, has z = 1 (x then has z <= -1).

The binarized model outputs the logits (-z/2, z/2, d, ..., d), padded with d = -|z|/2 - 1 to the width of the
replaced head (the model's class count): the padding never wins the argmax, so the model is a binary classifier,
but losses that need three or four classes (DLR, targeted DLR) and an evaluation's class count work unchanged.
Whatever the model does after its head (a softmax) it does to these logits.

A sample is tested when its task is verified, with the binarized model called as a user calls it (eval mode,
``torch.no_grad``): x is predicted 0 and the witness, inside the eps-ball and the box, 1; an adversarial example
then provably exists. Otherwise the sample is skipped. The evaluation's attacks run untargeted against label 0;
a tested sample is found when their point, inside the ball (relative tolerance 1e-5) and the box, is predicted 1.
A reliable evaluation finds (almost) all of them; a rate clearly below 1 means its attacks miss adversarial
examples that exist (weak attacks, masked gradients).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from advlab.attacks.base import preserved_state
from advlab.attacks.draws import SampleDraws
from advlab.threat import check_norm, distance

__all__ = [
    "ACTIVE_STREAM",
    "BALL_TOLERANCE",
    "ActiveTest",
    "Binarization",
    "BinaryReadout",
    "RunAttacks",
    "active_test",
    "binarized",
    "groups",
    "in_threat",
    "last_linear",
    "readouts",
]

#: the stream of the test's per-sample draws (apart from the attacks' random starts and draws)
ACTIVE_STREAM = 9 << 20
#: the relative tolerance of the eps-ball check: ||x_adv - x|| <= eps * (1 + BALL_TOLERANCE)
BALL_TOLERANCE = 1e-5
#: a point the evaluation's attacks return, as ``run_attacks(binary_model, x, labels)`` -> x_adv
RunAttacks = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def in_threat(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """(N,) bool: ``x_adv`` lies in the [0, 1] box and in the ``norm`` ball of radius ``eps`` around ``x``
    (tolerance ``eps * BALL_TOLERANCE``)."""
    box = ((x_adv >= 0) & (x_adv <= 1)).flatten(1).all(1)
    ball = distance(x_adv - x, norm).to(x.device) <= eps * (1 + BALL_TOLERANCE)
    return box & ball


def groups(x: torch.Tensor, eps: float, norm: str) -> list[torch.Tensor]:
    """The rows of ``x`` split into groups whose eps-balls are pairwise disjoint (distance > 2 eps * (1 + tol),
    first fit in row order): one :func:`binarized` model serves each group. Digits and photos are almost always
    one group."""
    flat = x.detach().flatten(1).double()
    p = {"linf": math.inf, "l2": 2.0, "l1": 1.0}[check_norm(norm)]
    far = torch.cdist(flat, flat, p=p) > 2 * eps * (1 + BALL_TOLERANCE)
    members: list[list[int]] = []
    for i in range(len(x)):
        for group in members:
            if bool(far[i, group].all()):
                group.append(i)
                break
        else:
            members.append([i])
    return [torch.tensor(g, dtype=torch.long) for g in members]


class BinaryReadout(nn.Module):
    """The binarized model: ``model`` with its head (the last ``nn.Linear``, ``layer``) replaced, only during this
    module's forward, by the per-sample readouts z = weight[i] . f + bias[i] (``layer`` None: the readout reads the
    model's outputs). Row r of an input batch uses the readout of its nearest anchor (in ``norm``): the rows of
    :func:`binarized`'s x, whose eps-balls are disjoint, so every point inside sample i's ball is read by readout
    i, in any batch and any subset. Output: (-z/2, z/2, d, ..., d), ``classes`` logits (module docstring).

    The user's model is a submodule (its mode follows this module's ``train``/``eval``); a forward adds a hook on
    ``layer`` and removes it before returning, so the model itself is never changed."""

    anchors: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(
        self,
        model: nn.Module,
        layer: str | None,
        anchors: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor,
        norm: str,
        classes: int,
    ) -> None:
        super().__init__()
        self.model, self.layer, self.norm, self.classes = model, layer, check_norm(norm), max(int(classes), 2)
        self.register_buffer("anchors", anchors.detach().flatten(1).clone())
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone())

    def route(self, x: torch.Tensor) -> torch.Tensor:
        """(M,) the index of the readout of each row of ``x``: its nearest anchor in ``norm``."""
        p = {"linf": math.inf, "l2": 2.0, "l1": 1.0}[self.norm]
        anchors = self.anchors.to(x.device, torch.float32)
        return torch.cdist(x.detach().flatten(1).float(), anchors, p=p).argmin(1)

    def head(self, f: torch.Tensor, route: torch.Tensor) -> torch.Tensor:
        """The padded binary logits (M, classes) of the features ``f`` (M, d) read by the readouts ``route``."""
        w, b = self.weight.to(f.device)[route], self.bias.to(f.device)[route]
        z = (f.flatten(1).to(w.dtype) * w).sum(1) + b
        pad = (-z.abs() / 2 - 1)[:, None].expand(-1, self.classes - 2)
        return torch.cat([torch.stack([-z / 2, z / 2], 1), pad], 1).to(f.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        route = self.route(x)
        if self.layer is None:
            return self.head(_tensor(self.model(x)), route)
        calls = []

        def replace(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            return self.head(inputs[0], route).to(output.dtype)

        module = dict(self.model.named_modules())[self.layer]
        handle = module.register_forward_hook(replace)
        try:
            out = _tensor(self.model(x))
        finally:
            handle.remove()
        if not calls:  # (a head that runs more than once, e.g. on two views of the input, is replaced each time)
            raise RuntimeError(f"the head {self.layer!r} did not run in this forward")
        return out


@dataclass(frozen=True)
class Binarization:
    """What :func:`binarized` builds. ``model``: the :class:`BinaryReadout`; ``ok`` (N,) bool: the sample's task
    is verified (x predicted 0, ``witness`` predicted 1, in eval mode under ``torch.no_grad``); ``witness`` (N, C,
    H, W): the boundary point the readout puts in class 1, in the eps-ball and [0, 1] (x itself where the readout
    could not be fit); ``layer``: the name of the replaced ``nn.Linear`` ("" where the readout reads the model's
    outputs); ``forwards``: images the model was run on to build and verify the tasks."""

    model: BinaryReadout
    ok: torch.Tensor
    witness: torch.Tensor
    layer: str
    forwards: int


def _tensor(out: object) -> torch.Tensor:
    """A model's output, which must be a tensor of logits (or probabilities), (N, K)."""
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model must return a tensor, got {type(out).__name__}")
    return out


@contextmanager
def _user_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode, every flag and buffer restored on exit (:func:`advlab.attacks.base.preserved_state`)."""
    with preserved_state(model):
        model.eval()
        yield


def last_linear(model: nn.Module, x: torch.Tensor) -> str | None:
    """The name of the ``nn.Linear`` that the forward of ``x`` (one row is run, eval mode) calls last, if it is
    called once and reads (N, d) features; else None (the readout then reads the model's outputs)."""
    calls: list[tuple[str, int]] = []
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):

            def record(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor, name: str = name) -> None:
                calls.append((name, inputs[0].ndim))

            handles.append(module.register_forward_hook(record))
    try:
        with _user_mode(model), torch.no_grad():
            model(x[:1])
    finally:
        for h in handles:
            h.remove()
    if not calls:
        return None
    name, ndim = calls[-1]
    return name if ndim == 2 and sum(n == name for n, _ in calls) == 1 else None


def _features(model: nn.Module, layer: str | None, points: torch.Tensor, batch: int) -> torch.Tensor:
    """(M, d) float64 features of ``points`` (the input of ``layer``, or the model's outputs), in user mode."""
    rows: list[torch.Tensor] = []
    grabbed: list[torch.Tensor] = []

    def grab(m: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        grabbed.append(inputs[0].detach())

    handle = dict(model.named_modules())[layer].register_forward_hook(grab) if layer is not None else None
    try:
        with torch.no_grad():
            for chunk in points.split(batch):
                out = _tensor(model(chunk))
                rows.append((grabbed.pop() if layer is not None else out).flatten(1).double())
    finally:
        if handle is not None:
            handle.remove()
    return torch.cat(rows)


def _offsets(
    x: torch.Tensor, radius: torch.Tensor, norm: str, sphere: bool, draws: SampleDraws, i: int
) -> torch.Tensor:
    """(n, *x.shape[1:]) perturbations of sample ``i`` with the ``norm`` lengths ``radius`` (n,): L-inf a random sign
    vector (``sphere``: a corner of the cube) or a uniform cube point scaled to its radius; L2 a Gaussian
    direction, L1 a Laplace-like one, normalized."""
    shape, rows, tag = (len(radius), *x.shape[1:]), torch.tensor([i]), (1 if sphere else 2,)
    if norm == "linf":
        d = draws.signs(rows, tag, shape)[0] if sphere else draws.uniform(rows, tag, shape)[0] * 2 - 1
    else:
        d = draws.normal(rows, tag, shape)[0]
        if norm == "l1":
            d = d.abs().neg().exp().mul(d.sign())
    flat = d.flatten(1)
    size = {"linf": flat.abs().amax(1), "l2": flat.norm(dim=1), "l1": flat.abs().sum(1)}[norm]
    scale = (radius.to(d) / size.clamp_min(1e-12)).view(-1, *[1] * (d.ndim - 1))
    return (d * scale).to(x.device, x.dtype)


def _place(x: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """x + delta, a coordinate that leaves [0, 1] taking -delta instead, clipped to [0, 1] (never further from x)."""
    p = x + delta
    return torch.where((p < 0) | (p > 1), x - delta, p).clamp(0, 1)


def readouts(
    feats: torch.Tensor, inner: int, ridge: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The readouts of N samples from their float64 features ``feats`` (N, M, d): per sample x first, then
    ``inner - 1`` inner points, then the boundary points. Returns ``(weight (N, d), bias (N,), witness (N,),
    fitted (N,))``: z = weight . f + bias has z = 1 at the witness (an index among the boundary points) and
    z(x) <= -1; ``fitted`` False where no boundary point scores above x (weight and bias are then 0).

    The direction w minimizes sum_i c_i (w . g_i - t_i)^2 + lam ||w||^2 over the standardized features g (mean
    and deviation weighted by c: 1/2 for the inner points together, 1/2 for the boundary points), t the centred
    labels, lam = ``ridge`` * sum_i c_i ||g_i||^2 / d (solved in the dual where d > M)."""
    n, m, d = feats.shape
    finite = feats.isfinite().all(2).all(1)  # NaN or infinite features (a model's NaN outputs): not fitted
    feats = torch.where(finite[:, None, None], feats, torch.zeros_like(feats))
    c = torch.cat([torch.full((inner,), 0.5 / inner), torch.full((m - inner,), 0.5 / (m - inner))]).double()
    t = torch.cat([torch.zeros(inner), torch.ones(m - inner)]).double() - 0.5
    mu = (c[None, :, None] * feats).sum(1, keepdim=True)
    sd = (c[None, :, None] * (feats - mu) ** 2).sum(1, keepdim=True).sqrt()
    sd = torch.where(sd > 1e-12 * (1 + sd.amax(2, keepdim=True)), sd, torch.ones_like(sd))
    g = (feats - mu) / sd
    a = g * c.sqrt()[None, :, None]  # the weighted design: min ||a w - sqrt(c) t||^2 + lam ||w||^2
    ct = (c.sqrt() * t)[None, :, None].expand(n, -1, -1)
    lam = (ridge * (a * a).sum((1, 2)) / d + 1e-12)[:, None, None]  # > 0 even for constant features
    if d <= m:
        w = torch.linalg.solve(a.mT @ a + lam * torch.eye(d, dtype=a.dtype), a.mT @ ct)
    else:  # the dual form: w = a^T (a a^T + lam I)^-1 sqrt(c) t
        w = a.mT @ torch.linalg.solve(a @ a.mT + lam * torch.eye(m, dtype=a.dtype), ct)
    s = (g @ w)[:, :, 0]
    s_x, s_in = s[:, 0], s[:, :inner].amax(1)
    s_b, witness = s[:, inner:].max(1)
    fitted = (s_b > s_x) & finite
    threshold = torch.where(s_b > s_in, (s_in + s_b) / 2, (s_x + s_b) / 2)
    scale = torch.where(fitted, s_b - threshold, torch.ones_like(s_b))
    weight = w[:, :, 0] / sd[:, 0] / scale[:, None]
    bias = -((w[:, :, 0] / sd[:, 0] * mu[:, 0]).sum(1) + threshold) / scale
    keep = fitted[:, None].double()
    return weight * keep, bias * keep[:, 0], witness, fitted


def binarized(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    norm: str = "linf",
    *,
    boundary_points: int = 1,
    inner_points: int = 255,
    inner_radius: float = 0.8,
    ridge: float = 1e-2,
    seed: int = 0,
    batch: int = 256,
) -> Binarization:
    """The binary tasks of the samples ``x`` (N, C, H, W in [0, 1], eps-balls pairwise disjoint: see
    :func:`groups`) in the ``norm`` ball of radius ``eps`` ([0, 1] pixel units): the readouts fit on
    ``inner_points`` inner points (radius <= ``inner_radius`` * eps, uniform in [0, inner_radius * eps]) and
    ``boundary_points`` boundary points each, ridge regularization ``ridge`` (relative to the features' mean
    square), draws from (``seed``, the sample's pixels): the same image gets the same task in any batch. The
    model is run on ``batch`` points at a time, in eval mode; its modes and buffers are restored. See the module
    docstring for the construction and the verification."""
    norm = check_norm(norm)
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    if boundary_points < 1 or inner_points < 1:
        raise ValueError(f"boundary_points and inner_points must be >= 1, got {boundary_points}, {inner_points}")
    if not 0 <= inner_radius < 1:
        raise ValueError(f"inner_radius must be in [0, 1), got {inner_radius}")
    if len(groups(x, eps, norm)) > 1:
        raise ValueError("the eps-balls of some samples of x overlap: binarize each of groups(x, eps, norm) apart")
    n, m = len(x), 1 + inner_points + boundary_points
    draws = SampleDraws(x, seed, stream=ACTIVE_STREAM)
    radii = draws.uniform(None, (0,), (inner_points + 1,)) * inner_radius * eps
    radii[:, -1] = eps  # the boundary points' radius
    boundary = torch.empty(n, boundary_points, *x.shape[1:], dtype=x.dtype, device=x.device)
    with _user_mode(model):
        layer = last_linear(model, x)
        feats = []
        for i in range(n):  # one sample's points at a time: m images in memory
            inner = _place(x[i], _offsets(x, radii[i, :inner_points], norm, False, draws, i))
            boundary[i] = _place(
                x[i], _offsets(x, radii[i, inner_points:].expand(boundary_points), norm, True, draws, i)
            )
            feats.append(_features(model, layer, torch.cat([x[i : i + 1], inner, boundary[i]]), batch).cpu())
        if layer is not None:
            classes = dict(model.named_modules())[layer].out_features
        else:
            with torch.no_grad():
                classes = _tensor(model(x[:1])).shape[1]
        weight, bias, best, fitted = readouts(torch.stack(feats), inner_points + 1, ridge)
        witness = torch.where(
            fitted.view(-1, *[1] * (x.ndim - 1)).to(x.device), boundary[torch.arange(n), best.to(x.device)], x
        )
        weight, bias = weight.to(x.device, torch.float32), bias.to(x.device, torch.float32)
        binary = BinaryReadout(model, layer, x, weight, bias, norm, classes)  # not .to(): the model stays put
        with torch.no_grad():
            at_x, at_witness = binary(x).argmax(1), binary(witness).argmax(1)
    ok = fitted.to(x.device) & (at_x == 0) & (at_witness == 1) & in_threat(witness, x, eps, norm)
    return Binarization(binary, ok, witness, layer or "", n * (m + 2) + 1 + (layer is None))


@dataclass(frozen=True)
class ActiveTest:
    """The outcome of :func:`active_test` on N samples. ``tested_mask`` (N,) bool: the sample's binary task was
    verified (an adversarial example exists); ``found_mask`` (N,) bool: the attacks returned one (predicted
    1 in eval mode under ``torch.no_grad``, inside the eps-ball and [0, 1]); ``x_adv``: their points; ``witness``:
    the boundary points proving existence; ``layer``: the replaced head ("" where the readout reads the outputs);
    ``forwards``: images the model ran on to build, verify and judge the tasks (the attacks' own cost not
    included)."""

    tested_mask: torch.Tensor
    found_mask: torch.Tensor
    x_adv: torch.Tensor
    witness: torch.Tensor
    layer: str
    forwards: int

    @property
    def tested(self) -> int:
        """Samples with a verified binary task."""
        return int(self.tested_mask.sum())

    @property
    def found(self) -> int:
        """Tested samples whose adversarial example the attacks found."""
        return int((self.found_mask & self.tested_mask).sum())

    @property
    def skipped(self) -> int:
        """Samples whose readout could not be made to classify x as 0 and a boundary point as 1 (not tested)."""
        return len(self.tested_mask) - self.tested

    @property
    def rate(self) -> float:
        """found / tested (nan where nothing was tested)."""
        return self.found / self.tested if self.tested else math.nan

    def passed(self, threshold: float = 0.95) -> bool:
        """Whether the attacks found at least ``threshold`` of the existing adversarial examples (False where
        nothing was tested)."""
        return self.tested > 0 and self.rate >= threshold


def active_test(
    model: nn.Module,
    x: torch.Tensor,
    eps: float,
    norm: str,
    run_attacks: RunAttacks,
    *,
    samples: int = 16,
    seed: int = 0,
    boundary_points: int = 1,
    inner_points: int = 255,
    inner_radius: float = 0.8,
) -> ActiveTest:
    """The binarization test on the first ``samples`` images of ``x`` (N, C, H, W in [0, 1]) in the ``norm`` ball
    of radius ``eps``: the binary tasks of :func:`binarized` (one model per group of disjoint balls,
    :func:`groups`), ``run_attacks(binary_model, x_group, zeros)`` (the evaluation's attacks, untargeted against
    label 0; it returns x_adv) on the verified samples, each point judged by the binarized model in eval mode
    under ``torch.no_grad``. The user's model gets its modes and buffers back and keeps no hook."""
    norm = check_norm(norm)
    x = x[:samples].detach()
    n = len(x)
    tested = torch.zeros(n, dtype=torch.bool, device=x.device)
    found = torch.zeros_like(tested)
    x_adv, witness = x.clone(), x.clone()
    layer, forwards = "", 0
    with preserved_state(model):
        for rows in groups(x, eps, norm):
            rows = rows.to(x.device)
            task = binarized(
                model,
                x[rows],
                eps,
                norm,
                boundary_points=boundary_points,
                inner_points=inner_points,
                inner_radius=inner_radius,
                seed=seed,
            )
            layer, forwards = task.layer, forwards + task.forwards
            tested[rows], witness[rows] = task.ok, task.witness
            idx = task.ok.nonzero().flatten()
            if len(idx) == 0:
                continue
            x_t = x[rows][idx]
            labels = torch.zeros(len(idx), dtype=torch.long, device=x.device)
            model.eval()
            adv = run_attacks(task.model, x_t, labels).detach().to(x.device, x.dtype)
            if adv.shape != x_t.shape:
                raise ValueError(f"run_attacks returned shape {tuple(adv.shape)} for inputs {tuple(x_t.shape)}")
            model.eval()
            with torch.no_grad():
                pred = task.model(adv).argmax(1)
            forwards += len(idx)
            x_adv[rows[idx]] = adv
            found[rows[idx]] = (pred == 1) & in_threat(adv, x_t, eps, norm)
    return ActiveTest(tested, found, x_adv, witness, layer, forwards)
