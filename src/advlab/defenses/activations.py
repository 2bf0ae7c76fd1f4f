"""Defenses that act on what flows through the network: research note 003's feature-map clamp, and quantization.

Both return a NEW model (a deep copy in eval mode, on the input's device, keeping ``.info``, carrying
``.defense``); the input is never changed. Both insert ordinary modules into the copy, never hooks, so the
defended model can be saved, moved and attacked like any other.

Feature-map clamp (:func:`clamp_activations`), for each chosen layer l with output a_l:

    a_l <- clamp(a_l, lo_l, hi_l),   lo_l = P_{100-p}(a_l),  hi_l = P_p(a_l)   over calibration images,

P_q being the q-th percentile of all the layer's output values (linear interpolation between order
statistics, as numpy's default), in the layer's own activation units. Research note 003 found this costs some
accuracy and that PGD then raises the whole feature distribution instead of single large values.

Quantization (:func:`quantize`) to b bits, simulated in floating point ("fake quantization"):

    weights, per output channel c:  w_q = round(w / s_c) s_c,  s_c = max|w_c| / (2^(b-1) - 1)
    layer inputs (``activations=True``), per layer with calibrated max |x| = m:
        signed inputs:    x_q = clamp(round(x / s), -(2^(b-1) - 1), 2^(b-1) - 1) s,   s = m / (2^(b-1) - 1)
        inputs >= 0:      x_q = clamp(round(x / s), 0, 2^b - 1) s,                    s = m / (2^b - 1)

Integer kernels are not used: the values are those an integer network would compute (up to float rounding of
the accumulation), but the arithmetic stays float so that white-box attacks get gradients. Rounding has zero
gradient almost everywhere, which would only mask gradients (a broken attack, not a robust model); the
activation rounding therefore uses the straight-through estimator ``x + (x_q - x).detach()``: forward value
x_q, backward identity (BPDA, Athalye et al. 2018). Research note 003 found in-network quantization does not stop PGD.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from advlab.defenses.weights import (
    DefenseInfo,
    defended_copy,
    finish,
    number,
    output_axis,
    prunable_modules,
    prunable_weights,
    quantize_per_channel,
    replace_module,
)
from advlab.device import device_of
from advlab.errors import AdvlabError

#: module types whose outputs :func:`clamp_activations` clamps when no ``layers`` are named
ACTIVATION_TYPES: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.PReLU,
    nn.RReLU,
    nn.ELU,
    nn.SELU,
    nn.CELU,
    nn.GELU,
    nn.SiLU,
    nn.Mish,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Tanh,
    nn.Softplus,
    nn.Softsign,
    nn.Tanhshrink,
    nn.Threshold,
    nn.LogSigmoid,
)
#: calibration images per forward pass
CALIBRATION_BATCH = 256


# ---------------------------------------------------------------------------------------------- modules
class Clamped(nn.Module):
    """``clamp(inner(...), lo, hi)``: a module whose output is clamped elementwise (what :func:`clamp_activations`
    inserts).

    ``lo`` and ``hi`` are buffers (saved in the state dict, moved with the model). The gradient is the inner
    module's where ``lo < out < hi`` and zero where the clamp is active, as for any clamp.
    """

    lo: torch.Tensor
    hi: torch.Tensor

    def __init__(self, inner: nn.Module, lo: float, hi: float, device: torch.device | str | None = None) -> None:
        super().__init__()
        if not lo <= hi:
            raise AdvlabError(f"clamp bounds need lo <= hi, got ({lo}, {hi})")
        self.inner = inner
        device = device if device is not None else device_of(inner)
        self.register_buffer("lo", torch.tensor(float(lo), device=device))
        self.register_buffer("hi", torch.tensor(float(hi), device=device))

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        out = self.inner(*args, **kwargs)
        return torch.clamp(out, self.lo.to(out.device, out.dtype), self.hi.to(out.device, out.dtype))

    def extra_repr(self) -> str:
        return f"lo={float(self.lo):.6g}, hi={float(self.hi):.6g}"


def fake_quantize(x: torch.Tensor, scale: torch.Tensor | float, bits: int, signed: bool) -> torch.Tensor:
    """``x`` rounded to the b-bit grid ``k * scale`` (see the module docstring), with a straight-through gradient.

    Forward: ``clamp(round(x / scale), qmin, qmax) * scale`` with ``[qmin, qmax] = [-(2^(b-1) - 1), 2^(b-1) - 1]``
    (``signed``) or ``[0, 2^b - 1]``. Backward: identity (``x + (q - x).detach()``), so attacks see the float
    network's gradient (BPDA) instead of the zero gradient of rounding.
    """
    qmin, qmax = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    q = torch.clamp(torch.round(x / scale), qmin, qmax) * scale
    return x + (q - x).detach()


class QuantizedInput(nn.Module):
    """``layer(fake_quantize(x, scale, bits, signed), ...)``: a layer whose input is fake-quantized (what
    :func:`quantize` inserts)."""

    scale: torch.Tensor

    def __init__(
        self, layer: nn.Module, scale: float, bits: int, signed: bool, device: torch.device | str | None = None
    ) -> None:
        super().__init__()
        self.layer = layer
        self.bits, self.signed = int(bits), bool(signed)
        device = device if device is not None else device_of(layer)
        self.register_buffer("scale", torch.tensor(float(scale), device=device))

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.layer(fake_quantize(x, self.scale.to(x.device, x.dtype), self.bits, self.signed), *args, **kwargs)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, signed={self.signed}, scale={float(self.scale):.6g}"


# ---------------------------------------------------------------------------------------------- calibration
@contextmanager
def _capture(modules: Mapping[str, nn.Module], *, inputs: bool = False) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Record what each module outputs (or, with ``inputs``, its first positional input) on every call.

    Yields ``{name: [tensor per call]}`` (detached copies, filled as the model runs). The hooks are removed
    when the block ends, also on error: no hook outlives the ``with``.
    """
    store: dict[str, list[torch.Tensor]] = {name: [] for name in modules}
    handles = []

    def keep(name: str, value: Any) -> None:
        if not isinstance(value, torch.Tensor):
            raise AdvlabError(
                f"layer {name!r} {'takes' if inputs else 'returns'} a {type(value).__name__}, not a tensor"
            )
        store[name].append(value.detach().clone())

    try:
        for name, module in modules.items():
            if inputs:
                handles.append(
                    module.register_forward_pre_hook(lambda _m, args, n=name: keep(n, args[0] if args else None))
                )
            else:
                handles.append(module.register_forward_hook(lambda _m, _args, out, n=name: keep(n, out)))
        yield store
    finally:
        for h in handles:
            h.remove()


