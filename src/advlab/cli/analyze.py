"""``advlab analyze layers|units|linearity``: analyses of a model, each writing a run directory.

``units``: Szegedy et al. 2013's comparison of the top images of single units and of random directions of
a layer, with their label purity (units.png, units.csv, metrics.json, report.html). ``linearity``:
Goodfellow et al. 2015's FGSM accuracy-vs-eps curves of a linear model and a CNN on one plot
(linearity.png, curves.csv, metrics.json, report.html).

``layers``: where in the network an attack acts (research note 003's finding, as a measurement).

For clean vs adversarial inputs, per layer (input first, then every leaf module in forward order): the
relative L2 and L-inf change of the activations, the share of the change carried by the largest 1% of the
units, and the activation mean and sigma; with ``--clamp P`` the same on the model with its feature maps
clamped to the P-th percentile (the seed's "with a clamp, sigma grows after BN"). Writes layers.csv,
metrics.json, change_by_layer.png, activation_std.png and report.html.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from advlab import runs, zoo
from advlab.cli.common import (
    MAX_EPS_VALUES,
    SEED_RANGE,
    add_attack_args,
    add_command,
    add_model_args,
    add_run_args,
    batch_int,
    bounded_int,
    build_model,
    command_line,
    csv_text,
    default_out,
    floats,
    make_attack,
    number,
    open_data_for,
    positive_int,
    require,
    say,
    seed_int,
)
from advlab.data import Batches
from advlab.device import device_of
from advlab.errors import AdvlabError
from advlab.evaluation.inputs import Source
from advlab.experiments.layers import LayerChange, change_summary, changes_table, layer_changes
from advlab.experiments.units import (
    Probe,
    UnitAnalysis,
    UnitsVsDirections,
    activations,
    compare_activations,
    probes_table,
)

#: the most images (the first ones) that calibrate --clamp's bounds: the clamp keeps every activation value of
#: its calibration images in memory (the one step of ``analyze layers`` that holds several batches of images)
CLAMP_CALIBRATION = 256


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "analyze",
        help="analyses: where an attack acts, what units mean, linearity",
        description="Analyses of a model: advlab analyze layers|units|linearity --help.",
    )
    inner = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True, parser_class=type(p))
    q = add_command(
        inner,
        flags,
        "layers",
        help="per-layer change of the activations under an attack",
        description="Run an attack and compare every layer's activations on clean and adversarial inputs: relative L2\n"
        "and L-inf change, the share of the change in the largest 1% of units, activation mean and sigma.\n\n"
        "examples:\n"
        "  advlab analyze layers --model digits-cnn --data digits:test --eps 0.1\n"
        "  advlab analyze layers --model efficientnet-lite0 --data samples --eps 2/255 --steps 10 --clamp 99.9",
    )
    add_model_args(q)
    q.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    q.add_argument("--attack", "-a", default="pgd", help="the attack (default pgd)")
    add_attack_args(q)
    q.add_argument("--limit", type=positive_int, default=64, help="the first N images (default 64)")
    q.add_argument("--layers", help="comma list of module names (default: every leaf module)")
    q.add_argument(
        "--clamp",
        type=_percentile,
        help="also measure the model with feature maps clamped to this percentile (50..100, e.g. 99.9), "
        f"calibrated on the first {CLAMP_CALIBRATION} images",
    )
    q.add_argument("--batch-size", type=batch_int, default=64, help="images per batch")
    q.add_argument("--json", action="store_true", help="print the per-layer table as JSON")
    add_run_args(q)
    q.set_defaults(func=run)
    _register_units(inner, flags)
    _register_linearity(inner, flags)


def run(args: argparse.Namespace) -> int:
    model = build_model(args)
    info = zoo.info_of(model)
    atk = make_attack(args, info)
    batches = open_data_for(args, info, args.batch_size)
    layers = [s.strip() for s in args.layers.split(",")] if args.layers else None
    eps = getattr(atk, "eps", None)
    out = args.out or default_out(
        runs.run_name(
            info.name, info.dataset, "layers", batches.info.dataset, atk.name, eps if isinstance(eps, float) else None
        )
    )
    config = {
        "command": command_line(args.argv),
        "model": args.model,
        "data": args.data,
        "limit": args.limit,
        "attack": repr(atk),
        "layers": layers,
        "clamp": args.clamp,
    }
    with runs.start(out, config, force=args.force) as run_dir:
        changes, clamped_rows = _measure_layers(args, model, atk, batches, layers)
        rows = changes_table(changes)
        metrics = {
            "model": info.name,
            "data": args.data,
            "images": batches.count,
            "attack": repr(atk),
            **change_summary(changes),
        }
        _write(run_dir, rows, clamped_rows, metrics, info)
    _say_layers(args, rows, metrics, out)
    return 0


def _stream(batches: Batches, model: torch.nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` of every batch on the model's device, the next batch read in a background thread while this one
    is in use (at most one batch ahead: :class:`advlab.evaluation.inputs.Source`)."""
    dev = device_of(model)
    for _, x, y in Source(batches).select(lambda b: True):
        yield x.to(dev), y.to(dev)


