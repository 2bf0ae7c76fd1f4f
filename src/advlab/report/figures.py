"""Matplotlib figures (Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from advlab.data.images import to_uint8_image  # noqa: E402


def short(name: str, n: int = 18) -> str:
    """``name`` cut to ``n`` characters with an ellipsis (class names in picture titles)."""
    return name if len(name) <= n else name[: n - 1] + "…"


def image_grid(
    images: torch.Tensor,
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    cell: float = 2.4,
    title_colors: Sequence[str] | None = None,
) -> Figure:
    """A grid of (N, C, H, W) [0, 1] images, each under its title (fontsize 8); nearest-neighbour so 8x8 digits
    stay sharp. Each image has a cell of ``cell`` x ``cell + 0.5`` inches (the image, aspect kept, 0.92 ``cell`` on
    its longer side, and 0.5 inch above it for the title), all on one axes at fixed places: no axes per image and
    no tight_layout (a 10 x 10 grid took 7.0 CPU-s to build and save with them, 1.6 s so)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = (n + ncols - 1) // ncols
    width, height = cell * ncols, (cell + 0.5) * nrows
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    for i in range(n):
        row, col = divmod(i, ncols)
        img = to_uint8_image(images[i])
        scale = 0.92 * cell / max(img.shape[0], img.shape[1])
        w, h = img.shape[1] * scale, img.shape[0] * scale
        left, top = col * cell + (cell - w) / 2, height - row * (cell + 0.5) - 0.5
        ax.imshow(
            img,
            cmap="gray" if img.ndim == 2 else None,
            vmin=0,
            vmax=255,
            interpolation="nearest",
            extent=(left, left + w, top - h, top),
            aspect="auto",
        )
        if titles is not None:
            color = title_colors[i] if title_colors is not None else "black"
            size = _title_size(titles[i], cell)
            ax.text(col * cell + cell / 2, top + 0.05, titles[i], ha="center", va="bottom", fontsize=size, color=color)
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    return fig


def _title_size(title: str, width: float) -> float:
    """The font size (points, 8 at most, 5 at least) at which ``title``'s longest line fits ``width`` inches, a
    character taken as 0.55 of the size (DejaVu Sans averages about 0.52), so neighbouring titles do not overlap."""
    chars = max((len(line) for line in title.splitlines()), default=0)
    return max(5.0, min(8.0, 0.98 * width * 72 / (0.55 * max(chars, 1))))


def line_plot(
    series: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    x: Sequence[float] | None = None,
    logy: bool = False,
    markers: bool | None = None,
    reference: dict[str, float] | None = None,
    logx: bool = False,
    xticklabels: Sequence[str] | None = None,
) -> Figure:
    """One line per named series against ``x`` (default: its index 1, 2, ...: epochs, steps); ``reference``:
    named constants drawn as dashed horizontal lines (e.g. the undefended model's numbers). A log x axis is
    labelled at the x values themselves (a sweep over 1e-3..1e-2 would otherwise get one labelled tick);
    ``xticklabels`` names the x values (layer names instead of depths), thinned to at most 40 labels."""
    fig, ax = plt.subplots(figsize=(6, 3.6) if len(series) > 4 else (5, 3.2))
    for name, values in series.items():
        xs = list(x) if x is not None else list(range(1, len(values) + 1))
        ax.plot(xs, list(values), label=name, marker="o" if (x is not None if markers is None else markers) else None)
    for (name, value), color in zip((reference or {}).items(), ("gray", "silver", "dimgray", "black"), strict=False):
        ax.axhline(value, linestyle="--", linewidth=1, color=color, label=name)
    if logy:
        ax.set_yscale("log")
    if logx:
        _label_log_axis(ax, sorted({float(v) for v in (x or []) if float(v) > 0}))
    if xticklabels is not None:
        _name_ticks(ax, list(x) if x is not None else list(range(1, len(xticklabels) + 1)), list(xticklabels))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    n_lines = len(series) + len(reference or {})
    if n_lines > 1:
        ax.legend(fontsize=7 if n_lines > 4 else None, ncol=2 if n_lines > 6 else 1)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _label_log_axis(ax: Any, values: list[float]) -> None:
    """A log x axis with a labelled tick at each of ``values`` (up to 12; beyond, matplotlib's decades and
    their 2 and 5 multiples), no unlabelled minor ticks in between."""
    from matplotlib.ticker import FixedLocator, LogLocator, NullFormatter, NullLocator

    ax.set_xscale("log")
    if 1 < len(values) <= 12:
        ax.xaxis.set_major_locator(FixedLocator(values))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", labelsize=8)


