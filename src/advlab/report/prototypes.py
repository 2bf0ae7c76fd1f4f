"""What a prototypes run shows: its pictures and the tables of its report.html.

Pictures (:func:`prototype_figures`, by file name): grid.png (the prototypes, up to :data:`GRID_MAX`, titled with
the target and its final probability, red where the target is not top-1), difference.png (for a noise or photo
start: the change from the start amplified, grey = none), strips.png (snapshots of the strip pairs over the
steps), probability.png and grad_norm.png (the first :data:`PLOT_MAX` pairs and, with more pairs, the median),
recognition.png (the L2 distance from the start where the target first became top-1). Tables:
:func:`recognizability_table` (how the model, each judge and their ensemble see the prototypes of the run and of
``--compare``) and :func:`recognition_table` (per pair, the recognition points of
:func:`advlab.prototypes.recognition_points`).
"""

from __future__ import annotations

import html
from typing import Any

from matplotlib.figure import Figure

from advlab.prototypes import Prototypes, amplified_difference, recognition_points
from advlab.report.figures import histogram, image_grid, line_plot, short

#: at most this many prototypes in grid.png and in the recognition table, and pairs in the plots (all are in
#: the files)
GRID_MAX = 100
PLOT_MAX = 10

#: captions of the pictures only prototypes runs draw (the pictures they name come first in report.html)
CAPTIONS = {
    "grid.png": "the prototypes, titled with the target and the model's final probability (red: the target is not "
    "top-1)",
    "difference.png": "what the run changed: 0.5 + (prototype - start) / (2 max |prototype - start|) per image, "
    "grey = no change",
    "compare.png": "the same pairs evolved by the --compare recipe",
}


def grid_figures(result: Prototypes, names: list[str], compare: bool = False) -> dict[str, Figure]:
    """grid.png: the prototypes (up to GRID_MAX), titled with the target and its final probability; for a noise
    or photo start also difference.png, the change from the start amplified (grey: none). ``compare``: the
    --compare recipe's prototypes, as compare.png alone."""
    ev, n_t = result.evolution, len(result.targets)
    shown = list(range(min(len(ev.target), GRID_MAX)))
    fp, ft = ev.final_prob, ev.final_top1
    titles = [f"{short(names[int(ev.target[i])])}\np={float(fp[i]):.2f}" for i in shown]
    colors = ["black" if int(ft[i]) == int(ev.target[i]) else "red" for i in shown]
    grid = image_grid(ev.x[shown], titles, ncols=min(n_t, 10), cell=1.6, title_colors=colors)
    if compare:
        return {"compare.png": grid}
    out = {"grid.png": grid}
    if result.starts.kind != "blank":
        diff = amplified_difference(ev.x[shown], result.starts.x[ev.start[shown]])
        out["difference.png"] = image_grid(diff, titles, ncols=min(n_t, 10), cell=1.6, title_colors=colors)
    return out


def strips_figure(result: Prototypes, names: list[str]) -> Figure | None:
    """strips.png: the snapshots of the strip pairs over the steps (up to where the last of them stopped); None
    when no pair kept snapshots."""
    ev = result.evolution
    if not len(ev.snapshot_pairs):
        return None
    rows = ev.snapshot_pairs.tolist()
    stop = max(int(ev.stopped[r]) for r in rows)
    keep = [k for k, s in enumerate(ev.snapshot_steps) if s <= stop or k == 0 or ev.snapshot_steps[k - 1] < stop]
    steps = [ev.snapshot_steps[k] for k in keep]
    imgs = ev.snapshots[:, keep].flatten(0, 1)
    titles = []
    for r in rows:
        for s in steps:
            col = min(s, int(ev.stopped[r]))
            titles.append(f"{short(names[int(ev.target[r])], 12)} @{s}\np={float(ev.prob[r, col]):.2f}")
    return image_grid(imgs, titles, ncols=len(steps), cell=1.3)