def _first_images(batches: Batches, n: int) -> torch.Tensor:
    """The first ``n`` images (fewer when the data has fewer), read batch by batch."""
    parts: list[torch.Tensor] = []
    for b in range(len(batches)):
        if sum(len(p) for p in parts) >= n:
            break
        parts.append(batches.batch(b)[0])
    return torch.cat(parts)[:n]


def _measure_layers(
    args: argparse.Namespace,
    model: torch.nn.Module,
    atk: Any,
    batches: Batches,
    layers: list[str] | None,
) -> tuple[list[LayerChange], list[dict[str, Any]] | None]:
    """The layer changes under the attack, and with --clamp the rows of the model with clamped feature maps
    (calibrated on the first :data:`CLAMP_CALIBRATION` images), batch by batch: per batch the attack and
    :func:`~advlab.experiments.layers.layer_changes`, whose per-layer statistics are merged over the batches.
    Unlabelled data: the model's own predictions are attacked."""
    defended = None
    if args.clamp is not None:
        from advlab.defenses import clamp_activations

        calibration = _first_images(batches, CLAMP_CALIBRATION).to(device_of(model))
        try:
            defended = clamp_activations(model, calibration=calibration, percentile=args.clamp)
        except ValueError as e:
            raise AdvlabError(f"--clamp: {e}") from None
    predicted = bool((batches.labels() < 0).any())
    plain, clamped = _Changes(), _Changes()
    for x, y in _stream(batches, model):
        if predicted:
            with torch.no_grad():
                y = model(x).argmax(1)  # unlabelled images: attack the model's own predictions
        try:
            plain.add(
                layer_changes(model, x, _attack(atk, model, x, y, args.batch_size), layers, batch_size=args.batch_size),
                len(x),
            )
            if defended is not None:
                x_adv = _attack(atk, defended, x, y, args.batch_size)
                clamped.add(layer_changes(defended, x, x_adv, batch_size=args.batch_size), len(x))
        except ValueError as e:
            raise AdvlabError(str(e)) from None
    return plain.result(), changes_table(clamped.result()) if defended is not None else None