def _name_ticks(ax: Any, xs: list[float], names: list[str]) -> None:
    """Ticks at ``xs`` labelled with ``names`` (rotated; every k-th one when there are more than 40)."""
    k = max(1, -(-len(names) // 40))
    ax.set_xticks(xs[::k], names[::k], rotation=90, fontsize=7 if len(names) > 12 else 8)


def histogram(values: Sequence[float], xlabel: str, title: str = "", bins: int = 20) -> Figure:
    """A histogram of ``values`` (counts per bin)."""
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(list(values), bins=bins, color="#4c72b0", edgecolor="white")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("count")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def perturbation_image(x: torch.Tensor, x_adv: torch.Tensor) -> torch.Tensor:
    """The perturbation made visible: 0.5 + delta / (2 max|delta|) per image (grey = unchanged)."""
    d = (x_adv - x).float()
    scale = d.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (d.ndim - 1))
    return (0.5 + d / (2 * scale)).clamp(0, 1)


def prediction_titles(prefix: str, names: Sequence[str], confidences: Sequence[float]) -> list[str]:
    """Picture titles ``"<prefix>: <class name, cut to 18 characters> <confidence as %>"``, one per image."""
    return [f"{prefix}: {short(n)} {c:.0%}" for n, c in zip(names, confidences, strict=True)]


def adversarial_grid(
    x: torch.Tensor,
    x_adv: torch.Tensor,
    clean_titles: Sequence[str],
    adv_titles: Sequence[str],
    colors: Sequence[str] | None = None,
    cell: float = 2.4,
) -> Figure:
    """One row per sample: clean image | amplified perturbation | adversarial image, with titles under each."""
    n = len(x)
    pert = perturbation_image(x, x_adv)
    images = torch.stack([x, pert, x_adv], 1).flatten(0, 1)
    titles, cols = [], []
    for i in range(n):
        amp = float((x_adv[i] - x[i]).abs().max())
        titles += [clean_titles[i], f"perturbation\n(max |d| {amp:.3g}, amplified)", adv_titles[i]]
        cols += ["black", "gray", colors[i] if colors is not None else "black"]
    return image_grid(images, titles, ncols=3, cell=cell, title_colors=cols)


def heatmap(
    matrix: Sequence[Sequence[float | None]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    title: str = "",
    fmt: str = "{:.0%}",
    vmin: float = 0.0,
    vmax: float = 1.0,
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = "viridis",
) -> Figure:
    """A heat map of ``matrix`` (rows x columns) with each value written in its cell as ``fmt.format(v)``.

    Colours span [``vmin``, ``vmax``] (default [0, 1]: rates); None or NaN cells are left blank (light grey,
    "n/a"). The text is white on dark cells and black on light ones.
    """
    import numpy as np

    a = np.array([[np.nan if v is None else float(v) for v in row] for row in matrix], dtype=float).reshape(
        len(row_labels), len(col_labels)
    )
    nr, nc = a.shape
    fig, ax = plt.subplots(figsize=(max(3.5, 1.3 * nc + 2.5), max(2.2, 0.55 * nr + 1.6)))
    colormap = plt.get_cmap(cmap).copy()
    colormap.set_bad("#eeeeee")
    im = ax.imshow(np.ma.masked_invalid(a), cmap=colormap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(
        range(nc),
        [str(c) for c in col_labels],
        rotation=30 if max((len(str(c)) for c in col_labels), default=0) > 10 else 0,
        ha="right" if max((len(str(c)) for c in col_labels), default=0) > 10 else "center",
    )
    ax.set_yticks(range(nr), [str(r) for r in row_labels])
    for i in range(nr):
        for j in range(nc):
            v = a[i, j]
            if np.isnan(v):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="gray")
                continue
            r, g, b, _ = colormap((v - vmin) / (vmax - vmin) if vmax > vmin else 0.5)
            light = 0.299 * r + 0.587 * g + 0.114 * b > 0.5
            ax.text(j, i, fmt.format(v), ha="center", va="center", fontsize=9, color="black" if light else "white")
    if xlabel:
        ax.set_xlabel(xlabel)
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def roc_figure(
    curves: Mapping[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    aucs: Mapping[str, float],
    fpr: float,
    title: str,
) -> Figure:
    """ROC curves (false-positive rate on clean vs true-positive rate on successful adversarial images), one
    per held-out attack with its AUC in the legend (``curves``: label -> (fpr, tpr, thresholds) as
    :func:`advlab.defenses.detector.roc_curve` gives them), with the chance diagonal and the target
    false-positive rate ``fpr`` as a dashed line."""
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for label, (f, t, _) in curves.items():
        ax.plot(f.tolist(), t.tolist(), label=f"{label} (AUC {aucs[label]:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray", linewidth=1, label="chance")
    ax.axvline(fpr, linestyle="--", color="silver", linewidth=1, label=f"target FPR {fpr:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (clean images flagged)")
    ax.set_ylabel("true-positive rate (successful attacks flagged)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
