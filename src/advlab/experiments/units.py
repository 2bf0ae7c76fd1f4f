"""Are single units special? Szegedy et al. 2013 (section 3), as a measurement.

For a layer with activation ``phi(x) in R^D`` (flattened per image), Szegedy et al. compare the images of a
data set ``I`` that most activate one unit,

    x' = argmax_{x in I} <phi(x), e_i>            (e_i: the i-th standard basis vector, "unit i")

with those that most activate a random direction,

    x' = argmax_{x in I} <phi(x), v>,   v ~ uniform on the unit sphere S^{D-1}

and find both sets equally "semantically coherent": the semantic information lies in the space of
activations rather than in its coordinates. :func:`unit_top_images` returns the top-``k`` images (indices
into ``x`` and the projections ``<phi(x), .>``, in the layer's units) for the chosen units and for
``directions`` random directions drawn from a seeded generator (``v = g / ||g||_2`` with
``g ~ N(0, I_D)``, which is uniform on the sphere).

"Coherent" is made a number by :func:`label_purity`: the fraction of a probe's top-``k`` images that share
its most common label, ``max_c |{j : y_j = c}| / k`` in ``[1/k, 1]``. Its chance level is NOT ``1 /
classes``: ``k`` images drawn at random already share a majority label ``E[max_c count_c] / k`` of the
time (about 0.29 for ``k = 8`` on the 10 balanced digit classes); :func:`chance_purity` estimates it for
the data at hand by drawing random ``k``-subsets.

Layers:
  * ``layer`` is a name from ``model.named_modules()``: its output is used. ``"NAME:input"`` uses the
    input of module ``NAME`` instead (captured by a forward pre-hook); the default, ``None``, is the
    penultimate representation: the input of the last ``nn.Linear`` in ``named_modules()`` order
    (for advlab's digits-cnn ``"net.classifier.3:input"``, the 128 ReLU outputs before the logits).
  * ``pool=True`` averages a conv layer's (N, C, H, W) output over H and W, so that "unit" means a
    channel (D = C) rather than one channel at one position (D = C * H * W, the default). Outputs with
    fewer than 3 dimensions are used as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab.hooks import features, first_tensor

#: the suffix that asks for a module's input instead of its output
INPUT_SUFFIX = ":input"


@dataclass(frozen=True)
class Probe:
    """One probe of a layer: a unit ``e_i`` (``kind="unit"``, ``index`` = i) or a random direction
    (``kind="direction"``, ``index`` = its number, the row of :attr:`UnitAnalysis.directions`).

    ``images``: (k,) indices into the analysed batch, by decreasing ``values``; ``values``: (k,) the
    projections ``<phi(x), e_i>`` = ``phi_i(x)`` or ``<phi(x), v>``, in the layer's activation units.
    ``constant``: the probe's projection is the same on every image (a dead ReLU unit), so its top-k is
    an arbitrary tie-break and says nothing.
    """

    kind: str
    index: int
    images: torch.Tensor
    values: torch.Tensor
    constant: bool

    @property
    def name(self) -> str:
        """``"unit 17"`` or ``"direction 3"``."""
        return f"{self.kind} {self.index}"


@dataclass(frozen=True)
class UnitAnalysis:
    """What :func:`unit_top_images` found: the layer, its width, one :class:`Probe` per unit and per direction.

    ``layer``: the resolved layer spec (``"NAME"`` or ``"NAME:input"``); ``dim``: D, the values per image
    after flattening (or channels with ``pool``); ``directions``: (R, D) the random unit vectors, float32
    on the CPU; ``seed``: the generator seed they came from.
    """

    layer: str
    dim: int
    pool: bool
    k: int
    seed: int
    units: list[Probe]
    random: list[Probe]
    directions: torch.Tensor

    @property
    def probes(self) -> list[Probe]:
        """The units, then the random directions."""
        return [*self.units, *self.random]


# ------------------------------------------------------------------------------------------------ layers
def _linear_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def default_layer(model: nn.Module) -> str:
    """The penultimate representation: ``"NAME:input"`` for the last ``nn.Linear`` module of ``model``.

    ValueError when the model has no ``nn.Linear`` (then name a layer).
    """
    names = _linear_names(model)
    if not names:
        raise ValueError(
            "the model has no nn.Linear layer, so there is no default penultimate layer: name one with layer="
        )
    return names[-1] + INPUT_SUFFIX


@contextmanager
def _inputs_of(model: nn.Module, name: str) -> Iterator[dict[str, torch.Tensor]]:
    """Capture the (first tensor) input of module ``name`` on each forward, as ``acts[name]``; hook always removed."""
    modules = dict(model.named_modules())
    if name not in modules:
        some = ", ".join(repr(n) for n in list(modules)[1:6])
        raise ValueError(f"unknown layer name {name!r}: names come from model.named_modules() (e.g. {some})")
    acts: dict[str, torch.Tensor] = {}

    def hook(mod: nn.Module, args: Any) -> None:
        t = first_tensor(args)
        if t is not None:
            acts[name] = t.detach().clone()

    handle = modules[name].register_forward_pre_hook(hook)
    try:
        yield acts
    finally:
        handle.remove()


def activations(
    model: nn.Module, x: torch.Tensor, layer: str | None = None, *, pool: bool = False, batch_size: int = 256
) -> tuple[str, torch.Tensor]:
    """``(resolved layer spec, phi(x))``: the layer's activations as an (N, D) float32 tensor on ``x``'s device.

    ``x``: (N, C, H, W) model inputs ([0, 1] images for advlab models). ``layer``: a module name (its
    output), ``"NAME:input"`` (its input) or None (the input of the last ``nn.Linear``). ``pool``:
    average (N, C, H, W) outputs over H, W (``phi_c(x) = mean_{h,w} a_{c,h,w}(x)``); otherwise each
    image's output is flattened. The model runs without gradients in batches of ``batch_size``; it
    should be in eval mode (BatchNorm and dropout would otherwise make phi depend on the batch).
    ValueError for an unknown layer or a layer that the forward never reaches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    spec = default_layer(model) if layer is None else layer
    is_input = spec.endswith(INPUT_SUFFIX)
    name = spec[: -len(INPUT_SUFFIX)] if is_input else spec
    chunks = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            with _inputs_of(model, name) if is_input else features(model, [name]) as acts:
                model(x[i : i + batch_size])
            if name not in acts:
                raise ValueError(f"layer {spec!r} produced no tensor in the forward pass (is the module used?)")
            a = acts[name]
            if a.ndim == 0 or a.shape[0] != len(x[i : i + batch_size]):
                raise ValueError(f"layer {spec!r} gives shape {tuple(a.shape)}, not one row per image")
            if pool and a.ndim >= 3:
                a = a.flatten(2).mean(2)
            chunks.append(a.reshape(a.shape[0], -1).float())
    if not chunks:
        raise ValueError("x is empty: nothing to analyse")
    return spec, torch.cat(chunks)


