"""Defenses that edit a classifier's weights: research note 003's E-prune, S-prune and R-perturbation.

Research note 003 asks whether crude weight surgery protects a network against PGD (its answer: probably not). Each
function here returns a NEW model (a deep copy, in eval mode, on the input's device, keeping ``.info``) and
never touches the one it was given; the copy carries ``.defense``, a :class:`DefenseInfo`.

Which weights: :func:`prunable_weights`, the ``.weight`` of every ``nn.Conv{1,2,3}d``, ``nn.ConvTranspose{1,2,3}d``
and ``nn.Linear`` module. Biases, BatchNorm affine parameters and running statistics are left alone. Weights
are in the network's own units (no normalization), so E, S * sigma and R are in those units too.

    E-prune  (:func:`prune_small`):  w <- 0 where |w| < E                      (or the smallest fraction ``ratio``)
    S-prune  (:func:`clamp_large`):  w <- clamp(w, mu_l - S sigma_l, mu_l + S sigma_l)   per layer l
    R-noise  (:func:`perturb`):      w <- w + u,  u ~ U[-R, R] i.i.d.

``changed_fraction`` is the seed's "prune ratio": the fraction of all prunable weights that the rule set.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlab.errors import AdvlabError

#: module types whose ``.weight`` the weight defenses edit (see :func:`prunable_weights`)
PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Conv1d,
    nn.Conv2d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Linear,
)
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class DefenseInfo:
    """What a defense did, attached to the defended model as ``model.defense``.

    ``name``: the defense (``"prune_small"``, ``"clamp_large"``, ``"perturb"``, ``"quantize"``,
    ``"clamp_activations"``).
    ``setting``: its main value (E or ratio, S, R, bits, percentile or ``"bounds"``).
    ``changed_fraction``: in [0, 1], what the defense changed (weights or activations; each function says which).
    ``details``: JSON-friendly extras (per-layer numbers, thresholds, bounds, scales); ``details["previous"]`` holds
    the input model's own ``.defense`` (as a dict) when it was itself defended.
    """

    name: str
    setting: float | int | str
    changed_fraction: float
    details: dict[str, Any] = field(default_factory=dict)


def prunable_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for every Conv*d, ConvTranspose*d and Linear module, in ``named_modules()`` order."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, PRUNABLE_TYPES) and isinstance(getattr(m, "weight", None), nn.Parameter)
    ]


def prunable_weights(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The weights every weight defense edits: ``(parameter name, weight)`` of each Conv*d / ConvTranspose*d / Linear.

    Names are as in ``model.named_parameters()`` (``"net.features.0.weight"``). Biases, normalization layers
    (BatchNorm scale and shift) and buffers are not included: research note 003 prunes the connection weights.
    A module registered twice is listed once.
    """
    return [
        (f"{name}.weight" if name else "weight", w)
        for name, m in prunable_modules(model)
        if isinstance(w := m.weight, nn.Parameter)  # always: prunable_modules checked it
    ]


# ---------------------------------------------------------------------------------------------- shared helpers
def defended_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` in eval mode (the input keeps its mode, flags and hooks as they were)."""
    if not isinstance(model, nn.Module):
        raise AdvlabError(f"expected a torch nn.Module, got {type(model).__name__}")
    return copy.deepcopy(model).eval()


def finish(defended: nn.Module, original: nn.Module, info: DefenseInfo) -> nn.Module:
    """Attach ``info`` (and the input's own ``.defense``, as a dict, in ``details["previous"]``) to the eval-mode
    copy."""
    previous = getattr(original, "defense", None)
    if isinstance(previous, DefenseInfo):
        info = DefenseInfo(
            info.name, info.setting, info.changed_fraction, {**info.details, "previous": dataclasses.asdict(previous)}
        )
    defended.eval()
    defended.__dict__["defense"] = info  # a plain attribute (not a module or tensor), where nn.Module keeps those
    return defended


def defense_info(model: nn.Module) -> DefenseInfo | None:
    """What the defense that made ``model`` did (its ``.defense``), or None for a model no defense made."""
    info = getattr(model, "defense", None)
    return info if isinstance(info, DefenseInfo) else None


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` where the submodule ``name`` (a ``named_modules()`` name, not ``""``) is registered."""
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)


def number(value: Any, what: str) -> float:
    """``value`` as a finite float, or a one-line ValueError naming ``what``."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise AdvlabError(f"{what} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not math.isfinite(v):
        raise AdvlabError(f"{what} must be a finite number, got {value!r}")
    return v


