"""The figures and report paragraphs of the commands' results, built on the plot primitives of
:mod:`advlab.report.figures`: where an attack acts by layer (``advlab analyze layers``), units against random
directions (``analyze units``), FGSM curves (``analyze linearity``), the transfer heat map (``advlab transfer``),
the defense study's accuracy-vs-setting plots and captions (``advlab study prune``) and the training curves
(``advlab train``). Each function takes the results as the library returns them and returns a figure or text;
the commands save them.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from matplotlib.figure import Figure

from advlab.experiments.study import Outcome
from advlab.experiments.transfer import TransferMatrix, eps_text
from advlab.experiments.units import UnitAnalysis
from advlab.report.figures import heatmap, image_grid, line_plot

#: at most this many layers get a marker per point (more would hide the line)
MARKED_LAYERS = 30


# ------------------------------------------------------------------------------------------------ layers
def layer_change_figure(rows: Sequence[Mapping[str, Any]], model: str) -> Figure:
    """change_by_layer.png: relative L2 and L-inf change and the top-1% share per layer (log y), by depth."""
    return line_plot(
        {
            "relative L2 change": [r["rel_l2"] for r in rows],
            "relative L-inf change": [r["rel_linf"] for r in rows],
            "share in top 1% units": [r["top_share"] for r in rows],
        },
        "layer",
        "clean -> adversarial",
        f"{model}: where the attack acts",
        x=[r["depth"] for r in rows],
        logy=True,
        markers=len(rows) <= MARKED_LAYERS,
        xticklabels=[r["name"] for r in rows],
    )


def activation_std_figure(
    rows: Sequence[Mapping[str, Any]], clamped: Sequence[Mapping[str, Any]] | None, model: str
) -> Figure:
    """activation_std.png: the activation sigma per layer on clean and adversarial inputs; with ``clamped`` (the
    rows of the model with clamped feature maps) also its adversarial sigma, over the layers both have."""
    n = len(rows) if clamped is None else min(len(rows), len(clamped))
    series: dict[str, Sequence[float]] = {
        "sigma, clean": [r["clean_std"] for r in rows[:n]],
        "sigma, adversarial": [r["adv_std"] for r in rows[:n]],
    }
    if clamped is not None:
        series["sigma, adversarial, clamped model"] = [r["adv_std"] for r in clamped[:n]]
    return line_plot(
        series,
        "layer",
        "activation sigma",
        f"{model}: activation spread",
        x=[r["depth"] for r in rows[:n]],
        markers=n <= MARKED_LAYERS,
        xticklabels=[r["name"] for r in rows[:n]],
    )


# ------------------------------------------------------------------------------------------------ units
def _probe_head(kind: str, index: int, constant: bool, purity: float) -> str:
    dead = " (dead)" if constant else ""
    return ("unit " if kind == "unit" else "random ") + f"{index}{dead} | purity {purity:.2f}"


def units_figure(
    analysis: UnitAnalysis, x: torch.Tensor, labels: torch.Tensor, purities: Mapping[str, Sequence[float]]
) -> Figure:
    """One row per probe (units, then random directions): its top-k images, titled with label and projection;
    the first image of a row also names the probe and its purity. Direction rows are titled in blue."""
    probes = analysis.probes
    purity = [*purities["units"], *purities["directions"]]
    images = torch.cat([x[p.images] for p in probes]).cpu()
    titles, colors = [], []
    for p, q in zip(probes, purity, strict=True):
        head = _probe_head(p.kind, p.index, p.constant, q)
        for rank, (i, v) in enumerate(zip(p.images.tolist(), p.values.tolist(), strict=True)):
            text = f"y={int(labels[i])} {v:.3g}"
            titles.append(f"{head}\n{text}" if rank == 0 else f"\n{text}")
            colors.append("black" if p.kind == "unit" else "tab:blue")
    cell = 1.5 if x.shape[-1] <= 32 else 2.0
    return image_grid(images, titles, ncols=analysis.k, cell=cell, title_colors=colors)


def units_paragraph(m: Mapping[str, Any]) -> str:
    """The report's paragraph: Szegedy's claim with the numbers of ``m`` (an ``analyze units`` metrics.json)."""
    every = (
        f" Over all {m['units_in_layer'] - m['constant_units_in_layer']} non-constant units of the layer: "
        f"{m['all_units_purity_mean']:.3f}."
        if m["all_units_purity_mean"] is not None
        else ""
    )
    text = (
        f"Mean label purity (fraction of the top-{m['k']} images sharing their most common {m['labels']} label): "
        f"chosen units {m['unit_purity_mean']:.3f}, random directions {m['direction_purity_mean']:.3f}, "
        f"k random images {m['chance_purity']:.3f}.{every} Szegedy et al. (2013) found units no more "
        f"interpretable than random directions; here directions minus units = {m['direction_minus_unit']:+.3f}."
    )
    return f"<p>{html.escape(text)}</p>"


# ------------------------------------------------------------------------------------------------ linearity
def linearity_figure(
    curves: Mapping[str, Sequence[tuple[float, float]]], eps: Sequence[float], loss: str, data: str
) -> Figure:
    """linearity.png: accuracy under one FGSM step against eps (L-inf, [0, 1] pixels), one line per model."""
    return line_plot(
        {m: [a for _, a in c] for m, c in curves.items()},
        "eps (L-inf, [0, 1] pixels)",
        "accuracy under FGSM",
        f"FGSM ({loss}) on {data}",
        x=eps,
    )


# ------------------------------------------------------------------------------------------------ transfer
def heatmap_values(m: TransferMatrix) -> tuple[list[list[float | None]], list[str], list[str]]:
    """The heat map's cells: rows = sources (+ the chance row), columns = targets + "white box"."""
    rows: list[list[float | None]] = [[*r, wb] for r, wb in zip(m.success, m.white_box, strict=True)]
    labels = list(m.sources)
    if m.noise is not None:
        rows.append([*m.noise, None])
        labels.append(f"chance (noise, {m.noise_tries} tries)")
    return rows, labels, [*m.targets, "white box (source)"]