def trajectory_figures(result: Prototypes, model_name: str, names: list[str]) -> dict[str, Figure]:
    """probability.png and grad_norm.png (the first PLOT_MAX pairs and the median), recognition.png (when a
    target ever became top-1)."""
    ev, mode = result.evolution, result.config.mode
    last = int(ev.stopped.max())  # plots end where the last pair stopped: beyond, nothing changes
    plotted = list(range(min(len(ev.target), PLOT_MAX)))
    x_steps = list(range(last + 1))
    prob, gnorm = ev.prob[:, : last + 1], ev.grad_norm[:, : last + 1].clamp_min(1e-12)
    labels = [short(names[int(ev.target[i])], 14) for i in plotted]
    series = {lab: prob[i].tolist() for lab, i in zip(labels, plotted, strict=True)}
    gseries = {lab: gnorm[i].tolist() for lab, i in zip(labels, plotted, strict=True)}
    if len(ev.target) > PLOT_MAX:
        series["median over all pairs"] = prob.median(0).values.tolist()
        gseries["median over all pairs"] = gnorm.median(0).values.tolist()
    out = {
        "probability.png": line_plot(
            series,
            "step",
            "target probability",
            f"{model_name}: target probability ({mode} mode)",
            x=x_steps,
            markers=False,
        ),
        "grad_norm.png": line_plot(
            gseries,
            "step",
            "||d loss / dx||_2",
            f"{model_name}: input-gradient norm ({mode} mode)",
            x=x_steps,
            logy=True,
            markers=False,
        ),
    }
    rp = recognition_points(ev)
    hit = rp["top1_step"] >= 0
    if bool(hit.any()):
        out["recognition.png"] = histogram(
            rp["top1_l2"][hit].tolist(),
            "L2 distance from the start when the target became top-1",
            f"recognition distance ({int(hit.sum())} of {len(hit)} pairs)",
        )
    return out


def prototype_figures(result: Prototypes, model_name: str, names: list[str]) -> dict[str, Figure]:
    """Every picture of a prototypes run, by file name (see the module docstring)."""
    out = grid_figures(result, names)
    strips = strips_figure(result, names)
    if strips is not None:
        out["strips.png"] = strips
    return {**out, **trajectory_figures(result, model_name, names)}


def recognition_table(result: Prototypes, names: list[str]) -> str:
    """An HTML table: per pair (up to GRID_MAX), where the target became top-1 and passed 0.5/0.9/0.99, each with
    the L2 distance from the start there; the final probability and the step the pair stopped at."""
    rp = recognition_points(result.evolution)
    ev = result.evolution
    head = (
        "<tr><th>start</th><th>target</th><th>top-1 at step (L2)</th><th>p&gt;0.5</th><th>p&gt;0.9</th>"
        "<th>p&gt;0.99</th><th>final p</th><th>stopped</th></tr>"
    )
    body = []
    for i in range(min(len(ev.target), GRID_MAX)):
        cells = []
        for k in ("top1", "p50", "p90", "p99"):
            step = int(rp[f"{k}_step"][i])
            cells.append("never" if step < 0 else f"{step} ({float(rp[f'{k}_l2'][i]):.3g})")
        start, target = result.starts.names[int(ev.start[i])], names[int(ev.target[i])]
        stopped = f"{int(ev.stopped[i])}{' (converged)' if ev.converged[i] else ''}"
        body.append(
            f"<tr><td>{html.escape(start)}</td><td>{html.escape(target)}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + f"<td>{float(ev.final_prob[i]):.3f}</td><td>{stopped}</td></tr>"
        )
    note = (
        f"<p>First {GRID_MAX} of {len(ev.target)} pairs; all are in trajectories.csv.</p>"
        if len(ev.target) > GRID_MAX
        else ""
    )
    return f"{note}<table>{head}{''.join(body)}</table>"


def recognizability_table(metrics: dict[str, Any]) -> str:
    """An HTML table: how the model, each judge and their ensemble see this run's (and --compare's) prototypes
    (``metrics``: a prototypes run's metrics.json, with its ``recipe`` and optional ``compare``)."""
    rows = []
    compare = metrics.get("compare") or {}
    for recipe, m in ((metrics.get("recipe", ""), metrics), (compare.get("recipe"), compare)):
        if not m:
            continue
        who = [("the model itself", m["self"]), *[(f"judge {k}", v) for k, v in m["judges"].items()]]
        who += [("judge ensemble", m["judge_ensemble"])] if "judge_ensemble" in m else []
        for name, j in who:
            rows.append(
                f"<tr><td>{html.escape(str(recipe))}</td><td>{html.escape(name)}</td>"
                f"<td>{j['top1_agreement']:.1%}</td><td>{j['target_probability_mean']:.3f}</td>"
                f"<td>{j['inception_score']:.2f}</td></tr>"
            )
    head = "<tr><th>recipe</th><th>seen by</th><th>top-1 = target</th><th>mean target p</th><th>IS</th></tr>"
    return (
        "<p>Would another model (a stand-in for a person) name the target? (--judge, --compare)</p>"
        f"<table>{head}{''.join(rows)}</table>"
    )
