"""``advlab transfer``: craft adversarial examples on surrogate models and score them on victims (Szegedy et al. 2014).

The run directory holds transfer.md (the matrix: rows = surrogates, columns = victims, a white-box column and a
chance row), transfer.csv (one row per pair with counts and 95% intervals), heatmap.png, metrics.json and
report.html. Models are zoo specs, optionally with weights as ``NAME=PATH`` (e.g. ``digits-cnn=half.safetensors``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from advlab import runs, zoo
from advlab.cli.common import (
    add_attack_args,
    add_command,
    add_run_args,
    batch_int,
    bounded_int,
    command_line,
    csv_text,
    default_out,
    make_attack,
    open_data_for,
    positive_int,
    say,
)
from advlab.data import Batches
from advlab.errors import AdvlabError
from advlab.experiments import transfer
from advlab.report.html import html_table

#: the most models a transfer matrix loads (--from and --to together), and the most noise tries per image
MAX_MODELS = 32
MAX_TRIES = 10_000


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "transfer",
        help="craft adversarial examples on surrogates, score them on victims: a transfer matrix",
        description="Transfer attacks (Szegedy et al. 2014; ensembles: Liu et al. 2017). "
        "The attack runs white box on each\n"
        "--from model (and, with --ensemble, on the average of their logits); each --to model only classifies the\n"
        "results. A cell is the fraction of the images the victim classifies correctly that it misclassifies on the\n"
        "surrogate's adversarial examples; the chance row is random noise at the same eps on the victim.\n\n"
        "models: zoo specs, comma-separated or repeated, each optionally NAME=WEIGHTS; models of another input size\n"
        "get the images resized (the eps-ball is in the data's space); all must share channels and classes\n\n"
        "examples:\n"
        "  advlab transfer --from digits-cnn,digits-cnn=half_b.safetensors --data digits:test --eps 0.2\n"
        "  advlab transfer --from efficientnet-lite0 --to efficientnet-lite1,efficientnet-lite2 "
        "--data samples --eps 8/255\n"
        "  advlab transfer --from a.py:net=a.pt,b.py:net=b.pt --to c.py:net=c.pt --data cifar10:test "
        "--ensemble --limit 1000",
    )
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="MODEL[=WEIGHTS],...",
        help="surrogate models the attack is crafted on",
    )
    p.add_argument(
        "--to",
        dest="targets",
        action="append",
        metavar="MODEL[=WEIGHTS],...",
        help="victim models (default: the --from models, a full cross matrix)",
    )
    p.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    p.add_argument("--attack", "-a", default="pgd", help="the attack (default pgd; see advlab attack --help)")
    add_attack_args(p)
    p.add_argument(
        "--ensemble", action="store_true", help="add a row: the attack on the logit average of all --from models"
    )
    p.add_argument(
        "--noise-tries",
        type=bounded_int(1, MAX_TRIES),
        default=transfer.NOISE_TRIES,
        help=f"random points per image in the chance baseline (1..{MAX_TRIES})",
    )
    p.add_argument("--limit", type=positive_int, default=500, help="the first N images (default 500)")
    p.add_argument("--batch-size", type=batch_int, default=128, help="images attacked together")
    p.add_argument("--json", action="store_true", help="print the matrix as JSON")
    add_run_args(p)
    p.set_defaults(func=run)


def _specs(values: list[str] | None) -> list[str]:
    out = [s.strip() for v in values or [] for s in v.split(",") if s.strip()]
    return list(dict.fromkeys(out))


def load_models(specs: list[str]) -> dict[str, tuple[str, torch.nn.Module]]:
    """Each ``NAME[=WEIGHTS]`` spec built once: spec -> (short unique label, model)."""
    models: dict[str, torch.nn.Module] = {}
    labels: dict[str, str] = {}
    for spec in specs:
        name, eq, weights = spec.partition("=")
        if eq and not weights:
            raise AdvlabError(f"model spec {spec!r}: give weights after '=' (NAME=path/to/weights.safetensors)")
        if weights and not Path(weights).is_file():
            raise AdvlabError(f"model spec {spec!r}: no such weights file {weights}")
        models[spec] = zoo.load(name.strip(), weights=weights or None)
        labels[spec] = f"{name}={Path(weights).stem}" if weights else name
    taken = list(labels.values())
    return {s: (labels[s] if taken.count(labels[s]) == 1 else s, m) for s, m in models.items()}


def check_models(models: list[tuple[str, torch.nn.Module]]) -> zoo.ModelInfo:
    """All models must share channels and classes; returns the first one's info."""
    first_label, first = models[0]
    info = zoo.info_of(first)
    for label, m in models[1:]:
        i = zoo.info_of(m)
        if i.num_classes != info.num_classes:
            raise AdvlabError(
                f"{label} has {i.num_classes} classes but {first_label} has {info.num_classes}: "
                "transfer needs the same classes"
            )
        if i.channels != info.channels:
            raise AdvlabError(f"{label} takes {i.channels}-channel images but {first_label} takes {info.channels}")
    return info