def _weights_or_fail(model: nn.Module, defense: str) -> list[tuple[str, nn.Parameter]]:
    weights = prunable_weights(model)
    if not weights:
        raise AdvlabError(f"{defense}: the model has no Conv/Linear weights to edit")
    return weights


def _total(weights: list[tuple[str, nn.Parameter]]) -> int:
    return sum(p.numel() for _, p in weights)


# ---------------------------------------------------------------------------------------------- E-prune
def prune_small(
    model: nn.Module, E: float | None = None, *, ratio: float | None = None, scope: str = "global"
) -> nn.Module:
    """Research note 003's E-prune: a copy of ``model`` with every small weight set to zero.

    ``E``: zero each prunable weight with ``|w| < E`` (E >= 0, in weight units; E = 0 prunes nothing).
    ``ratio``: instead of E, zero exactly ``round(ratio * n)`` weights of smallest magnitude (ratio in [0, 1]),
    with n counted over all layers (``scope="global"``: one magnitude threshold for the whole network) or in
    each layer separately (``scope="layer"``: every layer loses the same fraction). Give exactly one of the two.
    Ties at the threshold are broken by position, so the count is exact.

    ``defense.changed_fraction``: the seed's "prune ratio", the fraction of prunable weights the rule selects
    (weights that were already exactly zero count when selected). ``details``: ``mode`` ("E" or "ratio"),
    ``scope``, ``threshold`` (E, or for ``ratio`` the largest |w| zeroed; per layer with ``scope="layer"``) and
    ``layers`` (fraction zeroed per weight name).
    """
    if (E is None) == (ratio is None):
        raise AdvlabError(f"prune_small needs exactly one of E and ratio, got E={E!r}, ratio={ratio!r}")
    if scope not in SCOPES:
        raise AdvlabError(f"scope must be one of {', '.join(SCOPES)}, got {scope!r}")
    if E is not None:
        e = number(E, "E")
        if e < 0:
            raise AdvlabError(f"E must be >= 0 (a magnitude threshold), got {E!r}")
    else:
        r = number(ratio, "ratio")
        if not 0 <= r <= 1:
            raise AdvlabError(f"ratio must be in [0, 1] (a fraction of the weights), got {ratio!r}")
    defended = defended_copy(model)
    weights = _weights_or_fail(defended, "prune_small")
    masks = _small_masks(weights, e, None, scope) if E is not None else _small_masks(weights, None, r, scope)
    zeroed = 0
    layers: dict[str, float] = {}
    largest: dict[str, float] = {}
    with torch.no_grad():
        for (name, p), mask in zip(weights, masks, strict=True):
            k = int(mask.sum())
            zeroed += k
            layers[name] = k / max(1, p.numel())
            largest[name] = float(p.detach().abs()[mask].max()) if k else 0.0
            p.masked_fill_(mask, 0.0)
    threshold: float | dict[str, float] = (
        e if E is not None else max(largest.values()) if scope == "global" else largest
    )
    details = {"mode": "E" if E is not None else "ratio", "scope": scope, "threshold": threshold, "layers": layers}
    setting = e if E is not None else r
    return finish(defended, model, DefenseInfo("prune_small", setting, zeroed / _total(weights), details))


def _small_masks(
    weights: list[tuple[str, nn.Parameter]], E: float | None, ratio: float | None, scope: str
) -> list[torch.Tensor]:
    """Boolean masks (one per weight) of the weights E-prune sets to zero."""
    mags = [p.detach().abs() for _, p in weights]
    if E is not None:
        return [m < E for m in mags]
    assert ratio is not None
    if scope == "layer":
        return [_smallest(m.flatten(), round(ratio * m.numel())).view_as(m) for m in mags]
    flat = torch.cat([m.flatten().to(mags[0].device, torch.float32) for m in mags])
    chosen = _smallest(flat, round(ratio * flat.numel()))
    masks, start = [], 0
    for m in mags:
        masks.append(chosen[start : start + m.numel()].view_as(m).to(m.device))
        start += m.numel()
    return masks


