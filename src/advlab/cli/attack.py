"""``advlab attack``: run one attack on a data set and leave a run directory a person can open.

The directory holds metrics.json, samples.csv (one row per image), adversarials.safetensors (clean and
adversarial tensors, labels, targets), adversarials/*.png (8-bit files; with --quantize they stay
adversarial when read back), grid.png (clean | amplified perturbation | adversarial) and report.html.
Work is saved after every batch; --resume continues an interrupted run.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

import torch

from advlab import distributed, runs, zoo
from advlab.attacks.base import Target
from advlab.attacks.catalog import attack_classes
from advlab.cli import adversarials
from advlab.cli.common import (
    MAX_IMAGES,
    add_attack_args,
    add_command,
    add_device_args,
    add_label_args,
    add_model_args,
    add_run_args,
    add_selection_args,
    batch_int,
    bounded_int,
    build_model,
    csv_text,
    default_out,
    file_part,
    make_attack,
    open_data_for,
    parse_target,
    place_model,
    positive_int,
    run_config,
    say,
)
from advlab.cli.heartbeat import heartbeat
from advlab.cli.runner import Job, UnitSpec, run_job, run_settings
from advlab.errors import AdvlabError
from advlab.evaluation import metrics as M
from advlab.evaluation.inputs import Indexed, to_device, with_predicted_labels
from advlab.work import Work

#: a batch's per-sample columns (x_adv, clean/adv logits, success, target, norms, model evaluations, min_eps)
Columns = dict[str, torch.Tensor]


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    names = ", ".join(attack_classes())
    p = add_command(
        sub,
        flags,
        "attack",
        help="attack a model on a data set; write adversarial examples",
        description="Run one attack and write a run directory: metrics.json, samples.csv, adversarials.safetensors,\n"
        "adversarials/*.png, grid.png (clean | amplified perturbation | adversarial) and report.html.\n\n"
        f"attacks: {names}\n\n"
        "examples:\n"
        "  advlab attack --model digits-cnn --data digits:test --attack pgd --eps 0.1 --steps 10\n"
        "  advlab attack --model efficientnet-lite0 --data samples --attack pgd --eps 2/255 --steps 30 "
        "--target wombat --quantize\n"
        "  advlab attack --model digits-cnn --data digits:test --attack pgd --eps 0.05,0.1,0.2   # robustness curve\n"
        "  advlab attack --model digits-cnn --data digits:test --attack cw --steps 100 --limit 64",
    )
    add_model_args(p)
    p.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    p.add_argument(
        "--attack",
        "-a",
        required=True,
        help=f"one of: {names} (an eps-bounded attack without --eps: 0.1 on digits, else 8/255)",
    )
    add_attack_args(p)
    p.add_argument("--target", "-t", help="class index or name, 'random' or 'least-likely' (default: untargeted)")
    add_label_args(p)
    p.add_argument("--limit", type=positive_int, help="only the first N images")
    add_selection_args(p)
    p.add_argument(
        "--batch-size", type=batch_int, default=128, help="images attacked together (the unit saved for --resume)"
    )
    p.add_argument(
        "--pngs",
        type=bounded_int(0, MAX_IMAGES),
        default=100,
        help="write PNG files for the first N adversarial examples",
    )
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    add_device_args(p)
    add_run_args(p, resume=True)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    dist = distributed.setup(args.device)
    model = place_model(build_model(args), dist.device, args.channels_last)
    info = zoo.info_of(model)
    atk = make_attack(args, info)
    target = parse_target(args.target, info)
    batches = open_data_for(args, info, batch_size=args.batch_size)
    if args.labels != "predicted" and target is None and bool((batches.labels() < 0).any()):
        raise AdvlabError(
            f"data {args.data!r} has unlabelled images; an untargeted attack needs labels: give --labels predicted "
            "(the model's own predictions) or --target"
        )
    data = with_predicted_labels(batches, model) if args.labels == "predicted" else batches
    name = runs.run_name(
        info.name,
        info.dataset,
        "attack",
        batches.info.dataset,
        atk.name,
        attack=atk,
        target=args.target,
        limit=args.limit,
        settings=run_settings(args),
    )
    config = run_config(
        args,
        attack=repr(atk),
        target=args.target,
        batch_size=args.batch_size,
        label_source=batches.info.label_source,
        **({"labels": "predicted"} if args.labels == "predicted" else {}),
    )
    units = UnitSpec(
        len(batches), f"a batch of {args.batch_size} images", lambda cols: (cols, {}), _light, bar=atk.name
    )
    job = Job(
        args.out or default_out(name),
        config,
        units,
        _attack_batches(model, atk, data, target),
        lambda run_dir, cols, sec: _write(
            run_dir, data, batches.names(), cols, _metrics(cols, cols["y"], atk, info, args, sec), info, args
        ),
        lambda run_dir, m: _report(run_dir, m, info, args),
        inputs={"model": model, "data": (batches.names(), batches.labels())},
        merge=lambda done, _plan: runs.cat_columns(done),
    )
    with heartbeat(model, "attack", args.quiet):
        metrics = run_job(job, args, dist)
    if metrics is not None:
        _print(args, metrics, job.out)
    return 0


def _light(cols: Columns, _info: Any = None) -> Columns:
    """A batch's columns without its adversarial images (they stay in the batch's file until the run is written)."""
    return {k: v for k, v in cols.items() if k != "x_adv"}


def _print(args: argparse.Namespace, metrics: dict[str, Any], out: Any) -> None:
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    from advlab.report.text import attack_lines

    say(args, "\n".join(attack_lines(metrics)))
    say(args, f"wrote {out}")


def _attack_batches(
    model: torch.nn.Module, atk: Any, data: Indexed, target: Target
) -> Callable[[Work[Columns]], Columns]:
    """The command's compute: attack the batches ``work`` asks for (each read from ``data`` when its turn comes),
    record each one's columns (on the CPU) as it ends, and return every batch's columns but the adversarial images
    (the finished ones and the new) joined in order."""
    from advlab.device import device_of

    device = device_of(model)

    def compute(work: Work[Columns]) -> Columns:
        done = work.finished()
        for b in work.todo(range(len(data))):
            xb, yb = data.batch(b)
            cols = _attack_batch(model, atk, to_device(xb, device), to_device(yb, device), target)
            work.record(b, cols)
            done[b] = _light(cols)
        return runs.cat_columns(done)

    return compute


def _attack_batch(model: torch.nn.Module, atk: Any, xb: torch.Tensor, yb: torch.Tensor, target: Target) -> Columns:
    from advlab.evaluation.probes import require_finite

    with torch.no_grad():
        clean = model(xb)
    zoo.check_output(clean, len(xb))
    require_finite(clean, "clean inputs")  # a NaN logit's argmax is no prediction: refuse, do not report it
    try:
        res = atk(model, xb, yb, target=target)
    except ValueError as e:
        raise AdvlabError(f"{atk.name}: {e}") from None
    tgt = res.target if res.target is not None else torch.full_like(yb, -1)
    part = {
        "x_adv": res.x_adv,
        "clean_logits": clean,
        "adv_logits": res.logits,
        "success": res.success,
        "target": tgt,
        "l0": res.l0,
        "l2": res.l2,
        "linf": res.linf,
        "forwards": res.forwards,
        "backwards": res.backwards,
        "y": yb,
    }
    if res.min_eps is not None and res.curve:  # an eps list's curve; minimum-norm attacks give distances instead
        part["min_eps"] = res.min_eps
    from advlab.cli import distances

    part.update(distances.columns(res, xb, atk))
    return {k: v.detach().cpu() for k, v in part.items()}


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 6)


def _metrics(
    cols: Columns, y: torch.Tensor, atk: Any, info: zoo.ModelInfo, args: argparse.Namespace, seconds: float
) -> dict[str, Any]:
    """Attack metrics over the data set, from :mod:`advlab.evaluation.metrics`. Untargeted success counts over
    clean-correct images (an image the model already gets wrong is no success of the attack); targeted
    success over all images. Norms and the adversarial confidence are over the successful images."""
    clean_pred, adv_pred = cols["clean_logits"].argmax(1), cols["adv_logits"].argmax(1)
    targeted = bool((cols["target"] >= 0).any())
    success = cols["success"].bool()
    over = torch.ones_like(success) if targeted else M.clean_correct(y, clean_pred)
    m: dict[str, Any] = {
        "model": info.name,
        "data": args.data,
        "attack": atk.name,
        "config": repr(atk),
        "images": len(y),
        "targeted": targeted,
        "target": args.target,
        "labels": args.labels,
        "success_rate": M.attack_success_rate(success, over),
        **M.rates(y, clean_pred, adv_pred),
    }
    counted = success & over  # the successes the rate counts (an image the model got wrong already is none)
    for k in ("linf", "l2", "l0"):
        stats = M.norm_stats(cols[k][counted])
        m[f"{k}_median"], m[f"{k}_mean"] = _round(stats["median"]), _round(stats["mean"])
    m["clean_confidence_mean"] = _round(M.mean_or_none(M.confidence(cols["clean_logits"])))
    m["adversarial_confidence_mean"] = _round(M.mean_or_none(M.confidence(cols["adv_logits"])[counted]))
    if targeted:
        m["target_probability_mean"] = _round(
            M.mean_or_none(M.confidence(cols["adv_logits"], cols["target"].clamp(min=0)))
        )
    m["gradient_evaluations"], m["forward_evaluations"] = int(cols["backwards"].sum()), int(cols["forwards"].sum())
    m["seconds"] = round(seconds, 3)
    if "min_eps" in cols:
        m["curve"] = [_curve_point(e, cols, y, clean_pred, over) for e in sorted(atk.eps)]
    from advlab.cli import distances

    m.update(distances.summary(cols, y, atk))
    return m


def _curve_point(
    eps: float, cols: Columns, y: torch.Tensor, clean_pred: torch.Tensor, over: torch.Tensor
) -> dict[str, float | None]:
    """Success rate, robust accuracy and the median L-inf and L2 norms of the successes at ``eps`` of a robustness
    curve: a sample is broken at ``eps`` when the smallest listed eps that broke it (``min_eps``, inf if none) is
    at most ``eps``; a broken sample's prediction is taken as wrong (-1), an unbroken one's as its clean
    prediction. The norms are those of the successes the rate counts at ``eps`` (``over``: the samples the model
    got right, or all for a targeted attack; each perturbation the one found at its smallest breaking eps, so
    inside this ball), in [0, 1] pixel units; None when nothing broke."""
    broken = cols["min_eps"] <= eps
    adv_pred = torch.where(broken, torch.full_like(clean_pred, -1), clean_pred)
    counted = broken & over
    return {
        "eps": eps,
        "success_rate": M.attack_success_rate(broken, over),
        "robust_accuracy": M.robust_accuracy(y, clean_pred, adv_pred),
        "linf_median": _round(M.norm_stats(cols["linf"][counted])["median"]),
        "l2_median": _round(M.norm_stats(cols["l2"][counted])["median"]),
    }


def sample_rows(cols: Columns, y: torch.Tensor, names: list[str], info: zoo.ModelInfo) -> list[dict[str, Any]]:
    """samples.csv: one row per image (label, clean and adversarial prediction and confidence, target, norms)."""
    p_clean, p_adv = cols["clean_logits"].float().softmax(1), cols["adv_logits"].float().softmax(1)
    cp, ap = p_clean.argmax(1), p_adv.argmax(1)
    rows = []
    for i in range(len(y)):
        lab, t = int(y[i]), int(cols["target"][i])
        rows.append(
            {
                "index": i,
                "image": names[i] if i < len(names) else str(i),
                "label": lab if lab >= 0 else "",
                "label_name": info.class_names[lab] if lab >= 0 else "",
                "clean_pred": int(cp[i]),
                "clean_name": info.class_names[int(cp[i])],
                "clean_confidence": round(float(p_clean[i, cp[i]]), 6),
                "adv_pred": int(ap[i]),
                "adv_name": info.class_names[int(ap[i])],
                "adv_confidence": round(float(p_adv[i, ap[i]]), 6),
                "target": t if t >= 0 else "",
                "target_probability": round(float(p_adv[i, t]), 6) if t >= 0 else "",
                "success": bool(cols["success"][i]),
                "l0": int(cols["l0"][i]),
                "l2": round(float(cols["l2"][i]), 6),
                "linf": round(float(cols["linf"][i]), 6),
                "forwards": int(cols["forwards"][i]),
                "backwards": int(cols["backwards"][i]),
            }
        )
    return rows


def _write(
    run_dir: runs.Run,
    data: Indexed,
    names: list[str],
    cols: Columns,
    metrics: dict[str, Any],
    info: zoo.ModelInfo,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """metrics.json, samples.csv, adversarials.safetensors and the PNGs (one batch at a time), grid.png and
    curve.png; returns ``metrics``."""
    rows = sample_rows(cols, cols["y"], names, info)
    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("samples.csv", csv_text(rows))
    _pictures(run_dir, data, cols, rows, args, metrics["config"])
    from advlab.cli import distances

    distances.write(run_dir, cols, cols["y"], metrics, f"{metrics['attack']} on {info.name}")
    if "curve" in metrics:
        from advlab.report import line_plot

        eps = [c["eps"] for c in metrics["curve"]]
        fig = line_plot(
            {"robust accuracy": [c["robust_accuracy"] for c in metrics["curve"]]},
            "eps (pixel units)",
            "accuracy",
            f"{metrics['attack']} on {info.name}: accuracy vs eps",
            x=eps,
        )
        run_dir.save_figure("curve.png", fig)
    return metrics


#: the images grid.png shows
GRID = 8


def _pictures(
    run_dir: runs.Run, data: Indexed, cols: Columns, rows: list[dict[str, Any]], args: argparse.Namespace, attack: str
) -> None:
    """adversarials.safetensors and the first ``--pngs`` adversarial examples as 8-bit PNG files, written batch by
    batch, then grid.png (successes first)."""
    from advlab.data.images import save_image
    from advlab.report.figures import adversarial_grid, prediction_titles

    folder = run_dir.path / "adversarials"
    folder.mkdir(exist_ok=True)
    show = sorted(range(len(rows)), key=lambda i: not bool(cols["success"][i]))[:GRID]
    picked: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    columns = {k: cols[k] for k in ("y", "target", "success", "adv_logits")}
    meta = {"model": args.model, "data": args.data, "attack": attack}
    for at, x, x_adv in adversarials.write(run_dir, data, columns, meta):
        for i in range(at, min(at + len(x), max(args.pngs, 0))):
            save_image(x_adv[i - at], folder / f"{i:05d}_{file_part(rows[i]['adv_name'])}.png")
        picked.update({i: (x[i - at], x_adv[i - at]) for i in show if at <= i < at + len(x)})
    clean_t = prediction_titles(
        "clean", [rows[i]["clean_name"] for i in show], [rows[i]["clean_confidence"] for i in show]
    )
    adv_t = prediction_titles(
        "adversarial", [rows[i]["adv_name"] for i in show], [rows[i]["adv_confidence"] for i in show]
    )
    colors = ["red" if rows[i]["success"] else "black" for i in show]
    xs, advs = (torch.stack([picked[i][k] for i in show]) for k in (0, 1))
    run_dir.save_figure("grid.png", adversarial_grid(xs, advs, clean_t, adv_t, colors))


def _report(run_dir: runs.Run, metrics: dict[str, Any], info: zoo.ModelInfo, args: argparse.Namespace) -> None:
    """report.html: the printed summary and the most telling picture first (the robustness curve of an eps list
    or of a minimum-norm attack, else the grid of attacked images), then the metrics and the other pictures."""
    from advlab.report.html import html_lines, write_report
    from advlab.report.text import attack_lines

    lead = next((f for f in ("curve.png", "robust_curve.png") if (run_dir.path / f).is_file()), "grid.png")
    summary = [("Summary", html_lines(attack_lines(metrics)))]
    write_report(
        run_dir.path, f"advlab attack: {metrics['attack']} on {info.name}, {args.data}", summary=summary, lead=lead
    )