def _calibration_batch(calibration: Any, model: nn.Module) -> torch.Tensor:
    """The calibration images checked and moved to the model's device."""
    if not isinstance(calibration, torch.Tensor) or calibration.ndim < 2 or len(calibration) == 0:
        raise AdvlabError("calibration must be a non-empty batch of images (N, C, H, W) in [0, 1]")
    if not calibration.is_floating_point():
        raise AdvlabError(f"calibration must be float images in [0, 1], got dtype {calibration.dtype}")
    if float(calibration.min()) < 0 or float(calibration.max()) > 1:
        raise AdvlabError("calibration images must be in [0, 1]; advlab models carry their own normalization")
    return calibration.detach().to(device_of(model, calibration.device))


def _forward_all(model: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        for i in range(0, len(x), CALIBRATION_BATCH):
            model(x[i : i + CALIBRATION_BATCH])


def percentiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """The ``qs``-th percentiles (0..100) of all entries of ``values``, interpolating linearly between order
    statistics."""
    v = torch.sort(values.detach().flatten().float()).values
    n = v.numel()
    if n == 0:
        raise AdvlabError("no values to take percentiles of")
    out = []
    for q in qs:
        pos = q / 100 * (n - 1)
        i = min(int(math.floor(pos)), n - 1)
        j = min(i + 1, n - 1)
        out.append(float(v[i] + (v[j] - v[i]) * (pos - i)) if j != i else float(v[i]))
    return out


def _wrap(model: nn.Module, names: Sequence[str], make: Any) -> nn.Module:
    """Replace each named submodule m by ``make(name, m)``, deepest names first (the root ``""`` last)."""
    modules = dict(model.named_modules())
    for name in sorted(names, key=lambda n: -1 if n == "" else n.count("."), reverse=True):
        wrapped = make(name, modules[name])
        if name == "":
            wrapped.__dict__.update({k: v for k, v in model.__dict__.items() if k in ("info", "defense")})
            model = wrapped
        else:
            replace_module(model, name, wrapped)
    return model


# ---------------------------------------------------------------------------------------------- clamp
def clamp_activations(
    model: nn.Module,
    layers: Sequence[str] | None = None,
    bounds: Mapping[str, tuple[float, float]] | None = None,
    *,
    calibration: torch.Tensor | None = None,
    percentile: float = 99.9,
) -> nn.Module:
    """Research note 003's feature-map clamp: a copy whose chosen layers' outputs are clamped to ``[lo, hi]``.

    ``layers``: submodule names as in ``model.named_modules()`` (``"net.features.1"``, ``"layer4"``); default: the
    names in ``bounds`` if given, else every activation-function module (:data:`ACTIVATION_TYPES`: nn.ReLU,
    nn.ReLU6, nn.GELU, ...). A module called several times (ResNet blocks reuse their ReLU) is clamped on every call.
    ``bounds``: ``{name: (lo, hi)}`` in activation units; layers without bounds are calibrated on ``calibration``
    (images (N, C, H, W) in [0, 1]): lo and hi are the ``100 - percentile`` and ``percentile`` percentiles of all
    values that layer outputs (percentile in [50, 100]; 100 gives the observed min and max). All layers are
    calibrated in one pass of the undefended copy. Calibration keeps every output value in memory: a few hundred
    images are plenty.

    Each layer m becomes ``Clamped(m, lo, hi)`` in the copy, so parameter names under a clamped layer gain
    ``.inner`` (clamping parameter-free activations, the default, renames nothing).

    ``defense.changed_fraction``: with ``calibration``, the fraction of the clamped layers' output values on the
    calibration images (through the defended model, all layers and calls pooled) that the clamp changes; 0.0
    when only ``bounds`` are given (nothing to measure on). ``details``: ``bounds`` ``{name: [lo, hi]}``,
    ``percentile`` (None when no layer was calibrated) and ``changed`` per layer (with calibration).
    """
    p = number(percentile, "percentile")
    if not 50 <= p <= 100:
        raise AdvlabError(
            f"percentile must be in [50, 100] (hi = that percentile, lo = 100 minus it), got {percentile!r}"
        )
    given = dict(bounds or {})
    defended = defended_copy(model)
    modules = dict(defended.named_modules())
    names = _clamp_layers(modules, layers, given)
    checked = _given_bounds(given)
    missing = [n for n in names if n not in checked]
    if missing and calibration is None:
        raise AdvlabError(
            f"clamp_activations needs calibration images to set the bounds of {missing[0]!r} (or give bounds=)"
        )
    x = _calibration_batch(calibration, defended) if calibration is not None else None
    if missing:
        assert x is not None
        checked.update(_calibrated_bounds(defended, {n: modules[n] for n in missing}, x, p))
    wrappers: dict[str, Clamped] = {}
    device = device_of(defended, x.device if x is not None else "cpu")

    def make(name: str, m: nn.Module) -> Clamped:
        wrappers[name] = Clamped(m, *checked[name], device=device)
        return wrappers[name]

    defended = _wrap(defended, names, make)
    details: dict[str, Any] = {"bounds": {n: list(checked[n]) for n in names}, "percentile": p if missing else None}
    changed_fraction = 0.0
    if x is not None:
        changed_fraction, details["changed"] = _clamped_fractions(defended, {n: wrappers[n] for n in names}, checked, x)
    info = DefenseInfo("clamp_activations", p if missing else "bounds", changed_fraction, details)
    return finish(defended, model, info)


def _clamp_layers(
    modules: Mapping[str, nn.Module], layers: Sequence[str] | str | None, given: Mapping[str, Any]
) -> list[str]:
    """The names of the layers to clamp: ``layers`` (deduplicated), else the names in ``given``, else every
    activation module; each checked to exist, and every ``given`` name to be among them."""
    if layers is None:
        names = list(given) if given else [n for n, m in modules.items() if isinstance(m, ACTIVATION_TYPES)]
        if not names:
            raise AdvlabError(
                "clamp_activations: the model has no activation modules (nn.ReLU, ...); "
                "name the layers to clamp with layers=[...]"
            )
    else:
        names = list(dict.fromkeys([layers] if isinstance(layers, str) else layers))
        if not names:
            raise AdvlabError("clamp_activations: layers is empty; name at least one layer or pass layers=None")
    for n in [*names, *given]:
        if n not in modules:
            near = ", ".join(repr(k) for k in list(modules)[1:6])
            raise AdvlabError(f"unknown layer {n!r}; use names from model.named_modules(), e.g. {near}")
    if stray := [n for n in given if n not in names]:
        raise AdvlabError(f"bounds given for layer {stray[0]!r}, which is not in layers")
    return names


def _given_bounds(given: Mapping[str, Any]) -> dict[str, tuple[float, float]]:
    """``{name: (lo, hi)}`` as floats, checked to be pairs with lo <= hi."""
    checked: dict[str, tuple[float, float]] = {}
    for n, b in given.items():
        if not isinstance(b, Sequence) or len(b) != 2:
            raise AdvlabError(f"bounds for {n!r} must be a pair (lo, hi), got {b!r}")
        lo, hi = number(b[0], f"lower bound of {n!r}"), number(b[1], f"upper bound of {n!r}")
        if lo > hi:
            raise AdvlabError(f"bounds for {n!r} need lo <= hi, got ({lo}, {hi})")
        checked[n] = (lo, hi)
    return checked


def _calibrated_bounds(
    model: nn.Module, modules: Mapping[str, nn.Module], x: torch.Tensor, p: float
) -> dict[str, tuple[float, float]]:
    """``{name: (P_{100-p}, P_p)}`` of every output value of each module over one pass of ``model`` on ``x``."""
    out: dict[str, tuple[float, float]] = {}
    with _capture(modules) as acts:
        _forward_all(model, x)
    for n in modules:
        if not acts[n]:
            raise AdvlabError(f"layer {n!r} is never called by the model's forward; it cannot be calibrated")
        lo, hi = percentiles(torch.cat([a.flatten() for a in acts[n]]), (100 - p, p))
        out[n] = (lo, hi)
    return out


def _clamped_fractions(
    defended: nn.Module, wrappers: Mapping[str, Clamped], bounds: Mapping[str, tuple[float, float]], x: torch.Tensor
) -> tuple[float, dict[str, float]]:
    """The fraction of the clamped layers' output values on ``x`` (through ``defended``) outside their bounds:
    ``(pooled over all layers and calls, {name: per layer})``."""
    with _capture({n: w.inner for n, w in wrappers.items()}) as acts:
        _forward_all(defended, x)
    changed: dict[str, float] = {}
    hit = seen = 0
    for n in wrappers:
        lo, hi = bounds[n]
        k = sum(int(((a < lo) | (a > hi)).sum()) for a in acts[n])
        t = sum(a.numel() for a in acts[n])
        changed[n] = k / t if t else 0.0
        hit, seen = hit + k, seen + t
    return (hit / seen if seen else 0.0), changed


# ---------------------------------------------------------------------------------------------- quantization
def quantize(
    model: nn.Module, bits: int = 8, *, activations: bool = False, calibration: torch.Tensor | None = None
) -> nn.Module:
    """Fake-quantize a copy of ``model`` to ``bits`` (2..16): its weights, and with ``activations`` its layers' inputs.

    Weights: symmetric, per output channel, of every :func:`~advlab.defenses.prunable_weights` entry (formula in the
    module docstring), stored back as floats on the grid: channel c takes at most ``2^bits - 1`` values.
    ``activations=True``: the input of every Conv/Linear layer is rounded to a per-layer grid whose scale comes
    from the max |input| that layer sees on ``calibration`` (images (N, C, H, W) in [0, 1], required then), measured
    on the weight-quantized copy; unsigned when the layer never saw a negative input, symmetric otherwise; values
    past the calibrated range saturate. The rounding passes gradients straight through (BPDA). Each layer m
    becomes ``QuantizedInput(m, ...)``, so its parameter names gain ``.layer``. ``calibration`` is ignored
    without ``activations``.

    ``defense.changed_fraction``: the fraction of prunable weights whose value changed. ``details``: ``bits``,
    ``activations``, and with activations ``inputs`` ``{layer name: {"scale", "signed"}}``.
    """
    b = _bits(bits)
    if activations and calibration is None:
        raise AdvlabError(
            "quantize(activations=True) needs calibration images (N, C, H, W) in [0, 1] to set the input scales"
        )
    defended = defended_copy(model)
    layers = prunable_modules(defended)
    if not layers:
        raise AdvlabError("quantize: the model has no Conv/Linear weights to quantize")
    changed = total = 0
    with torch.no_grad():
        for (_, m), (_, w) in zip(layers, prunable_weights(defended), strict=True):  # one list, typed twice
            wq = quantize_per_channel(w.detach(), b, output_axis(m))
            changed += int((wq != w).sum())
            total += w.numel()
            w.copy_(wq)
    details: dict[str, Any] = {"bits": b, "activations": bool(activations)}
    if activations:
        x = _calibration_batch(calibration, defended)
        with _capture(dict(layers), inputs=True) as acts:
            _forward_all(defended, x)
        inputs: dict[str, dict[str, Any]] = {}
        for name, _ in layers:
            seen = acts[name]
            amax = max((float(a.abs().max()) for a in seen if a.numel()), default=0.0)
            signed = any(a.numel() and float(a.min()) < 0 for a in seen)
            levels = 2 ** (b - 1) - 1 if signed else 2**b - 1
            inputs[name] = {"scale": amax / levels if amax > 0 else 1.0, "signed": signed}
        del acts
        device = device_of(defended)
        defended = _wrap(
            defended,
            [n for n, _ in layers],
            lambda n, m: QuantizedInput(m, inputs[n]["scale"], b, inputs[n]["signed"], device),
        )
        details["inputs"] = inputs
    return finish(defended, model, DefenseInfo("quantize", b, changed / total, details))


def _bits(bits: Any) -> int:
    v = number(bits, "bits")
    if not v.is_integer() or not 2 <= v <= 16:
        raise AdvlabError(f"bits must be an integer from 2 to 16, got {bits!r}")
    return int(v)