def run(args: argparse.Namespace) -> int:
    sources, targets = _model_specs(args)
    models = load_models(list(dict.fromkeys([*sources, *targets])))
    info = check_models(list(models.values()))
    atk = make_attack(args, info)
    eps = getattr(atk, "eps", None)
    if eps is not None and not isinstance(eps, (int, float)):
        raise AdvlabError("--eps: a transfer matrix needs one eps, not a list")
    batches, dropped = _labelled_data(args, info)
    out = args.out or default_out(
        runs.run_name(
            info.name, info.dataset, "transfer", batches.info.dataset, atk.name, float(eps) if eps is not None else None
        )
    )
    config = {
        "command": command_line(args.argv),
        "from": sources,
        "to": targets,
        "data": args.data,
        "limit": args.limit,
        "attack": repr(atk),
        "ensemble": args.ensemble,
        "noise_tries": args.noise_tries,
    }
    with runs.start(out, config, force=args.force) as run_dir:
        m = transfer.transfer_matrix_batches(
            [models[s] for s in sources],
            [models[t] for t in targets],
            batches,
            atk,
            ensemble=args.ensemble,
            noise_tries=args.noise_tries,
            progress=not args.quiet and sys.stderr.isatty(),
        )
        metrics = {
            "from": sources,
            "to": targets,
            "data": args.data,
            "unlabelled_dropped": dropped,
            **m.to_dict(),
        }
        _write(run_dir, m, metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        say(args, m.markdown())
        say(args, f"wrote {out}")
    return 0


def _model_specs(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """The --from and --to specs, each once (--to defaults to --from), checked against the limits."""
    sources, targets = _specs(args.sources), _specs(args.targets)
    if not sources:
        raise AdvlabError("--from needs at least one model")
    targets = targets or sources
    if len(set(sources + targets)) > MAX_MODELS:
        raise AdvlabError(
            f"--from and --to name {len(set(sources + targets))} models; a transfer matrix takes at most {MAX_MODELS}"
        )
    if args.ensemble and len(sources) < 2:
        raise AdvlabError("--ensemble needs at least two --from models")
    return sources, targets


def _labelled_data(args: argparse.Namespace, info: zoo.ModelInfo) -> tuple[Labelled, int]:
    """The --data images with labels in the models' classes, streamed (the one data path, :func:`open_data_for`),
    and how many unlabelled images are left out (counted from the labels alone, before any image is read)."""
    opened = open_data_for(args, info, batch_size=args.batch_size)
    labels = opened.labels()
    if not bool((labels >= 0).any()):
        raise AdvlabError(f"data {args.data!r} has no labelled images of {info.name}'s classes; transfer needs labels")
    return Labelled(opened, int((labels >= 0).sum())), int((labels < 0).sum())


class Labelled:
    """The ``count`` labelled images of ``batches`` in batches of its batch size, in data order, as if the unlabelled
    ones had never been there: read one batch at a time, the next one in a background thread while this one is
    attacked."""

    def __init__(self, batches: Batches, count: int) -> None:
        self.batches, self.info, self.count = batches, batches.info, count

    def __len__(self) -> int:
        return -(-self.count // self.batches.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from advlab.evaluation.inputs import Source

        def labelled() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for _, x, y in Source(self.batches).select(lambda b: True):
                keep = y >= 0
                yield (x, y) if bool(keep.all()) else (x[keep], y[keep])

        return regrouped(labelled(), self.batches.batch_size)


def regrouped(
    parts: Iterable[tuple[torch.Tensor, torch.Tensor]], batch_size: int, limit: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The images of ``parts`` (``(x, y)`` batches of any sizes, in order) in batches of ``batch_size``, the last
    one shorter: at most ``batch_size`` images are held over from one part to the next. ``limit``: only the first
    ``limit`` images; ``parts`` is closed there, so nothing after them is read."""
    it = iter(parts)
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    held = given = 0
    try:
        for x, y in it:
            if limit is not None:
                x, y = x[: limit - given - held], y[: limit - given - held]
            if len(y):
                xs.append(x)
                ys.append(y)
                held += len(y)
            while held >= batch_size:
                x_all = xs[0] if len(xs) == 1 else torch.cat(xs)
                y_all = ys[0] if len(ys) == 1 else torch.cat(ys)
                yield x_all[:batch_size], y_all[:batch_size]
                xs, ys = ([x_all[batch_size:]], [y_all[batch_size:]]) if held > batch_size else ([], [])
                held, given = held - batch_size, given + batch_size
            if limit is not None and given + held >= limit:
                break
        if held:
            yield torch.cat(xs), torch.cat(ys)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


def _write(run_dir: runs.Run, m: transfer.TransferMatrix, metrics: dict[str, Any]) -> None:
    from advlab.report import write_report
    from advlab.report.results import transfer_heatmap

    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("transfer.csv", csv_text(m.rows()))
    md = m.markdown()
    run_dir.save_text("transfer.md", md)
    run_dir.save_figure("heatmap.png", transfer_heatmap(m))
    write_report(
        run_dir.path,
        f"advlab transfer: {', '.join(m.sources)} -> {', '.join(m.targets)}",
        [("Transfer matrix", html_table(md))],
    )