class _Changes:
    """:func:`~advlab.experiments.layers.layer_changes` merged over batches: per layer the per-sample ratios'
    mean weighted by the batch sizes, and the activations' mean and (population) sigma pooled over every value
    (Chan et al.'s parallel update, in float64)."""

    def __init__(self) -> None:
        self.layers: dict[str, dict[str, Any]] = {}

    def add(self, changes: list[LayerChange], n: int) -> None:
        for c in changes:
            acc = self.layers.setdefault(c.name, {"first": c, "n": 0, "ratios": [0.0, 0.0, 0.0], "clean": None})
            acc["n"] += n
            for i, v in enumerate((c.rel_l2, c.rel_linf, c.top_share)):
                acc["ratios"][i] += n * v
            count = n * c.units
            for side in ("clean", "adv"):
                mean, std = getattr(c, f"{side}_mean"), getattr(c, f"{side}_std")
                acc[side] = _pooled(acc.get(side), (count, mean, std * std * count))

    def result(self) -> list[LayerChange]:
        out = []
        for depth, acc in enumerate(self.layers.values()):
            n, (l2, linf, top) = acc["n"], acc["ratios"]
            (cn, cm, c2), (an, am, a2) = acc["clean"], acc["adv"]
            out.append(
                replace(
                    acc["first"],
                    depth=depth,
                    rel_l2=l2 / n,
                    rel_linf=linf / n,
                    top_share=top / n,
                    clean_mean=cm,
                    clean_std=math.sqrt(c2 / cn),
                    adv_mean=am,
                    adv_std=math.sqrt(a2 / an),
                )
            )
        return out


def _pooled(a: tuple[int, float, float] | None, b: tuple[int, float, float]) -> tuple[int, float, float]:
    """(count, mean, sum of squared deviations) of two sets of values pooled (Chan et al.)."""
    if a is None:
        return b
    (na, ma, sa), (nb, mb, sb) = a, b
    n = na + nb
    delta = mb - ma
    return n, ma + delta * nb / n, sa + sb + delta * delta * na * nb / n


def _say_layers(args: argparse.Namespace, rows: list[dict[str, Any]], metrics: dict[str, Any], out: str | Path) -> None:
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    l2, linf = metrics["peak_rel_l2"], metrics["peak_rel_linf"]
    say(
        args,
        f"{len(rows)} layers; the relative L2 change peaks at {l2['layer']} (depth {l2['depth']}, {l2['value']:.3g}), "
        f"L-inf at {linf['layer']} ({linf['value']:.3g}); input {rows[0]['rel_l2']:.3g}, "
        f"output {rows[-1]['rel_l2']:.3g}",
    )
    say(args, f"wrote {out}")


def _attack(atk: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    from advlab.experiments.study import adversarials

    try:
        return adversarials(model, atk, x, y, batch_size)
    except ValueError as e:
        raise AdvlabError(f"{atk.name}: {e}") from None


def _write(
    run_dir: runs.Run,
    rows: list[dict[str, Any]],
    clamped: list[dict[str, Any]] | None,
    metrics: dict[str, Any],
    info: zoo.ModelInfo,
) -> None:
    from advlab.report import write_report
    from advlab.report.results import activation_std_figure, layer_change_figure

    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("layers.csv", csv_text(rows))
    run_dir.save_figure("change_by_layer.png", layer_change_figure(rows, info.name))
    if clamped is not None:
        run_dir.save_text("layers_clamped.csv", csv_text(clamped))
    run_dir.save_figure("activation_std.png", activation_std_figure(rows, clamped, info.name))
    write_report(run_dir.path, f"advlab analyze layers: {info.name}")


# ------------------------------------------------------------------------------------------------ units
def _int_list(text: str) -> list[int]:
    """Comma-separated non-negative integers ("0,1,2")."""
    try:
        values = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of integers: {text!r} (e.g. 0,1,2)") from None
    if not values:
        raise argparse.ArgumentTypeError("give at least one unit index")
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"unit indices are >= 0, got {text!r}")
    if len(values) > MAX_PROBES or len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(
            f"give at most {MAX_PROBES} distinct unit indices, got {len(values)} in {text[:40]!r}"
        )
    return values


#: the most units, random directions or top images an analysis of units shows (each is a row or column of a picture)
MAX_PROBES = 1000