# ------------------------------------------------------------------------------------------------ probes
def random_directions(dim: int, count: int, seed: int) -> torch.Tensor:
    """(count, dim) float32 rows uniform on the unit sphere: ``v = g / ||g||_2``, ``g ~ N(0, I)``, drawn from
    ``torch.Generator().manual_seed(seed)``.

    Deterministic on every machine (drawn on the CPU); the same seed gives the same directions.
    """
    if dim < 1 or count < 0:
        raise ValueError(f"need dim >= 1 and count >= 0, got dim={dim}, count={count}")
    gen = torch.Generator().manual_seed(seed)
    g = torch.randn(count, dim, generator=gen, dtype=torch.float64)
    return (g / g.norm(dim=1, keepdim=True)).float()


def most_varying_units(phi: torch.Tensor, n: int) -> list[int]:
    """The ``n`` units with the largest variance of ``phi_i(x)`` over the images (ties: lower index first).

    A ReLU layer has dead units (zero on every image) whose top images are an arbitrary tie-break; the
    most varying units are the ones worth looking at. Returned in decreasing order of variance.
    """
    if not 1 <= n <= phi.shape[1]:
        raise ValueError(f"can pick 1 to {phi.shape[1]} units of this layer, not {n}")
    var = phi.double().var(0, correction=0)
    order = sorted(range(phi.shape[1]), key=lambda i: (-float(var[i]), i))
    return order[:n]


