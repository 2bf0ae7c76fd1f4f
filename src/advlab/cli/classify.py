"""``advlab classify``: top-k classes and probabilities for images or a data spec."""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from advlab import zoo
from advlab.cli.common import (
    add_command,
    add_model_args,
    batch_int,
    build_model,
    command_line,
    open_data_for,
    positive_int,
    progress,
    say,
)
from advlab.data.images import resize_batch
from advlab.errors import AdvlabError
from advlab.evaluation.metrics import accuracy, labelled, top_k_accuracy

MAX_PICTURES = 64


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "classify",
        help="top-k predictions for images or a data set",
        description="Print the model's top-k classes with probabilities for each image.\n\n"
        "examples:\n"
        "  advlab classify samples --model efficientnet-lite0\n"
        "  advlab classify cat.jpg 'photos/*.png' --model efficientnet-lite0 --top 3\n"
        "  advlab classify digits:test --model digits-cnn --limit 8 --json\n"
        "  advlab classify samples --model efficientnet-lite0 --out runs/classify-samples   # + picture grid",
    )
    p.add_argument(
        "inputs", nargs="+", metavar="IMAGE_OR_SPEC", help="image files, globs or data specs (see advlab data)"
    )
    add_model_args(p, default="efficientnet-lite0")
    p.add_argument(
        "--top", "-k", type=positive_int, default=5, help="how many classes to show (all, of a model with fewer)"
    )
    p.add_argument("--limit", type=positive_int, help="only the first N images of each input")
    p.add_argument("--batch-size", type=batch_int, default=32, help="images per forward pass")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--out", "-o", help="also write a run directory with predictions and a picture grid")
    p.add_argument("--force", action="store_true", help="replace an existing --out directory")
    p.set_defaults(func=run)


def predict(model: torch.nn.Module, x: torch.Tensor, batch_size: int, quiet: bool = True) -> torch.Tensor:
    """(N, classes) softmax probabilities of ``model`` on ``x`` (N, C, H, W) in [0, 1], ``batch_size`` at a time."""
    steps = progress(range(0, len(x), batch_size), quiet, desc="classify", unit="batch")
    return torch.cat([probabilities(model, x[i : i + batch_size]) for i in steps])


def probabilities(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(N, classes) softmax probabilities of one batch; outputs of the wrong shape and NaN or infinite logits are an
    :class:`AdvlabError` (a probability computed from them means nothing)."""
    from advlab.evaluation.probes import require_finite

    with torch.inference_mode():
        logits = model(x)
    zoo.check_output(logits, len(x))
    require_finite(logits, "inputs")
    return logits.float().softmax(1)


def run(args: argparse.Namespace) -> int:
    model = build_model(args)
    info = zoo.info_of(model)
    k = min(args.top, info.num_classes)
    opened = [open_data_for(args, info, args.batch_size, spec=spec) for spec in args.inputs]
    if args.out and sum(o.count for o in opened) > MAX_PICTURES:
        raise AdvlabError(f"classify --out draws a picture of every image; use --limit to keep {MAX_PICTURES} or fewer")
    mixed = len({o.info.size for o in opened}) > 1  # e.g. photos at 224 beside a 32x32 tensors file
    tops, ys, kept = [], [], []
    steps = progress(
        (b for o in opened for b in o), args.quiet, desc="classify", unit="batch", total=sum(len(o) for o in opened)
    )
    for xb, yb in steps:  # one batch in memory at a time (all of them with --out, at most MAX_PICTURES images)
        xb = resize_batch(xb, info.input_size) if mixed else xb
        tops.append(probabilities(model, xb).topk(k, dim=1))
        ys.append(yb)
        if args.out:
            kept.append(xb)
    y = torch.cat(ys)
    top_p, top_i = torch.cat([t.values for t in tops]), torch.cat([t.indices for t in tops])
    names = [n for o in opened for n in o.names()]
    results = _predictions(names, y, top_p, top_i, info.class_names)
    metrics = _accuracies(y, top_i, info.name)
    if args.json:
        print(json.dumps({"metrics": metrics, "predictions": results}, indent=2))
    else:
        for r in results:
            truth = f"  (label: {r['label_name']})" if r["label"] is not None else ""
            say(args, f"{r['image']}{truth}")
            for t in r["top"]:
                say(args, f"  {t['probability']:7.2%}  {t['name']}  [{t['class']}]")
        if "top1_accuracy" in metrics:
            say(args, f"top-1 accuracy {metrics['top1_accuracy']:.2%} on {metrics['labelled']} labelled images")
    if args.out:
        _write_run(args, torch.cat(kept), results, metrics, [o.info.label_source for o in opened])
    return 0


def _predictions(
    names: list[str], y: torch.Tensor, top_p: torch.Tensor, top_i: torch.Tensor, classes: list[str]
) -> list[dict[str, Any]]:
    """One entry per image: its name, label (None when unlabelled) and top classes with their probabilities."""
    results = []
    for n, label, ps, idx in zip(names, y.tolist(), top_p.tolist(), top_i.tolist(), strict=True):
        top = [{"class": c, "name": classes[c], "probability": round(p, 6)} for p, c in zip(ps, idx, strict=True)]
        results.append(
            {
                "image": n,
                "label": label if label >= 0 else None,
                "label_name": classes[label] if label >= 0 else None,
                "top": top,
            }
        )
    return results


def _accuracies(y: torch.Tensor, top_i: torch.Tensor, model: str) -> dict[str, Any]:
    """metrics.json: the counts, and over the labelled images (when any) top-1 and top-k accuracy, k the number of
    classes shown (:mod:`advlab.evaluation.metrics`)."""
    n_labelled = int(labelled(y).sum())
    metrics: dict[str, Any] = {"model": model, "images": len(y), "labelled": n_labelled}
    if n_labelled:
        metrics["top1_accuracy"] = accuracy(y, top_i[:, 0])
        metrics[f"top{top_i.shape[1]}_accuracy"] = top_k_accuracy(y, top_i)
    return metrics


def _write_run(
    args: argparse.Namespace, x: torch.Tensor, results: list[dict], metrics: dict, label_sources: list[str | None]
) -> None:
    from advlab import runs
    from advlab.report import image_grid, write_report

    config = {
        "command": command_line(args.argv),
        "model": args.model,
        "inputs": args.inputs,
        "top": args.top,
        "weights": args.weights,
        "label_source": label_sources,  # per input: names, synsets, indices, folder order or none
    }
    with runs.start(args.out, config, force=args.force) as run:
        run.save_json("metrics.json", metrics)
        run.save_json("predictions.json", results)
        titles = [f"{r['image'][:24]}\n{r['top'][0]['name'][:22]} {r['top'][0]['probability']:.0%}" for r in results]
        colors = [
            "black" if r["label"] is None else ("green" if r["top"][0]["class"] == r["label"] else "red")
            for r in results
        ]
        run.save_figure("predictions.png", image_grid(x, titles, title_colors=colors))
        write_report(run.path, f"advlab classify: {args.model}")
    say(args, f"wrote {args.out}")
