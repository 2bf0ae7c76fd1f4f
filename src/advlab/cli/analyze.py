"""``advlab analyze layers|units|linearity``: analyses of a model, each writing a run directory.

``units``: Szegedy et al. 2013's comparison of the top images of single units and of random directions of
a layer, with their label purity (units.png, units.csv, metrics.json, report.html). ``linearity``:
Goodfellow et al. 2015's FGSM accuracy-vs-eps curves of a linear model and a CNN on one plot
(linearity.png, curves.csv, metrics.json, report.html).

``layers``: where in the network an attack acts (seed 003's finding, as a measurement).

For clean vs adversarial inputs, per layer (input first, then every leaf module in forward order): the
relative L2 and L-inf change of the activations, the share of the change carried by the largest 1% of the
units, and the activation mean and sigma; with ``--clamp P`` the same on the model with its feature maps
clamped to the P-th percentile (the seed's "with a clamp, sigma grows after BN"). Writes layers.csv,
metrics.json, change_by_layer.png, activation_std.png and report.html.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from advlab import runs, zoo
from advlab.cli.common import (
    MAX_EPS_VALUES,
    SEED_RANGE,
    Formatter,
    add_attack_args,
    add_model_args,
    add_run_args,
    batch_int,
    bounded_int,
    build_model,
    command_line,
    csv_text,
    default_out,
    floats,
    load_data_for,
    make_attack,
    number,
    positive_int,
    require,
    say,
    seed_int,
)
from advlab.errors import AdvlabError


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "analyze",
        parents=[flags],
        formatter_class=Formatter,
        help="analyses: where an attack acts, what units mean, linearity",
        description="Analyses of a model: advlab analyze layers|units|linearity --help.",
    )
    inner = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True, parser_class=type(p))
    q = inner.add_parser(
        "layers",
        parents=[flags],
        formatter_class=Formatter,
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
        help="also measure the model with feature maps clamped to this percentile (50..100, e.g. 99.9)",
    )
    q.add_argument("--batch-size", type=batch_int, default=64, help="images per batch")
    q.add_argument("--json", action="store_true", help="print the per-layer table as JSON")
    add_run_args(q)
    q.set_defaults(func=run)
    _register_units(inner, flags)
    _register_linearity(inner, flags)


def run(args: argparse.Namespace) -> int:
    from advlab.experiments.layers import changes_table, layer_changes, peak

    model = build_model(args)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    atk = make_attack(args, info)
    x, y, desc = load_data_for(args.data, info, limit=args.limit)
    if (y < 0).any():
        with torch.no_grad():
            y = model(x).argmax(1)  # unlabelled images: attack the model's own predictions
    layers = [s.strip() for s in args.layers.split(",")] if args.layers else None
    eps = getattr(atk, "eps", None)
    out = args.out or default_out(
        runs.run_name(
            info.name, info.dataset, "layers", desc.dataset, atk.name, eps if isinstance(eps, float) else None
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
        try:
            changes = layer_changes(
                model, x, _attack(atk, model, x, y, args.batch_size), layers, batch_size=args.batch_size
            )
        except ValueError as e:
            raise AdvlabError(str(e)) from None
        rows = changes_table(changes)
        clamped_rows: list[dict[str, Any]] | None = None
        if args.clamp is not None:
            from advlab.defenses import clamp_activations

            try:
                defended = clamp_activations(model, calibration=x, percentile=args.clamp)
            except ValueError as e:
                raise AdvlabError(f"--clamp: {e}") from None
            clamped_rows = changes_table(
                layer_changes(defended, x, _attack(atk, defended, x, y, args.batch_size), batch_size=args.batch_size)
            )
        top = {m: peak(changes, m) for m in ("rel_l2", "rel_linf")}
        metrics = {
            "model": info.name,
            "data": args.data,
            "images": len(x),
            "attack": repr(atk),
            "layers": len(rows),
            "peak_rel_l2": {"layer": top["rel_l2"].name, "depth": top["rel_l2"].depth, "value": top["rel_l2"].rel_l2},
            "peak_rel_linf": {
                "layer": top["rel_linf"].name,
                "depth": top["rel_linf"].depth,
                "value": top["rel_linf"].rel_linf,
            },
            "input_rel_l2": rows[0]["rel_l2"],
            "output_rel_l2": rows[-1]["rel_l2"],
        }
        _write(run_dir, rows, clamped_rows, metrics, info)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        say(
            args,
            f"{len(rows)} layers; the relative L2 change peaks at {metrics['peak_rel_l2']['layer']} "
            f"(depth {metrics['peak_rel_l2']['depth']}, {metrics['peak_rel_l2']['value']:.3g}), L-inf at "
            f"{metrics['peak_rel_linf']['layer']} ({metrics['peak_rel_linf']['value']:.3g}); input {rows[0]['rel_l2']:.3g}, "
            f"output {rows[-1]['rel_l2']:.3g}",
        )
        say(args, f"wrote {out}")
    return 0


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
    from advlab.report import line_plot, write_report

    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("layers.csv", csv_text(rows))
    depth = [r["depth"] for r in rows]
    run_dir.save_figure(
        "change_by_layer.png",
        line_plot(
            {
                "relative L2 change": [r["rel_l2"] for r in rows],
                "relative L-inf change": [r["rel_linf"] for r in rows],
                "share in top 1% units": [r["top_share"] for r in rows],
            },
            "layer",
            "clean -> adversarial",
            f"{info.name}: where the attack acts",
            x=depth,
            logy=True,
            markers=len(rows) <= 30,
            xticklabels=[r["name"] for r in rows],
        ),
    )
    series = {"sigma, clean": [r["clean_std"] for r in rows], "sigma, adversarial": [r["adv_std"] for r in rows]}
    if clamped is not None:
        run_dir.save_text("layers_clamped.csv", csv_text(clamped))
        n = min(len(rows), len(clamped))
        series["sigma, adversarial, clamped model"] = [r["adv_std"] for r in clamped[:n]]
        series = {k: v[:n] for k, v in series.items()}
        depth = depth[:n]
    run_dir.save_figure(
        "activation_std.png",
        line_plot(
            series,
            "layer",
            "activation sigma",
            f"{info.name}: activation spread",
            x=depth,
            markers=len(depth) <= 30,
            xticklabels=[r["name"] for r in rows[: len(depth)]],
        ),
    )
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
    q = inner.add_parser(
        "units",
        parents=[flags],
        formatter_class=Formatter,
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


#: the most activation values (images x units) for which every unit's purity is computed (the "all units"
#: mean, one sort of the whole (N, D) matrix); larger layers or data sets skip it
ALL_UNITS_MAX = 2**25


def run_units(args: argparse.Namespace) -> int:
    """``advlab analyze units``: top images of units and random directions, their label purity (unlabelled
    data: the model's predictions as labels). Everything is computed before the run directory opens."""
    from advlab.experiments.units import (
        activations,
        chance_purity,
        probe_activations,
        probes_table,
        purities,
        purity_summary,
    )

    model = build_model(args)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    x, y, desc = load_data_for(args.data, info, limit=args.limit)
    try:
        layer, phi = activations(model, x, args.layer, pool=args.pool, batch_size=args.batch_size)
        analysis = probe_activations(
            phi,
            args.units,
            directions=args.directions,
            k=args.k,
            seed=args.seed,
            top_units=args.top_units,
            layer=layer,
            pool=args.pool,
        )
        every = (
            probe_activations(phi, range(phi.shape[1]), directions=0, k=args.k, layer=layer)
            if phi.numel() <= ALL_UNITS_MAX
            else None
        )
    except ValueError as e:
        raise AdvlabError(str(e)) from None
    labelled = bool((y >= 0).all())
    if not labelled:
        with torch.no_grad():
            y = torch.cat([model(x[i : i + args.batch_size]).argmax(1) for i in range(0, len(x), args.batch_size)])
    pur = purities(analysis, y)
    summary = purity_summary(analysis, y)
    all_units = purity_summary(every, y) if every is not None else None
    metrics = {
        "model": info.name,
        "data": args.data,
        "images": len(x),
        "layer": layer,
        "units_in_layer": analysis.dim,
        "pool": args.pool,
        "k": args.k,
        "seed": args.seed,
        "labels": "true" if labelled else "predicted",
        "chance_purity": chance_purity(y, args.k, seed=args.seed),
        "unit_purity_mean": summary["unit_purity_mean"],
        "direction_purity_mean": summary["direction_purity_mean"],
        "direction_minus_unit": summary["direction_minus_unit"],
        "all_units_purity_mean": all_units["unit_purity_mean"] if all_units else None,
        "constant_units_in_layer": len(all_units["constant_units"]) if all_units else None,
        "unit_purity": {str(p.index): v for p, v in zip(analysis.units, pur["units"])},
        "direction_purity": {str(p.index): v for p, v in zip(analysis.random, pur["directions"])},
    }
    out = args.out or default_out(runs.run_name(info.name, info.dataset, "units", desc.dataset, layer))
    config = {
        "command": command_line(args.argv),
        "model": args.model,
        "data": args.data,
        "limit": args.limit,
        "layer": layer,
        "units": [p.index for p in analysis.units],
        "directions": args.directions,
        "k": args.k,
        "seed": args.seed,
        "pool": args.pool,
    }
    with runs.start(out, config, force=args.force) as run_dir:
        run_dir.save_json("metrics.json", metrics)
        run_dir.save_text("units.csv", csv_text(probes_table(analysis, y)))
        run_dir.save_figure("units.png", _units_figure(analysis, x, y, pur))
        from advlab.report import write_report

        write_report(
            run_dir.path,
            f"advlab analyze units: {info.name}, {layer}",
            sections=[("Units vs random directions", _units_text(metrics))],
        )
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        every_text = (
            f", all {analysis.dim - metrics['constant_units_in_layer']} live units {metrics['all_units_purity_mean']:.2f}"
            if all_units
            else ""
        )
        say(
            args,
            f"{layer} ({analysis.dim} units): label purity of the top-{args.k} images: units {summary['unit_purity_mean']:.2f}"
            f"{every_text}, random directions {summary['direction_purity_mean']:.2f}, chance {metrics['chance_purity']:.2f}",
        )
        say(args, f"wrote {out}")
    return 0


def _units_figure(analysis: Any, x: torch.Tensor, y: torch.Tensor, pur: dict[str, list[float]]) -> Any:
    """One row per probe (units, then random directions): its top-k images, titled with label and projection;
    the first image of a row also names the probe and its purity. Direction rows are titled in blue."""
    from advlab.report import image_grid

    probes = analysis.probes
    purity = [*pur["units"], *pur["directions"]]
    images = torch.cat([x[p.images] for p in probes]).cpu()
    titles, colors = [], []
    for p, q in zip(probes, purity):
        head = (
            ("unit " if p.kind == "unit" else "random ")
            + f"{p.index}"
            + (" (dead)" if p.constant else "")
            + f" | purity {q:.2f}"
        )
        for rank, (i, v) in enumerate(zip(p.images.tolist(), p.values.tolist())):
            text = f"y={int(y[i])} {v:.3g}"
            titles.append(f"{head}\n{text}" if rank == 0 else f"\n{text}")
            colors.append("black" if p.kind == "unit" else "tab:blue")
    cell = 1.5 if x.shape[-1] <= 32 else 2.0
    return image_grid(images, titles, ncols=analysis.k, cell=cell, title_colors=colors)


def _units_text(m: dict[str, Any]) -> str:
    """The report's paragraph: Szegedy's claim with this run's numbers."""
    import html

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
#: the model name that stands for the multinomial logistic regression trained on the spot
LINEAR = "linear"


def _register_linearity(inner: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    q = inner.add_parser(
        "linearity",
        parents=[flags],
        formatter_class=Formatter,
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
    from advlab.experiments.linearity import (
        affine_map,
        check_eps_list,
        fgsm_curve,
        linear_flip_eps,
    )

    specs = list(dict.fromkeys(s.strip() for s in args.models.split(",") if s.strip()))
    require(bool(specs), "--models: give at least one model")
    try:
        eps = sorted(set(check_eps_list(args.eps)))
    except ValueError as e:
        raise AdvlabError(f"--eps: {e}") from None
    curves: dict[str, list[tuple[float, float]]] = {}
    per_model: dict[str, dict[str, Any]] = {}
    dataset = ""
    for spec in specs:
        model = _linear_model(args.seed) if spec == LINEAR else zoo.load(spec)
        info: zoo.ModelInfo = model.info  # type: ignore[assignment]
        x, y, desc = load_data_for(args.data, info, limit=args.limit)
        require(bool((y >= 0).all()), f"data {args.data!r} has unlabelled images: accuracy needs labels")
        dataset = desc.dataset
        try:
            curve = fgsm_curve(model, x, y, eps, loss=args.loss, batch_size=args.batch_size)
        except ValueError as e:
            raise AdvlabError(f"{spec!r}: {e}") from None
        curves[spec] = curve
        below = [e for e, a in curve if a < 0.5]
        entry: dict[str, Any] = {
            "accuracy": {str(e): a for e, a in curve},
            "eps_below_half": below[0] if below else None,
        }
        if spec == LINEAR:
            w, b = affine_map(model, x.shape[1:])
            flip = linear_flip_eps(w, b, x, y)
            pairs = (w[:, None, :] - w[None, :, :]).abs().sum(2)
            entry.update(
                {
                    "median_flip_eps": float(flip[torch.isfinite(flip)].median())
                    if torch.isfinite(flip).any()
                    else None,
                    "mean_pair_l1": float(pairs.sum() / (len(w) * (len(w) - 1))),
                }
            )
        per_model[spec] = entry
    metrics = {"data": args.data, "images": len(x), "loss": args.loss, "eps": eps, "models": per_model}
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
        from advlab.report import line_plot, write_report

        run_dir.save_json("metrics.json", metrics)
        run_dir.save_text(
            "curves.csv", csv_text([{"model": m, "eps": e, "accuracy": a} for m, c in curves.items() for e, a in c])
        )
        run_dir.save_figure(
            "linearity.png",
            line_plot(
                {m: [a for _, a in c] for m, c in curves.items()},
                "eps (L-inf, [0, 1] pixels)",
                "accuracy under FGSM",
                f"FGSM ({args.loss}) on {args.data}",
                x=eps,
            ),
        )
        write_report(run_dir.path, f"advlab analyze linearity: {', '.join(specs)}")
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for m, c in curves.items():
            say(args, f"{m}: " + ", ".join(f"eps {e:g}: {a:.3f}" for e, a in c))
        if LINEAR in per_model and per_model[LINEAR]["median_flip_eps"] is not None:
            say(
                args,
                f"{LINEAR}: median L-inf distance to the nearest decision boundary {per_model[LINEAR]['median_flip_eps']:.3g}",
            )
        say(args, f"wrote {out}")
    return 0
