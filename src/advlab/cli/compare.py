"""``advlab compare``: several minimum-norm attacks on the same model, data and query budget, scored by
AttackBench's optimality (:mod:`advlab.experiments.optimality`).

The run directory holds optimality.md (the table), optimality.csv, metrics.json (scores, curves, passes,
seconds), distances.safetensors (each attack's per-image distances and the reference), curves.png (robust
accuracy against eps, one line per attack and the reference) and report.html. The data is read batch by batch:
its clean-correct images are attacked --batch-size at a time (reading stops at --limit of them), and of each
batch only the per-image distances are kept.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch

from advlab import runs, zoo
from advlab.cli.common import (
    add_command,
    add_model_args,
    add_run_args,
    batch_int,
    bounded_int,
    build_model,
    csv_text,
    default_out,
    open_data_for,
    positive_int,
    run_config,
    say,
)
from advlab.data import Batches
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
    p.add_argument("--batch-size", type=batch_int, default=128, help="images read and attacked together (default 128)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    names = list(dict.fromkeys(a.strip() for a in args.attacks.split(",") if a.strip()))
    if not names:
        raise AdvlabError("--attacks needs at least one attack")
    model = build_model(args).eval()
    info = zoo.info_of(model)
    # --limit counts clean-correct images, not the data's: every image may be read until that many are found
    batches = open_data_for(argparse.Namespace(**{**vars(args), "limit": None}), info, batch_size=args.batch_size)
    nothing = AdvlabError(f"data {args.data!r} has no image {info.name} classifies correctly; nothing to compare on")
    if not bool((batches.labels() >= 0).any()):
        raise nothing
    out = args.out or default_out(
        runs.run_name(
            info.name, info.dataset, "compare", batches.info.dataset, "-".join(n.replace(":", "_") for n in names)
        )
    )
    config = run_config(args, attacks=names, norm=args.norm, budget=args.budget, batch_size=args.batch_size)
    show = (
        None
        if args.quiet or args.json or not sys.stderr.isatty()
        else (lambda n: print(f"running {n} ...", file=sys.stderr))
    )
    # bad attack names fail in _compare, before a directory exists
    cmp = _compare(model, _correct_images(model, batches, args.limit), names, args, show)
    if cmp is None:
        raise nothing
    with runs.start(out, config, force=args.force) as run_dir:
        metrics = {"model": args.model, "data": args.data, **cmp.to_dict()}
        _write(run_dir, cmp, metrics, names, info.name)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        say(args, cmp.markdown())
        say(args, f"wrote {out}")
    return 0


def _correct_images(
    model: torch.nn.Module, batches: Batches, limit: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``limit`` images of ``batches`` that ``model`` classifies correctly, in data order and in batches
    of the same size; each batch read in a background thread while the one before is attacked, and nothing read
    after the last one needed."""
    from advlab.cli.transfer import regrouped
    from advlab.evaluation.inputs import Source

    def correct() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _, x, y in Source(batches).select(lambda b: True):
            with torch.no_grad():
                keep = clean_correct(y, model(x).argmax(1))
            yield x[keep], y[keep]

    return regrouped(correct(), batches.batch_size, limit)


def _compare(
    model: torch.nn.Module,
    images: Iterator[tuple[torch.Tensor, torch.Tensor]],
    names: list[str],
    args: argparse.Namespace,
    show: Callable[[str], None] | None,
) -> optimality.Comparison | None:
    """:func:`advlab.experiments.optimality.compare` batch by batch: every attack runs on each batch of ``images``
    in turn, and of a batch only each attack's per-image distances (and passes and seconds) are kept; the scores are
    those of the whole set. None when ``images`` is empty."""
    runs_of: dict[str, list[optimality.Entry]] = {n: [] for n in names}
    correct, sizes = [], []
    for b, (x, y) in enumerate(images):
        with torch.no_grad():
            logits = model(x)
        classes = logits.shape[1]
        correct.append(clean_correct(y, logits.argmax(1)).cpu())
        sizes.append(len(y))
        if b == 0:
            _check_attacks(names, args.norm, args.budget, classes, tuple(x.shape[1:]))
        for name in names:
            if show is not None:
                show(name if b == 0 else f"{name} on images {sum(sizes[:-1]) + 1}-{sum(sizes)}")
            run = optimality.run_peer if ":" in name else optimality.run_advlab
            runs_of[name].append(run(name, model, x, y, args.norm, args.budget, classes))
    if not sizes:
        return None
    entries = [_joined(parts, sizes) for parts in runs_of.values()]
    return optimality.score(entries, torch.cat(correct), args.norm, args.budget)


def _check_attacks(names: list[str], norm: str, budget: int, classes: int, shape: tuple[int, ...]) -> None:
    """Every attack name (and its norm) checked before anything runs: an unknown one is an AdvlabError; a peer whose
    library does not import is no error (its row says "not installed")."""
    for name in names:
        if ":" not in name:
            optimality.advlab_attack(name, norm, budget, classes)
            continue
        try:
            optimality.peer_attack(name, norm, budget, classes, shape)
        except ImportError:
            pass


def _joined(parts: list[optimality.Entry], sizes: list[int]) -> optimality.Entry:
    """One attack's entries on successive batches of ``sizes`` images as one: the distances in order, the passes
    per image averaged over all images, the seconds summed."""
    first = parts[0]
    if len(parts) == 1 or first.distances is None:
        return first
    n = sum(sizes)
    return optimality.Entry(
        first.name,
        torch.cat([p.distances for p in parts if p.distances is not None]),
        sum(p.forwards * k for p, k in zip(parts, sizes, strict=True)) / n,
        sum(p.backwards * k for p, k in zip(parts, sizes, strict=True)) / n,
        sum(p.seconds for p in parts),
        first.note,
    )


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
