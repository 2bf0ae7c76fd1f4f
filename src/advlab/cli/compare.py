"""``advlab compare``: several minimum-norm attacks on the same model, data and query budget, scored by
AttackBench's optimality (:mod:`advlab.experiments.optimality`).

The run directory holds optimality.md (the table), optimality.csv, metrics.json (scores, curves, passes,
seconds), distances.safetensors (each attack's per-image distances and the reference), curves.png (robust
accuracy against eps, one line per attack and the reference) and report.html.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import torch

from advlab import runs, zoo
from advlab.cli.common import (
    add_command,
    add_model_args,
    add_run_args,
    bounded_int,
    build_model,
    csv_text,
    default_out,
    load_data_for,
    positive_int,
    run_config,
    say,
)
from advlab.errors import AdvlabError
from advlab.evaluation.metrics import clean_correct
from advlab.experiments import optimality
from advlab.report.html import html_table

#: the most forward + backward passes per image (50 times AttackBench's 2000)
MAX_BUDGET = 100_000


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "compare",
        help="minimum-norm attacks side by side: AttackBench optimality",
        description="Run several attacks on the same images and budget; each image's reference distance is "
        "the smallest any\nattack found, and each attack scores 1 - (A - A*) / (clean_acc * eps_max - A*) "
        "(A: the area under its robust\n"
        "accuracy vs eps curve). advlab's attacks: "
        + ", ".join(optimality.ADVLAB_NORMS)
        + " (apgd / apgd-t by a per-image\n"
        "bisection); peers, when installed: torchattacks:cw|deepfool, foolbox:fmn|ddn|cw|deepfool, art:cw|deepfool.\n\n"
        "examples:\n"
        "  advlab compare --model digits-cnn --data digits:test --attacks fmn,ddn,cw,deepfool --norm l2 --budget 2000\n"
        "  advlab compare --model digits-cnn --data digits:test --attacks fmn,apgd,foolbox:fmn --norm linf --limit 50",
    )
    add_model_args(p)
    p.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    p.add_argument("--attacks", required=True, help="comma-separated attacks: advlab names and library:name peers")
    p.add_argument("--norm", required=True, help="l2, linf, l1 or l0 (each attack must have it)")
    p.add_argument(
        "--budget",
        type=bounded_int(1, MAX_BUDGET),
        default=2000,
        help=f"forward + backward passes per image (AttackBench: 2000; at most {MAX_BUDGET})",
    )
    p.add_argument("--limit", type=positive_int, default=100, help="the first N clean-correct images")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(a.strip() for a in args.attacks.split(",") if a.strip()))
    if not names:
        raise AdvlabError("--attacks needs at least one attack")
    model = build_model(args).eval()
    info = zoo.info_of(model)
    x, y, desc = load_data_for(args.data, info)
    with torch.no_grad():
        keep = clean_correct(y, model(x).argmax(1))
    if not bool(keep.any()):
        raise AdvlabError(f"data {args.data!r} has no image {info.name} classifies correctly; nothing to compare on")
    x, y = x[keep][: args.limit], y[keep][: args.limit]
    out = args.out or default_out(
        runs.run_name(info.name, info.dataset, "compare", desc.dataset, "-".join(n.replace(":", "_") for n in names))
    )
    config = run_config(
        args,
        attacks=names,
        norm=args.norm,
        budget=args.budget,
    )
    show = (
        None
        if args.quiet or args.json or not sys.stderr.isatty()
        else (lambda n: print(f"running {n} ...", file=sys.stderr))
    )
    cmp = optimality.compare(
        model, x, y, names, args.norm, args.budget, progress=show
    )  # bad names fail here, before a directory exists
    with runs.start(out, config, force=args.force) as run_dir:
        metrics = {"model": args.model, "data": args.data, **cmp.to_dict()}
        _write(run_dir, cmp, metrics, names, info.name)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        say(args, cmp.markdown())
        say(args, f"wrote {out}")
    return 0


def _write(
    run_dir: runs.Run, cmp: optimality.Comparison, metrics: dict[str, Any], names: list[str], model: str
) -> None:
    from advlab.report import line_plot, write_report

    run_dir.save_json("metrics.json", metrics)
    md = cmp.markdown()
    run_dir.save_text("optimality.md", md)
    rows = [{k: v for k, v in r.items() if k != "curve"} for r in cmp.rows]
    run_dir.save_text(
        "optimality.csv",
        csv_text([{"attack": r["attack"], **{k: r.get(k, "") for k in rows[0] if k != "attack"}} for r in rows]),
    )
    tensors = {"reference": cmp.reference.float().contiguous()}
    tensors.update({name: d.float().contiguous() for name, d in cmp.distances.items()})
    run_dir.save_tensors("distances.safetensors", tensors, metadata={"norm": cmp.norm, "budget": str(cmp.budget)})
    series: dict[str, Sequence[float]] = {r["attack"]: [c[1] for c in r["curve"]] for r in cmp.rows if "curve" in r}
    if series:
        eps = [c[0] for c in next(r for r in cmp.rows if "curve" in r)["curve"]]
        series["reference (best per image)"] = [
            c[1] for c in optimality.curve_points(cmp.reference, cmp.correct, cmp.eps_max)
        ]
        fig = line_plot(
            series,
            f"eps ({cmp.norm}, pixel units)",
            "robust accuracy",
            f"{model}: robust accuracy vs eps, budget {cmp.budget}",
            x=eps,
            markers=False,
        )
        run_dir.save_figure("curves.png", fig)
    write_report(
        run_dir.path, f"advlab compare: {', '.join(names)} on {model} ({cmp.norm})", [("Optimality", html_table(md))]
    )