def _percentile(text: str) -> float:
    """--clamp's percentile: a number in [50, 100] (hi = that percentile, lo = 100 minus it)."""
    v = number(text)
    if not 50 <= v <= 100:
        raise argparse.ArgumentTypeError(
            f"a percentile in [50, 100] (hi = that percentile, lo = 100 minus it), got {text[:40]!r}"
        )
    return v


def _eps_grid(text: str) -> list[float]:
    """linearity's --eps: a comma list of at most MAX_EPS_VALUES numbers in [0, 1] (0: the clean accuracy)."""
    values = floats(text)
    if any(not 0 <= v <= 1 for v in values):
        raise argparse.ArgumentTypeError(f"eps must be in [0, 1] ([0, 1] pixel units, L-inf), got {text[:60]!r}")
    if len(values) > MAX_EPS_VALUES:
        raise argparse.ArgumentTypeError(f"{len(values)} eps values; at most {MAX_EPS_VALUES}")
    return values


def _register_units(inner: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    q = add_command(
        inner,
        flags,
        "units",
        help="top images of single units vs random directions (Szegedy et al.)",
        description="Szegedy et al. 2013, section 3: are the images that most activate one unit e_i of a layer more\n"
        "coherent than those that most activate a random direction v of the same layer? For each, the top-k\n"
        "images by <phi(x), e_i> and by <phi(x), v> (v uniform on the unit sphere, from --seed), and their label\n"
        "purity: the fraction of the top-k that share the most common label (chance: k random images).\n"
        "Writes units.png, units.csv, metrics.json and report.html.\n\n"
        "examples:\n"
        "  advlab analyze units --model digits-cnn --data digits:test\n"
        "  advlab analyze units --model digits-cnn --data digits:test --layer net.features.5 --pool --units 0,1,2",
    )
    add_model_args(q)
    q.add_argument("--data", "-d", required=True, help="data spec (see advlab data): the images to rank")
    q.add_argument(
        "--layer", help="module name (its output) or NAME:input (its input); none: the input of the last Linear"
    )
    which = q.add_mutually_exclusive_group()
    which.add_argument(
        "--units", type=_int_list, help="comma list of unit indices (none: the --top-units most varying)"
    )
    probes = bounded_int(1, MAX_PROBES)
    which.add_argument(
        "--top-units",
        type=probes,
        default=8,
        help=f"show the N units whose activation varies most (at most {MAX_PROBES})",
    )
    q.add_argument(
        "--directions", type=probes, default=8, help=f"random directions to compare with (at most {MAX_PROBES})"
    )
    q.add_argument("--k", type=probes, default=8, help=f"top images per unit or direction (at most {MAX_PROBES})")
    q.add_argument("--seed", type=seed_int, default=0, help=f"seed of the random directions ({SEED_RANGE})")
    q.add_argument("--pool", action="store_true", help="average conv outputs over space: a unit is a channel")
    q.add_argument("--limit", type=positive_int, help="the first N images (none: all)")
    q.add_argument("--batch-size", type=batch_int, default=256, help="images per batch")
    q.add_argument("--json", action="store_true", help="print metrics.json")
    add_run_args(q)
    q.set_defaults(func=run_units)


def run_units(args: argparse.Namespace) -> int:
    """``advlab analyze units``: top images of units and random directions, their label purity (unlabelled
    data: the model's predictions as labels). Everything is computed before the run directory opens."""
    model = build_model(args)
    info = zoo.info_of(model)
    batches = open_data_for(args, info, args.batch_size)
    try:
        found = _units_streamed(args, model, batches)
    except ValueError as e:
        raise AdvlabError(str(e)) from None
    desc, shown = batches.info, _shown_images(batches, found)
    metrics = {"model": info.name, "data": args.data, "images": batches.count, **found.to_dict()}
    layer = found.analysis.layer
    out = args.out or default_out(runs.run_name(info.name, info.dataset, "units", desc.dataset, layer))
    config = {
        "command": command_line(args.argv),
        "model": args.model,
        "data": args.data,
        "limit": args.limit,
        "layer": layer,
        "units": [p.index for p in found.analysis.units],
        "directions": args.directions,
        "k": args.k,
        "seed": args.seed,
        "pool": args.pool,
    }
    with runs.start(out, config, force=args.force) as run_dir:
        _write_units(run_dir, found, shown, metrics, info)
    _say_units(args, metrics, out)
    return 0


def _units_streamed(args: argparse.Namespace, model: torch.nn.Module, batches: Batches) -> UnitsVsDirections:
    """:func:`~advlab.experiments.units.units_vs_directions` read batch by batch: per batch the layer's activations
    (and, for unlabelled data, the model's predictions); only those per-image vectors are kept."""
    y = batches.labels()
    labelled = bool((y >= 0).all())
    spec, phis, preds = None, [], []
    for x, _ in _stream(batches, model):
        spec, phi = activations(model, x, args.layer, pool=args.pool, batch_size=args.batch_size)
        phis.append(phi)
        if not labelled:
            with torch.no_grad():
                preds.append(torch.cat([model(xb).argmax(1) for xb in x.split(args.batch_size)]))
    if spec is None:
        raise ValueError("x is empty: nothing to analyse")
    labels = y if labelled else torch.cat(preds)
    return compare_activations(
        torch.cat(phis),
        labels,
        labelled,
        args.units,
        layer=spec,
        directions=args.directions,
        k=args.k,
        seed=args.seed,
        top_units=args.top_units,
        pool=args.pool,
    )


def _shown_images(batches: Batches, found: UnitsVsDirections) -> tuple[UnitAnalysis, torch.Tensor, torch.Tensor]:
    """What units.png shows, the only images ``analyze units`` holds: the top-k of each probe (at most
    (units + directions) x k distinct images), each read alone; with the analysis and the labels re-indexed
    onto them (a probe's ``images`` are rows of the returned images)."""
    wanted = sorted({int(i) for p in found.analysis.probes for i in p.images.tolist()})
    row = {i: j for j, i in enumerate(wanted)}
    one = batches.rebatched(1)
    x = torch.cat([one.batch(i)[0] for i in wanted])

    def moved(probes: list[Probe]) -> list[Probe]:
        return [replace(p, images=torch.tensor([row[int(i)] for i in p.images.tolist()])) for p in probes]

    a = found.analysis
    return replace(a, units=moved(a.units), random=moved(a.random)), x, found.labels.cpu()[wanted]


def _write_units(
    run_dir: runs.Run,
    found: UnitsVsDirections,
    shown: tuple[UnitAnalysis, torch.Tensor, torch.Tensor],
    metrics: dict[str, Any],
    info: zoo.ModelInfo,
) -> None:
    """metrics.json, units.csv, units.png (``shown``: :func:`_shown_images`) and report.html of ``analyze units``."""
    from advlab.report import write_report
    from advlab.report.results import units_figure, units_paragraph

    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("units.csv", csv_text(probes_table(found.analysis, found.labels)))
    run_dir.save_figure("units.png", units_figure(*shown, found.purities))
    write_report(
        run_dir.path,
        f"advlab analyze units: {info.name}, {metrics['layer']}",
        sections=[("Units vs random directions", units_paragraph(metrics))],
    )


def _say_units(args: argparse.Namespace, m: dict[str, Any], out: str | Path) -> None:
    if args.json:
        print(json.dumps(m, indent=2))
        return
    every = (
        f", all {m['units_in_layer'] - m['constant_units_in_layer']} live units {m['all_units_purity_mean']:.2f}"
        if m["all_units_purity_mean"] is not None
        else ""
    )
    say(
        args,
        f"{m['layer']} ({m['units_in_layer']} units): label purity of the top-{m['k']} images: "
        f"units {m['unit_purity_mean']:.2f}{every}, random directions {m['direction_purity_mean']:.2f}, "
        f"chance {m['chance_purity']:.2f}",
    )
    say(args, f"wrote {out}")


# ------------------------------------------------------------------------------------------------ linearity
#: the model name that stands for the multinomial logistic regression trained on the spot
LINEAR = "linear"


def _register_linearity(inner: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    q = add_command(
        inner,
        flags,
        "linearity",
        help="FGSM accuracy vs eps for a linear model and a CNN (Goodfellow et al.)",
        description="Goodfellow et al. 2015's linearity view: accuracy under one FGSM step of size eps (L-inf, [0, 1]\n"
        "pixels) for each model, on one plot. 'linear' is a multinomial logistic regression z = Wx + b trained on\n"
        "digits:train on the spot (about a second); for it the median L-inf distance to its nearest decision\n"
        "boundary, min_t (z_y - z_t) / ||w_y - w_t||_1, is reported too. Writes linearity.png, curves.csv,\n"
        "metrics.json and report.html.\n\n"
        "examples:\n"
        "  advlab analyze linearity --data digits:test\n"
        "  advlab analyze linearity --data digits:test --models digits-cnn,linear --eps 0,0.05,0.1,0.25 --loss margin",
    )
    q.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    q.add_argument(
        "--models",
        default=f"digits-cnn,{LINEAR}",
        help=f"comma list of model specs; '{LINEAR}' = the logistic regression",
    )
    q.add_argument(
        "--eps",
        type=_eps_grid,
        default=[0.0, 0.02, 0.05, 0.1, 0.2, 0.3],
        help=f"comma list of eps in [0, 1] (0 = clean; at most {MAX_EPS_VALUES})",
    )
    q.add_argument("--loss", choices=("ce", "margin"), default="ce", help="the loss FGSM ascends")
    q.add_argument("--seed", type=seed_int, default=0, help=f"seed of the linear model's training ({SEED_RANGE})")
    q.add_argument("--limit", type=positive_int, help="the first N images (none: all)")
    q.add_argument("--batch-size", type=batch_int, default=512, help="images per batch")
    q.add_argument("--json", action="store_true", help="print metrics.json")
    add_run_args(q)
    q.set_defaults(func=run_linearity)


def _linear_model(seed: int) -> torch.nn.Module:
    from dataclasses import replace

    from advlab.experiments.linearity import linear_digits_model

    model = linear_digits_model(seed)
    model.info = replace(
        zoo.info("digits-cnn"),
        name=LINEAR,
        pretrained=False,  # type: ignore[assignment]
        description="multinomial logistic regression on digits:train, trained on the spot",
    )
    return model


def run_linearity(args: argparse.Namespace) -> int:
    """``advlab analyze linearity``: one FGSM accuracy-vs-eps curve per model; for ``linear`` also its distance
    to the decision boundary. Everything is computed before the run directory opens."""
    from advlab.experiments.linearity import check_eps_list

    specs = list(dict.fromkeys(s.strip() for s in args.models.split(",") if s.strip()))
    require(bool(specs), "--models: give at least one model")
    try:
        eps = sorted(set(check_eps_list(args.eps)))
    except ValueError as e:
        raise AdvlabError(f"--eps: {e}") from None
    curves, per_model, images, dataset = _linearity_curves(args, specs, eps)
    metrics = {"data": args.data, "images": images, "loss": args.loss, "eps": eps, "models": per_model}
    out = args.out or default_out(
        runs.run_name("+".join(specs), "digits" if LINEAR in specs else dataset, "linearity", dataset, "fgsm")
    )
    config = {
        "command": command_line(args.argv),
        "models": specs,
        "data": args.data,
        "limit": args.limit,
        "eps": eps,
        "loss": args.loss,
        "seed": args.seed,
    }
    with runs.start(out, config, force=args.force) as run_dir:
        from advlab.report import write_report
        from advlab.report.results import linearity_figure

        run_dir.save_json("metrics.json", metrics)
        run_dir.save_text(
            "curves.csv", csv_text([{"model": m, "eps": e, "accuracy": a} for m, c in curves.items() for e, a in c])
        )
        run_dir.save_figure("linearity.png", linearity_figure(curves, eps, args.loss, args.data))
        write_report(run_dir.path, f"advlab analyze linearity: {', '.join(specs)}")
    _say_linearity(args, curves, metrics, out)
    return 0


def _linearity_curves(
    args: argparse.Namespace, specs: list[str], eps: list[float]
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, dict[str, Any]], int, str]:
    """Per model spec: its FGSM curve, and its metrics (accuracy per eps, the first eps below one half, and for
    ``linear`` its margins); also the number of images and the data set's name."""
    from advlab.experiments.linearity import eps_below

    curves: dict[str, list[tuple[float, float]]] = {}
    per_model: dict[str, dict[str, Any]] = {}
    images, dataset = 0, ""
    for spec in specs:
        model = _linear_model(args.seed) if spec == LINEAR else zoo.load(spec)
        info = zoo.info_of(model)
        batches = open_data_for(args, info, args.batch_size)
        require(bool((batches.labels() >= 0).all()), f"data {args.data!r} has unlabelled images: accuracy needs labels")
        images, dataset = batches.count, batches.info.dataset
        try:
            curve, flips = _curve_streamed(model, batches, eps, args.loss, args.batch_size, spec == LINEAR)
        except ValueError as e:
            raise AdvlabError(f"{spec!r}: {e}") from None
        curves[spec] = curve
        per_model[spec] = {"accuracy": {str(e): a for e, a in curve}, "eps_below_half": eps_below(curve)}
        if flips is not None:
            per_model[spec].update(flips)
    return curves, per_model, images, dataset


def _curve_streamed(
    model: torch.nn.Module, batches: Batches, eps: list[float], loss: str, batch_size: int, linear: bool
) -> tuple[list[tuple[float, float]], dict[str, float | None] | None]:
    """:func:`~advlab.experiments.linearity.fgsm_curve` read batch by batch (per eps the count of correct
    predictions summed over the batches), and for the linear model the margins of
    :func:`~advlab.experiments.linearity.linear_margins` from its per-image flip distances."""
    from advlab.experiments.linearity import affine_map, fgsm_curve, linear_flip_eps

    correct, flips, n = [0] * len(eps), [], 0
    w_b = None
    for x, y in _stream(batches, model):
        for j, (_, acc) in enumerate(fgsm_curve(model, x, y, eps, loss=loss, batch_size=batch_size)):
            correct[j] += round(acc * len(x))
        n += len(x)
        if linear:
            w_b = w_b or affine_map(model, x.shape[1:])
            flips.append(linear_flip_eps(*w_b, x, y))
    if n == 0:
        raise ValueError("x is empty: nothing to attack")
    curve = [(e, c / n) for e, c in zip(eps, correct, strict=True)]
    if w_b is None:
        return curve, None
    w, flip = w_b[0], torch.cat(flips)
    finite = torch.isfinite(flip)
    pairs = (w[:, None, :] - w[None, :, :]).abs().sum(2)
    margins = {
        "median_flip_eps": float(flip[finite].median()) if finite.any() else None,
        "mean_pair_l1": float(pairs.sum() / (len(w) * (len(w) - 1))),
    }
    return curve, margins


def _say_linearity(
    args: argparse.Namespace, curves: dict[str, list[tuple[float, float]]], metrics: dict[str, Any], out: str | Path
) -> None:
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    for m, c in curves.items():
        say(args, f"{m}: " + ", ".join(f"eps {e:g}: {a:.3f}" for e, a in c))
    flip = metrics["models"].get(LINEAR, {}).get("median_flip_eps")
    if flip is not None:
        say(args, f"{LINEAR}: median L-inf distance to the nearest decision boundary {flip:.3g}")
    say(args, f"wrote {out}")
