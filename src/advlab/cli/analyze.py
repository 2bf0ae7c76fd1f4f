"""``advlab analyze layers``: where in the network an attack acts (seed 003's finding, as a measurement).

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
from advlab.attacks.catalog import make
from advlab.cli.attack import add_attack_args, attack_options, csv_text
from advlab.cli.common import (
    Formatter,
    add_model_args,
    add_run_args,
    build_model,
    command_line,
    default_out,
    load_data_for,
    number,
    positive_int,
    say,
)
from advlab.errors import AdvlabError


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = sub.add_parser("analyze", parents=[flags], formatter_class=Formatter, help="analyses: where in the network an attack acts",
                       description="Analyses of a model under attack. See advlab analyze layers --help.")  # fmt: skip
    inner = p.add_subparsers(dest="analysis", metavar="ANALYSIS", required=True, parser_class=type(p))
    q = inner.add_parser(
        "layers", parents=[flags], formatter_class=Formatter, help="per-layer change of the activations under an attack",
        description="Run an attack and compare every layer's activations on clean and adversarial inputs: relative L2\n"
        "and L-inf change, the share of the change in the largest 1% of units, activation mean and sigma.\n\n"
        "examples:\n"
        "  advlab analyze layers --model digits-cnn --data digits:test --eps 0.1\n"
        "  advlab analyze layers --model efficientnet-lite0 --data samples --eps 2/255 --steps 10 --clamp 99.9",
    )  # fmt: skip
    add_model_args(q)
    q.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    q.add_argument("--attack", "-a", default="pgd", help="the attack (default pgd)")
    add_attack_args(q)
    q.add_argument("--limit", type=positive_int, default=64, help="the first N images (default 64)")
    q.add_argument("--layers", help="comma list of module names (default: every leaf module)")
    q.add_argument("--clamp", type=number, help="also measure the model with feature maps clamped to this percentile (e.g. 99.9)")
    q.add_argument("--batch-size", type=positive_int, default=64)
    q.add_argument("--json", action="store_true", help="print the per-layer table as JSON")
    add_run_args(q)
    q.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from advlab.analysis import changes_table, layer_changes, peak

    model = build_model(args)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    opts = attack_options(args)
    if "eps" not in opts and args.attack in ("pgd", "fgsm", "mifgsm", "apgd", "apgd-t", "noise"):
        opts["eps"] = 0.1 if info.dataset == "digits" else 8 / 255
    atk = make(args.attack, **opts)
    x, y, desc = load_data_for(args.data, info, limit=args.limit)
    if (y < 0).any():
        with torch.no_grad():
            y = model(x).argmax(1)  # unlabelled images: attack the model's own predictions
    layers = [s.strip() for s in args.layers.split(",")] if args.layers else None
    eps = getattr(atk, "eps", None)
    out = args.out or default_out(runs.run_name(info.name, info.dataset, "layers", desc.dataset, atk.name, eps if isinstance(eps, float) else None))
    config = {"command": command_line(args.argv), "model": args.model, "data": args.data, "limit": args.limit, "attack": repr(atk),
              "layers": layers, "clamp": args.clamp}  # fmt: skip
    with runs.start(out, config, force=args.force) as run_dir:
        try:
            changes = layer_changes(model, x, _attack(atk, model, x, y, args.batch_size), layers, batch_size=args.batch_size)
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
            clamped_rows = changes_table(layer_changes(defended, x, _attack(atk, defended, x, y, args.batch_size), batch_size=args.batch_size))
        top = {m: peak(changes, m) for m in ("rel_l2", "rel_linf")}
        metrics = {"model": info.name, "data": args.data, "images": len(x), "attack": repr(atk), "layers": len(rows),
                   "peak_rel_l2": {"layer": top["rel_l2"].name, "depth": top["rel_l2"].depth, "value": top["rel_l2"].rel_l2},
                   "peak_rel_linf": {"layer": top["rel_linf"].name, "depth": top["rel_linf"].depth, "value": top["rel_linf"].rel_linf},
                   "input_rel_l2": rows[0]["rel_l2"], "output_rel_l2": rows[-1]["rel_l2"]}  # fmt: skip
        _write(run_dir, rows, clamped_rows, metrics, info)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        say(args, f"{len(rows)} layers; the relative L2 change peaks at {metrics['peak_rel_l2']['layer']} "
                  f"(depth {metrics['peak_rel_l2']['depth']}, {metrics['peak_rel_l2']['value']:.3g}), L-inf at "
                  f"{metrics['peak_rel_linf']['layer']} ({metrics['peak_rel_linf']['value']:.3g}); input {rows[0]['rel_l2']:.3g}, "
                  f"output {rows[-1]['rel_l2']:.3g}")  # fmt: skip
        say(args, f"wrote {out}")
    return 0


def _attack(atk: Any, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    from advlab.study import adversarials

    try:
        return adversarials(model, atk, x, y, batch_size)
    except ValueError as e:
        raise AdvlabError(f"{atk.name}: {e}") from None


def _write(run_dir: runs.Run, rows: list[dict[str, Any]], clamped: list[dict[str, Any]] | None, metrics: dict[str, Any],
           info: zoo.ModelInfo) -> None:  # fmt: skip
    from advlab.report import line_plot, write_report

    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("layers.csv", csv_text(rows))
    depth = [r["depth"] for r in rows]
    run_dir.save_figure("change_by_layer.png", line_plot(
        {"relative L2 change": [r["rel_l2"] for r in rows], "relative L-inf change": [r["rel_linf"] for r in rows],
         "share in top 1% units": [r["top_share"] for r in rows]},
        "layer (depth; 0 = input)", "clean -> adversarial", f"{info.name}: where the attack acts", x=depth, logy=True, markers=len(rows) <= 30))  # fmt: skip
    series = {"sigma, clean": [r["clean_std"] for r in rows], "sigma, adversarial": [r["adv_std"] for r in rows]}
    if clamped is not None:
        run_dir.save_text("layers_clamped.csv", csv_text(clamped))
        n = min(len(rows), len(clamped))
        series["sigma, adversarial, clamped model"] = [r["adv_std"] for r in clamped[:n]]
        series = {k: v[:n] for k, v in series.items()}
        depth = depth[:n]
    run_dir.save_figure("activation_std.png", line_plot(series, "layer (depth; 0 = input)", "activation sigma",
                                                        f"{info.name}: activation spread", x=depth, markers=len(depth) <= 30))  # fmt: skip
    write_report(run_dir.path, f"advlab analyze layers: {info.name}")