def _top(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per column of (N, P) ``scores``: the k largest values and their rows, (P, k) each, decreasing; ties
    to the lower row (a stable sort), so the result does not depend on the backend's top-k."""
    order = torch.sort(scores.T, dim=1, descending=True, stable=True)
    return order.indices[:, :k].cpu(), order.values[:, :k].cpu()


def unit_top_images(
    model: nn.Module,
    x: torch.Tensor,
    layer: str | None = None,
    units: Sequence[int] | None = None,
    *,
    directions: int = 8,
    k: int = 8,
    seed: int = 0,
    pool: bool = False,
    top_units: int = 8,
    batch_size: int = 256,
) -> UnitAnalysis:
    """The top-``k`` images of ``x`` for units and for random directions of a layer (Szegedy et al. 2013, sec. 3).

    ``x``: (N, C, H, W) model inputs, N >= k. ``layer``, ``pool``: as for :func:`activations`. ``units``:
    unit indices in ``[0, D)``; None picks the ``top_units`` most varying units (:func:`most_varying_units`).
    ``directions``: how many random unit vectors ``v`` (:func:`random_directions` with ``seed``). For each
    probe ``p`` (``e_i`` or ``v``), the images are ranked by ``<phi(x), p>`` (layer units), largest first,
    ties to the lower index. ValueError for an unknown layer, a unit out of range, or k not in [1, N].
    """
    if k < 1 or k > len(x):
        raise ValueError(f"k must be in 1..{len(x)} (the number of images), got {k}")
    spec, phi = activations(model, x, layer, pool=pool, batch_size=batch_size)
    return probe_activations(
        phi, units, directions=directions, k=k, seed=seed, top_units=top_units, layer=spec, pool=pool
    )


def probe_activations(
    phi: torch.Tensor,
    units: Sequence[int] | None = None,
    *,
    directions: int = 8,
    k: int = 8,
    seed: int = 0,
    top_units: int = 8,
    layer: str = "",
    pool: bool = False,
) -> UnitAnalysis:
    """:func:`unit_top_images` on activations already computed: ``phi`` (N, D) from :func:`activations`.

    ``layer`` and ``pool`` are only recorded in the result (they say where ``phi`` came from).
    """
    n, dim = phi.shape
    if k < 1 or k > n:
        raise ValueError(f"k must be in 1..{n} (the number of images), got {k}")
    if directions < 0:
        raise ValueError(f"directions must be >= 0, got {directions}")
    if units is None:
        chosen = most_varying_units(phi, min(top_units, dim))
    else:
        chosen = [int(u) for u in units]
        bad = [u for u in chosen if not 0 <= u < dim]
        if bad:
            raise ValueError(f"unit index {bad[0]} out of range: layer {layer!r} has {dim} units (0..{dim - 1})")
    v = random_directions(dim, directions, seed)
    spread = phi.amax(0) - phi.amin(0)

    unit_probes: list[Probe] = []
    if chosen:
        idx, val = _top(phi[:, chosen], k)
        unit_probes = [Probe("unit", u, idx[j], val[j], bool(spread[u] == 0)) for j, u in enumerate(chosen)]
    dir_probes: list[Probe] = []
    if directions:
        proj = phi @ v.to(phi.device).T  # (N, R): <phi(x), v_r>
        idx, val = _top(proj, k)
        flat = (proj.amax(0) - proj.amin(0)) == 0
        dir_probes = [Probe("direction", r, idx[r], val[r], bool(flat[r])) for r in range(directions)]
    return UnitAnalysis(
        layer=layer, dim=dim, pool=pool, k=k, seed=seed, units=unit_probes, random=dir_probes, directions=v
    )


# ------------------------------------------------------------------------------------------------ coherence
def label_purity(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per row of ``images`` (P, k) image indices: ``max_c |{j : labels[images_j] = c}| / k``, in [1/k, 1].

    The fraction of a probe's top-k images that share its most common label (labels: (N,) class indices).
    """
    if images.ndim == 1:
        images = images[None]
    lab = labels.cpu()[images.cpu()]  # (P, k)
    k = lab.shape[1]
    same = (lab[:, :, None] == lab[:, None, :]).sum(2)  # (P, k): how many of the k share label j's class
    return same.amax(1).double() / k


def majority_label(images: torch.Tensor, labels: torch.Tensor) -> int:
    """The most common label among ``labels[images]`` (ties: the smallest label)."""
    lab = labels.cpu()[images.cpu()].tolist()
    return min(set(lab), key=lambda c: (-lab.count(c), c))


def chance_purity(labels: torch.Tensor, k: int, *, samples: int = 2000, seed: int = 0) -> float:
    """The label purity of ``k`` images drawn at random (without replacement), averaged over ``samples`` draws.

    What a probe with no relation to the labels scores: ``E[max_c count_c] / k`` for the label mix of
    ``labels`` (about 0.29 for k = 8 on 10 balanced classes, far above ``1 / classes``).
    """
    n = len(labels)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in 1..{n}, got {k}")
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    gen = torch.Generator().manual_seed(seed)
    chunk = max(1, 10_000_000 // n)  # rows of random keys per block: bounded memory for large data sets
    total = 0.0
    for start in range(0, samples, chunk):
        rows = min(chunk, samples - start)
        draws = torch.rand(rows, n, generator=gen).argsort(1)[:, :k]  # k distinct images per row
        total += float(label_purity(draws, labels).sum())
    return total / samples


def purities(analysis: UnitAnalysis, labels: torch.Tensor) -> dict[str, list[float]]:
    """``{"units": [...], "directions": [...]}``: :func:`label_purity` of every probe, in the analysis' order."""

    def of(probes: list[Probe]) -> list[float]:
        return label_purity(torch.stack([p.images for p in probes]), labels).tolist() if probes else []

    return {"units": of(analysis.units), "directions": of(analysis.random)}


def purity_summary(analysis: UnitAnalysis, labels: torch.Tensor) -> dict[str, Any]:
    """Szegedy's claim as numbers: mean :func:`label_purity` of the units and of the random directions.

    Constant probes (dead units) are left out of the means, since their top-k is a tie-break; returns
    ``unit_purity_mean``, ``direction_purity_mean`` (NaN when there is no probe of that kind),
    ``direction_minus_unit`` and the ``constant_units`` left out.
    """
    p = purities(analysis, labels)
    live_u = [q for q, probe in zip(p["units"], analysis.units, strict=True) if not probe.constant]
    live_d = [q for q, probe in zip(p["directions"], analysis.random, strict=True) if not probe.constant]
    mean = lambda v: sum(v) / len(v) if v else float("nan")  # noqa: E731
    u, d = mean(live_u), mean(live_d)
    return {
        "unit_purity_mean": u,
        "direction_purity_mean": d,
        "direction_minus_unit": d - u,
        "constant_units": [probe.index for probe in analysis.units if probe.constant],
    }


def probes_table(analysis: UnitAnalysis, labels: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """One plain dict per (probe, rank) for CSV: kind, probe, rank (1 = largest), image, label (-1 without
    labels), value, the probe's purity (empty without labels) and whether the probe is constant."""
    rows = []
    for p in analysis.probes:
        purity = float(label_purity(p.images, labels)[0]) if labels is not None else None
        for rank, (i, v) in enumerate(zip(p.images.tolist(), p.values.tolist(), strict=True), 1):
            rows.append(
                {
                    "kind": p.kind,
                    "probe": p.index,
                    "rank": rank,
                    "image": i,
                    "label": int(labels[i]) if labels is not None else -1,
                    "value": v,
                    "purity": "" if purity is None else purity,
                    "constant": p.constant,
                }
            )
    return rows


# ------------------------------------------------------------------------------------------------ the comparison
#: the most activation values (images x units) for which every unit's purity is computed (the "all units"
#: mean, one sort of the whole (N, D) matrix); larger layers or data sets skip it
ALL_UNITS_MAX = 2**25


@dataclass(frozen=True)
class UnitsVsDirections:
    """What :func:`units_vs_directions` measured: the probes and the label purity of their top-k images.

    ``labels``: (N,) the labels the purities are taken against: the data's own when every image has one
    (``labelled``), else the model's predictions. ``purities``: :func:`purities` of the analysis;
    ``summary``: :func:`purity_summary` of the chosen units and the random directions; ``all_units``: the same
    over every unit of the layer (None for layers too large, see :data:`ALL_UNITS_MAX`); ``chance``:
    :func:`chance_purity` of ``k`` random images.
    """

    analysis: UnitAnalysis
    labels: torch.Tensor
    labelled: bool
    purities: dict[str, list[float]]
    summary: dict[str, Any]
    all_units: dict[str, Any] | None
    chance: float

    def to_dict(self) -> dict[str, Any]:
        """The numbers, JSON-ready (``advlab analyze units``' metrics.json after the model and the data)."""
        a, every = self.analysis, self.all_units
        return {
            "layer": a.layer,
            "units_in_layer": a.dim,
            "pool": a.pool,
            "k": a.k,
            "seed": a.seed,
            "labels": "true" if self.labelled else "predicted",
            "chance_purity": self.chance,
            "unit_purity_mean": self.summary["unit_purity_mean"],
            "direction_purity_mean": self.summary["direction_purity_mean"],
            "direction_minus_unit": self.summary["direction_minus_unit"],
            "all_units_purity_mean": every["unit_purity_mean"] if every else None,
            "constant_units_in_layer": len(every["constant_units"]) if every else None,
            "unit_purity": {str(p.index): v for p, v in zip(a.units, self.purities["units"], strict=True)},
            "direction_purity": {str(p.index): v for p, v in zip(a.random, self.purities["directions"], strict=True)},
        }


def _predictions(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)])


def units_vs_directions(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    layer: str | None = None,
    units: Sequence[int] | None = None,
    *,
    directions: int = 8,
    k: int = 8,
    seed: int = 0,
    top_units: int = 8,
    pool: bool = False,
    batch_size: int = 256,
) -> UnitsVsDirections:
    """Szegedy et al.'s comparison on ``x`` (N, C, H, W) with labels ``y`` (-1: unlabelled): the top-``k``
    images of units and of random directions of ``layer`` (:func:`unit_top_images`, same arguments) and the
    label purity of each, against the labels, or the model's predictions when some image has no label.

    Also the purity over every unit of the layer when it has at most :data:`ALL_UNITS_MAX` activation values.
    ValueError as for :func:`unit_top_images`.
    """
    spec, phi = activations(model, x, layer, pool=pool, batch_size=batch_size)
    labelled = bool((y >= 0).all())
    labels = y if labelled else _predictions(model, x, batch_size)
    probes = {"directions": directions, "k": k, "seed": seed, "top_units": top_units}
    return compare_activations(phi, labels, labelled, units, layer=spec, pool=pool, **probes)


def compare_activations(
    phi: torch.Tensor,
    labels: torch.Tensor,
    labelled: bool,
    units: Sequence[int] | None = None,
    *,
    layer: str,
    directions: int = 8,
    k: int = 8,
    seed: int = 0,
    top_units: int = 8,
    pool: bool = False,
) -> UnitsVsDirections:
    """:func:`units_vs_directions` on activations already computed (e.g. batch by batch, keeping no image):
    ``phi`` (N, D) from :func:`activations` of ``layer`` (the resolved spec), ``labels`` (N,) the data's own
    (``labelled``) or the model's predictions."""
    analysis = probe_activations(
        phi, units, directions=directions, k=k, seed=seed, top_units=top_units, layer=layer, pool=pool
    )
    every = (
        probe_activations(phi, range(phi.shape[1]), directions=0, k=k, layer=layer)
        if phi.numel() <= ALL_UNITS_MAX
        else None
    )
    return UnitsVsDirections(
        analysis=analysis,
        labels=labels,
        labelled=labelled,
        purities=purities(analysis, labels),
        summary=purity_summary(analysis, labels),
        all_units=purity_summary(every, labels) if every is not None else None,
        chance=chance_purity(labels, k, seed=seed),
    )