def _smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Mask of exactly ``k`` smallest entries of the 1-D ``values`` (stable: earlier positions win ties)."""
    mask = torch.zeros(values.numel(), dtype=torch.bool, device=values.device)
    if k > 0:
        order = torch.sort(values, stable=True).indices
        mask[order[:k]] = True
    return mask


# ---------------------------------------------------------------------------------------------- S-prune
def clamp_large(model: nn.Module, S: float) -> nn.Module:
    """Research note 003's S-prune: a copy with each layer's weights clamped to ``[mu - S sigma, mu + S sigma]``.

    ``mu`` and ``sigma`` are the mean and the (population) standard deviation of that layer's weight tensor
    before clamping; ``S > 0`` is in units of sigma. The seed found accuracy collapses at S = 3 on ResNet-18:
    a few large weights carry the decision.

    ``defense.changed_fraction``: fraction of prunable weights that were outside the interval (clamped).
    ``details``: ``layers``, per weight name ``{"mu", "sigma", "clamped"}`` (clamped = fraction in that layer).
    """
    s = number(S, "S")
    if s <= 0:
        raise AdvlabError(f"S must be > 0 (in units of each layer's weight std), got {S!r}")
    defended = defended_copy(model)
    weights = _weights_or_fail(defended, "clamp_large")
    clamped = 0
    layers: dict[str, dict[str, float]] = {}
    with torch.no_grad():
        for name, p in weights:
            w = p.detach()
            sigma, mu = torch.std_mean(w.float(), correction=0)
            lo, hi = float(mu - s * sigma), float(mu + s * sigma)
            outside = int(((w < lo) | (w > hi)).sum())
            p.clamp_(lo, hi)
            clamped += outside
            layers[name] = {"mu": float(mu), "sigma": float(sigma), "clamped": outside / max(1, w.numel())}
    return finish(defended, model, DefenseInfo("clamp_large", s, clamped / _total(weights), {"layers": layers}))


# ---------------------------------------------------------------------------------------------- R-noise
def perturb(model: nn.Module, R: float, seed: int = 0) -> nn.Module:
    """Research note 003's R-perturbation: a copy with ``U[-R, R]`` noise added to every prunable weight.

    The noise is drawn on the CPU from ``torch.Generator().manual_seed(seed)``, layer by layer in
    :func:`prunable_weights` order, then moved to the weight's device: the same seed gives the same model on
    any device. ``R >= 0`` is in weight units (the seed's R = 1e-1 destroyed a ResNet-18).

    ``defense.changed_fraction``: 1.0 (every weight moves, the seed's "100%"), 0.0 for R = 0.
    ``details``: ``seed``.
    """
    r = number(R, "R")
    if r < 0:
        raise AdvlabError(f"R must be >= 0 (the half-width of the uniform noise), got {R!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise AdvlabError(f"seed must be an int, got {seed!r}")
    defended = defended_copy(model)
    weights = _weights_or_fail(defended, "perturb")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in weights:
            u = (torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 - 1) * r
            p.add_(u.to(p.device, p.dtype))
    return finish(defended, model, DefenseInfo("perturb", r, 1.0 if r > 0 else 0.0, {"seed": seed}))


# ---------------------------------------------------------------------------------------------- weight grid
def output_axis(module: nn.Module) -> int:
    """The axis of ``module.weight`` that indexes output channels: 1 for ConvTranspose*d, else 0."""
    return 1 if isinstance(module, nn.ConvTranspose1d | nn.ConvTranspose2d | nn.ConvTranspose3d) else 0


def quantize_per_channel(w: torch.Tensor, bits: int, axis: int = 0) -> torch.Tensor:
    """Symmetric per-channel rounding: ``round(w / s) * s`` with ``s = max|w_c| / (2^(bits-1) - 1)`` per channel c.

    Each channel (slice along ``axis``) takes at most ``2^bits - 1`` values, ``k * s`` for integer
    ``|k| <= 2^(bits-1) - 1``; an all-zero channel stays zero.
    """
    qmax = 2 ** (bits - 1) - 1
    dims = [d for d in range(w.ndim) if d != axis]
    amax = w.detach().abs().amax(dim=dims, keepdim=True) if dims else w.detach().abs()
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    return torch.clamp(torch.round(w / scale), -qmax, qmax) * scale