def transfer_heatmap(m: TransferMatrix) -> Figure:
    """heatmap.png: the transfer success rates, surrogates (rows) against victims (columns)."""
    values, rows, cols = heatmap_values(m)
    ball = f", {m.norm} eps {eps_text(m.eps)}" if m.eps is not None else ""
    return heatmap(
        values,
        rows,
        cols,
        f"transfer success rate{ball} (n = {m.n})",
        fmt="{:.0%}",
        xlabel="victim (target)",
        ylabel="surrogate (source)",
    )


# ------------------------------------------------------------------------------------------------ study
#: what each defense of the study does to the model, for captions
DEFENSE_TEXT = {
    "e": "weights with |w| < E set to zero",
    "s": "weights clamped to mu +- S sigma",
    "r": "U[-R, R] noise added to the weights",
    "quant": "weights quantized to the given bits",
    "clamp": "feature maps clamped to a calibrated percentile",
}


def _defenses(outcomes: Sequence[Outcome]) -> list[str]:
    """The defenses of a study in sweep order (outcome 0 is the undefended model)."""
    return list(dict.fromkeys(o.row.defense for o in outcomes[1:]))


def study_figures(outcomes: Sequence[Outcome], model: str) -> dict[str, Figure]:
    """``{"accuracy_vs_D.png": figure}`` per defense D: clean accuracy and remnant accuracy (white box, and
    transferred from the undefended model) against the setting; dashed: the undefended model's."""
    base = outcomes[0].row
    figures = {}
    for d in _defenses(outcomes):
        part = sorted((o.row for o in outcomes[1:] if o.row.defense == d), key=lambda r: float(r.value or 0))
        series: dict[str, Sequence[float]] = {
            "clean": [r.clean_accuracy for r in part],
            "remnant (white box)": [r.robust_accuracy for r in part],
            "remnant (transfer from undefended)": [r.transfer_robust_accuracy for r in part],
        }
        reference = {"undefended clean": base.clean_accuracy, "undefended remnant": base.robust_accuracy}
        label = part[0].label.split("=")[0]
        xs = [float(r.value or 0) for r in part]
        figures[f"accuracy_vs_{d}.png"] = line_plot(
            series, label, "accuracy", f"{model}: {label}", x=xs, reference=reference, logx=d in ("e", "r")
        )
    return figures


def study_captions(outcomes: Sequence[Outcome], model: str) -> dict[str, str]:
    """The report's caption of each figure of :func:`study_figures`."""
    return {
        f"accuracy_vs_{d}.png": (
            f"{model} defended by {d} ({DEFENSE_TEXT.get(d, d)}): clean accuracy and remnant accuracy "
            f"under the white-box attack and under the attack transferred from the undefended model, "
            f"against the setting; dashed: the undefended model."
        )
        for d in _defenses(outcomes)
    }


# ------------------------------------------------------------------------------------------------ training
def training_figures(
    loss: Sequence[float], accuracy: Mapping[str, Sequence[float]], model: str, data: str, objective: str
) -> dict[str, Figure]:
    """loss.png (the training ``objective`` per epoch) and, when ``accuracy`` has series, eval_accuracy.png."""
    figures = {"loss.png": line_plot({"train loss": loss}, "epoch", objective, f"{model} on {data}")}
    if accuracy:
        figures["eval_accuracy.png"] = line_plot(dict(accuracy), "epoch", "accuracy")
    return figures
