"""Where an attack acts inside a network: how much each layer's output moves between clean and adversarial inputs.

``features(model, layers)`` (:mod:`advlab.hooks`, re-exported here) captures layer outputs (forward hooks,
always removed on exit); ``layer_changes(model, x, x_adv)`` measures, for every captured layer ``l`` in forward
order and every sample ``i`` with clean activation ``a = a_l(x_i)`` and change ``d = a_l(x_adv_i) - a`` (both
flattened to the layer's ``units`` values per sample),

    rel_l2    = ||d||_2   / (||a||_2   + tiny)
    rel_linf  = ||d||_inf / (||a||_inf + tiny)
    top_share = sum of the k largest d_j^2 / sum_j d_j^2,   k = max(1, round(top_fraction * units))

(``tiny`` = 1e-12; ``top_share`` is 0 for a sample whose activation did not change), each averaged over
the samples, plus the mean and standard deviation of all activation values of the layer on the clean and
on the adversarial inputs. The ratios are unitless; means and stds are in the layer's own units (pixels
in [0, 1] for the input). The input itself comes first, as the pseudo-layer ``"input"`` (depth 0).

``rel_l2`` says how far a layer's representation moves relative to its size; ``rel_linf`` whether some
unit moves a lot; ``top_share`` whether the change is spread out (``top_share`` near ``top_fraction``: a
small push on many units, as PGD makes on the input) or concentrated in a few units (near 1: a few
abnormally large values, as it makes in the penultimate layer). Research note 003 found PGD acting mostly on the
input and the penultimate layer; ``peak(changes)`` names the layer with the largest change.

Any ``nn.Module`` can be measured, so a defended model can be compared with the plain one: research note 003 also
found that clamping a feature map makes PGD push all values up instead, so the spread of the normalized
activations (``adv_std`` versus ``clean_std`` at the layers after BatchNorm) grows. Measure
``layer_changes(defended, x, attack(defended, x, y).x_adv)`` and ``layer_changes(model, ...)`` and compare
their ``adv_std / clean_std`` per layer.

Conventions:
  * Layer names are those of ``model.named_modules()``; by default every leaf module (no children) and
    every module with weights of its own, such as EfficientNet's ``Conv2dStaticSamePadding`` (a conv with
    a padding child), whose output would otherwise be missed.
  * Forward order is the order in which the modules' outputs were produced in the forward pass.
  * A module called several times in one forward (a shared activation such as EfficientNet's
    ``_swish``) is reported for its LAST call, placed at the position of that call.
  * A module's output that is a tuple, list or dict is represented by its first tensor; modules that
    are never called, or whose output has no tensor with the batch as its leading dimension, are left out.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab.hooks import features, first_tensor, hooked, named_layers

__all__ = [
    "METRICS",
    "TINY",
    "LayerChange",
    "change_summary",
    "changes_table",
    "features",
    "first_tensor",
    "layer_changes",
    "peak",
]

#: added to the norms of the clean activation before dividing, so that an all-zero layer gives a finite ratio
TINY = 1e-12
#: the per-layer quantities that :func:`peak` can rank by
METRICS = ("rel_l2", "rel_linf", "top_share")


@dataclass(frozen=True)
class LayerChange:
    """How one layer's output changes from clean to adversarial inputs (formulas in the module docstring).

    ``kind``: the module's class name ("input" for the input). ``depth``: position in forward order
    (input = 0). ``units``: values per sample in the layer's output. ``rel_l2``, ``rel_linf``,
    ``top_share``: per-sample ratios averaged over samples (unitless). ``clean_mean``, ``clean_std``,
    ``adv_mean``, ``adv_std``: mean and (population) standard deviation of all the layer's output values
    over all samples, on the clean and on the adversarial inputs (in the layer's units).
    """

    name: str
    kind: str
    depth: int
    units: int
    rel_l2: float
    rel_linf: float
    top_share: float
    clean_mean: float
    clean_std: float
    adv_mean: float
    adv_std: float


# ------------------------------------------------------------------------------------------------ measures
class _Moments:
    """Running count, mean and sum of squared deviations of values (Chan et al.'s parallel update), in float64."""

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    @staticmethod
    def of(v: torch.Tensor) -> tuple[int, float, float]:
        """``(count, mean, sum of squared deviations)`` of all values of ``v``."""
        n = v.numel()
        if n == 0:
            return 0, 0.0, 0.0
        var, mean = torch.var_mean(v.to(torch.promote_types(v.dtype, torch.float32)), correction=0)
        return n, float(mean), float(var) * n

    def merge(self, n: int, mean: float, m2: float) -> None:
        if n == 0:
            return
        total = self.n + n
        delta = mean - self.mean
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.n * n / total
        self.n = total

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / self.n) if self.n else math.nan


@dataclass
class _Batch:
    """One layer's statistics on one batch: per-sample ratios (n, 3) and the clean/adversarial moments."""

    kind: str
    units: int
    per_sample: torch.Tensor
    clean: tuple[int, float, float]
    adv: tuple[int, float, float]

    @classmethod
    def of(cls, kind: str, a: torch.Tensor, b: torch.Tensor, top_fraction: float) -> _Batch:
        return cls(kind, a[0].numel(), _per_sample(a, b, top_fraction), _Moments.of(a), _Moments.of(b))


class _Layer:
    """What :func:`layer_changes` accumulates for one layer over the batches."""

    def __init__(self, kind: str, units: int) -> None:
        self.kind, self.units = kind, units
        self.per_sample: list[torch.Tensor] = []  # (n, 3) each: rel_l2, rel_linf, top_share
        self.clean, self.adv = _Moments(), _Moments()

    def add(self, batch: _Batch) -> None:
        self.per_sample.append(batch.per_sample)
        self.clean.merge(*batch.clean)
        self.adv.merge(*batch.adv)

    def result(self, name: str, depth: int) -> LayerChange:
        rel_l2, rel_linf, top = torch.cat(self.per_sample).mean(0).tolist()
        return LayerChange(
            name=name,
            kind=self.kind,
            depth=depth,
            units=self.units,
            rel_l2=rel_l2,
            rel_linf=rel_linf,
            top_share=top,
            clean_mean=self.clean.mean,
            clean_std=self.clean.std,
            adv_mean=self.adv.mean,
            adv_std=self.adv.std,
        )


def _per_sample(a: torch.Tensor, b: torch.Tensor, top_fraction: float) -> torch.Tensor:
    """``(n, 3)`` float64 on the CPU: rel_l2, rel_linf and top_share of clean ``a`` and adversarial ``b`` (n, ...)."""
    n = a.shape[0]
    dtype = torch.promote_types(a.dtype, torch.float32)
    a = a.reshape(n, -1).to(dtype)
    d = b.reshape(n, -1).to(dtype) - a
    rel_l2 = d.norm(dim=1) / (a.norm(dim=1) + TINY)
    rel_linf = d.abs().amax(1) / (a.abs().amax(1) + TINY)
    d2 = d.square()
    units = d2.shape[1]
    k = max(1, min(units, round(top_fraction * units)))
    total = d2.sum(1)
    top = d2.topk(k, dim=1, sorted=False).values.sum(1)
    share = torch.where(total > 0, top / total.clamp_min(torch.finfo(dtype).tiny), torch.zeros_like(total))
    return torch.stack([rel_l2, rel_linf, share.clamp(max=1.0)], 1).double().cpu()


def _check_inputs(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, top_fraction: float, batch_size: int) -> None:
    """ValueError for inputs :func:`layer_changes` cannot measure, among them a model in training mode."""
    if x.shape != x_adv.shape:
        raise ValueError(f"x has shape {tuple(x.shape)} but x_adv has {tuple(x_adv.shape)}")
    if x.ndim == 0 or len(x) == 0:
        raise ValueError("x is empty: nothing to measure")
    if not 0 < top_fraction <= 1:
        raise ValueError(f"top_fraction must be in (0, 1], got {top_fraction}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    training = [n or "(the model)" for n, m in model.named_modules() if m.training]
    if training:
        more = ", ..." if len(training) > 3 else ""
        raise ValueError(
            f"the model is in training mode ({', '.join(training[:3])}{more}): call model.eval() first, "
            "or clean and adversarial inputs mix in BatchNorm and dropout adds changes of its own"
        )


def layer_changes(
    model: nn.Module,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    layers: Sequence[str] | None = None,
    *,
    top_fraction: float = 0.01,
    batch_size: int = 64,
) -> list[LayerChange]:
    """Per-layer change of ``model``'s activations from clean ``x`` to adversarial ``x_adv``, input first.

    ``x``, ``x_adv``: the model's inputs (for advlab models (N, C, H, W) images in [0, 1]), same shape, on
    the model's device. ``layers``: module names as for :func:`features` (default: every leaf module).
    ``top_fraction``: the share of units whose squared change ``top_share`` sums (at least one unit).
    Returns one :class:`LayerChange` per captured layer in forward order, after the pseudo-layer
    ``"input"`` (depth 0); the formulas are in the module docstring.

    The model runs without gradients on batches of ``batch_size`` clean inputs concatenated with their
    adversarial versions (one forward of 2 * batch_size rows); each layer's statistics are taken inside
    its hook, so no activations are kept (and an in-place layer that follows cannot change them). The
    model must be in eval mode: in training mode BatchNorm would mix clean and adversarial statistics and
    dropout would add changes of its own (ValueError).
    """
    _check_inputs(model, x, x_adv, top_fraction, batch_size)
    modules = named_layers(model, layers)

    layers_seen: dict[str, _Layer] = {"input": _Layer("input", x[0].numel())}
    current: dict[str, _Batch] = {}
    rows = 0

    def measure(name: str, module: nn.Module, out: torch.Tensor) -> None:
        if out.ndim == 0 or out.shape[0] != 2 * rows:
            return
        current.pop(name, None)  # the last call wins, at its own position
        current[name] = _Batch.of(type(module).__name__, out[:rows], out[rows:], top_fraction)

    with torch.no_grad(), hooked(modules, measure):
        for i in range(0, len(x), batch_size):
            xb, ab = x[i : i + batch_size], x_adv[i : i + batch_size].to(x.dtype)
            rows = len(xb)
            layers_seen["input"].add(_Batch.of("input", xb, ab, top_fraction))
            current.clear()
            model(torch.cat([xb, ab]))
            for name, batch in current.items():
                if name not in layers_seen:
                    layers_seen[name] = _Layer(batch.kind, batch.units)
                layers_seen[name].add(batch)
    return [layer.result(name, depth) for depth, (name, layer) in enumerate(layers_seen.items())]


# ------------------------------------------------------------------------------------------------ tables
def changes_table(changes: Sequence[LayerChange]) -> list[dict[str, Any]]:
    """One plain dict per layer (str, int and float values; keys = :class:`LayerChange` fields) for CSV or JSON."""
    return [dataclasses.asdict(c) for c in changes]


def peak(changes: Sequence[LayerChange], metric: str = "rel_l2", exclude_input: bool = True) -> LayerChange:
    """The layer with the largest ``metric`` ("rel_l2", "rel_linf" or "top_share"); ties go to the earlier layer.

    ``exclude_input``: leave the ``"input"`` pseudo-layer (depth 0) out of the ranking.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, got {metric!r}")
    pool = [c for c in changes if not (exclude_input and c.depth == 0)]
    if not pool:
        raise ValueError("no layers to rank" + (" (only the input, which exclude_input leaves out)" if changes else ""))
    return max(pool, key=lambda c: getattr(c, metric))


def change_summary(changes: Sequence[LayerChange]) -> dict[str, Any]:
    """The headline numbers of a :func:`layer_changes` result: the number of layers, the layers where the
    relative L2 and the relative L-inf change peak (:func:`peak`: ``{"layer", "depth", "value"}``, the input
    left out) and the relative L2 change of the input (first) and of the output (last layer)."""
    top = {m: peak(changes, m) for m in ("rel_l2", "rel_linf")}
    return {
        "layers": len(changes),
        **{f"peak_{m}": {"layer": c.name, "depth": c.depth, "value": getattr(c, m)} for m, c in top.items()},
        "input_rel_l2": changes[0].rel_l2,
        "output_rel_l2": changes[-1].rel_l2,
    }
