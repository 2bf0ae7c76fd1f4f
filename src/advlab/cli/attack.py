"""``advlab attack``: run one attack on a data set and leave a run directory a person can open.

The directory holds metrics.json, samples.csv (one row per image), adversarials.safetensors (clean and
adversarial tensors, labels, targets), adversarials/*.png (8-bit files; with --quantize they stay
adversarial when read back), grid.png (clean | amplified perturbation | adversarial) and report.html.
Work is saved after every batch; --resume continues an interrupted run.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import time
from typing import Any

import torch

from advlab import distributed, runs, zoo
from advlab.attacks.base import Target
from advlab.attacks.catalog import attack_classes, make
from advlab.cli.common import (
    Formatter,
    add_device_args,
    add_model_args,
    add_run_args,
    build_model,
    check_resumable,  # noqa: F401 - re-exported: other commands import it from here
    command_line,
    default_out,
    load_data_for,
    number,
    place_model,
    positive_int,
    progress,
    say,
)
from advlab.cli.shards import Shards, open_shards
from advlab.errors import AdvlabError

#: (flag, attack field, type, help) for every attack option the CLI passes through
ATTACK_OPTIONS: list[tuple[str, str, Any, str]] = [
    ("--eps", "eps", None, "perturbation budget in [0, 1] pixel units, e.g. 8/255; a comma list gives a robustness curve"),
    ("--norm", "norm", str, "threat model: linf, l2 or l1"),
    ("--alpha", "alpha", number, "step size in pixel units (PGD family; default 2.5 eps / steps; NES: eps / 4)"),
    ("--steps", "steps", positive_int, "iterations"),
    ("--restarts", "restarts", positive_int, "random restarts (PGD family)"),
    ("--loss", "loss", str, "objective: ce, margin, dlr, onehot"),
    ("--momentum", "momentum", number, "momentum (MI-FGSM's mu; NES: weight of past gradient estimates)"),
    ("--n-targets", "n_targets", positive_int, "APGD-T: how many most-likely wrong classes to target"),
    ("--tries", "tries", positive_int, "noise: random draws per image"),
    ("--c", "c", number, "C&W / L-BFGS: initial weight of the loss against the perturbation size"),
    ("--kappa", "kappa", number, "C&W: confidence margin"),
    ("--lr", "lr", number, "C&W / SPSA: Adam learning rate"),
    ("--binary-search-steps", "binary_search_steps", positive_int, "C&W: rounds of the search over c"),
    ("--overshoot", "overshoot", number, "DeepFool: overshoot"),
    ("--lam", "lam", number, "one-hot attack: weight lambda of ||x - x0||^2"),
    ("--max-queries", "max_queries", positive_int, "black-box attacks (nes, spsa, square): model queries per image"),
    ("--samples", "samples", positive_int, "NES / SPSA: antithetic pairs per gradient estimate (2 queries each)"),
    ("--sigma", "sigma", number, "NES: std of the Gaussian probes, in pixel units"),
    ("--delta", "delta", number, "SPSA: size of the Rademacher probes, in pixel units"),
    ("--p-init", "p_init", number, "Square: fraction of the image the first squares cover"),
]


def add_attack_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("attack options (given ones are checked against the attack: an option it lacks is an error)")
    for flag, dest, typ, help_ in ATTACK_OPTIONS:
        if flag == "--eps":
            g.add_argument(flag, dest=dest, type=_eps_list, help=help_)
        else:
            g.add_argument(flag, dest=dest, type=typ, help=help_)
    g.add_argument("--random-start", dest="random_start", action=argparse.BooleanOptionalAction, default=None,
                   help="start from a random point in the ball (PGD family)")  # fmt: skip
    g.add_argument("--seed", type=int, default=0, help="seed for random starts and random targets")
    g.add_argument("--quantize", action="store_true", help="round adversarial images to 8 bits (saved PNGs stay adversarial)")


def _eps_list(text: str) -> float | list[float]:
    values = [number(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError("empty eps")
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"eps must be positive, got {text!r}")
    return values[0] if len(values) == 1 else values


def default_eps(info: zoo.ModelInfo) -> float:
    """The L-inf eps a command uses when none is given: 0.1 on the 8x8 digits, 8/255 on photos."""
    return 0.1 if info.dataset == "digits" else 8 / 255


def make_attack(args: argparse.Namespace, info: zoo.ModelInfo) -> Any:
    """``make(args.attack, ...)`` with the given options; an eps-bounded attack without --eps gets :func:`default_eps`."""
    from advlab.attacks.catalog import options

    opts = attack_options(args)
    classes = attack_classes()
    if "eps" not in opts and args.attack in classes and "eps" in options(classes[args.attack]):
        opts["eps"] = default_eps(info)
    return make(args.attack, **opts)


def attack_options(args: argparse.Namespace) -> dict[str, Any]:
    """The attack options the user gave (None = not given, left at the attack's default)."""
    opts = {dest: getattr(args, dest) for _, dest, _, _ in ATTACK_OPTIONS}
    opts["random_start"] = args.random_start
    opts["seed"] = args.seed
    opts["quantize"] = args.quantize or None
    return {k: v for k, v in opts.items() if v is not None}


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    names = ", ".join(attack_classes())
    p = sub.add_parser(
        "attack", parents=[flags], formatter_class=Formatter, help="attack a model on a data set; write adversarial examples",
        description="Run one attack and write a run directory: metrics.json, samples.csv, adversarials.safetensors,\n"
        "adversarials/*.png, grid.png (clean | amplified perturbation | adversarial) and report.html.\n\n"
        f"attacks: {names}\n\n"
        "examples:\n"
        "  advlab attack --model digits-cnn --data digits:test --attack pgd --eps 0.1 --steps 10\n"
        "  advlab attack --model efficientnet-lite0 --data samples --attack pgd --eps 2/255 --steps 30 --target wombat --quantize\n"
        "  advlab attack --model digits-cnn --data digits:test --attack pgd --eps 0.05,0.1,0.2   # robustness curve\n"
        "  advlab attack --model digits-cnn --data digits:test --attack cw --steps 100 --limit 64",
    )
    add_model_args(p)
    p.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    p.add_argument("--attack", "-a", required=True, help=f"one of: {names}")
    add_attack_args(p)
    p.add_argument("--target", "-t", help="class index or name, 'random' or 'least-likely' (default: untargeted)")
    p.add_argument("--limit", type=positive_int, help="only the first N images")
    p.add_argument("--batch-size", type=positive_int, default=128)
    p.add_argument("--pngs", type=int, default=100, help="write PNG files for the first N adversarial examples")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    add_device_args(p)
    add_run_args(p, resume=True)
    p.set_defaults(func=run)


def parse_target(text: str | None, info: zoo.ModelInfo) -> Target:
    """A class index, a class name (case-insensitive, as listed by the model), 'random' or 'least-likely'."""
    if text is None or text in ("random", "least-likely"):
        return text
    if text.lstrip("-").isdigit():
        t = int(text)
        if not 0 <= t < info.num_classes:
            raise AdvlabError(f"target {t} is out of range: {info.name} has classes 0..{info.num_classes - 1}")
        return t
    lookup = {name.lower(): i for i, name in enumerate(info.class_names)}
    if text.lower() in lookup:
        return lookup[text.lower()]
    raise AdvlabError(f"unknown target {text!r}: give a class index 0..{info.num_classes - 1}, a class name of {info.name}, 'random' or 'least-likely'")


def csv_text(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return buf.getvalue()


def short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def run(args: argparse.Namespace) -> int:
    dist = distributed.setup(args.device)
    model = place_model(build_model(args), dist.device, args.channels_last)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    atk = make(args.attack, **attack_options(args))
    target = parse_target(args.target, info)
    x, y, desc = load_data_for(args.data, info, limit=args.limit)
    if target is None and (y < 0).any():
        raise AdvlabError(f"data {args.data!r} has unlabelled images; an untargeted attack needs labels (or give --target)")
    eps = getattr(atk, "eps", None)
    alpha = getattr(atk, "alpha", None)
    name = runs.run_name(info.name, info.dataset, "attack", desc.dataset, atk.name, eps if isinstance(eps, float) else None, alpha)
    out = args.out or default_out(name)
    config = {"command": command_line(args.argv), "model": args.model, "weights": args.weights, "data": args.data,
              "limit": args.limit, "attack": repr(atk), "target": args.target, "batch_size": args.batch_size}  # fmt: skip
    n_units = math.ceil(len(x) / args.batch_size)
    with open_shards(dist, out, config, n_units, force=args.force, resume=args.resume,
                     unit_name=f"a batch of {args.batch_size} images") as opened:  # fmt: skip
        sh = opened.shards
        if sh is None:
            if dist.is_main():
                say(args, f"{out} is complete already")
            return 0
        with sh.working():
            _attack_batches(model, atk, x, y, target, args, sh, dist.device)
        if not dist.is_main():
            return 0
        cols = _columns(sh.load_all(lambda t, j: (t, j)))
        metrics = _metrics(cols, y, atk, info, args)
        sh.finish()
        _write(sh.run, x, y, cols, metrics, info, args)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        goal = "hit the target" if metrics["targeted"] else "changed a correct prediction"
        say(args, f"{atk.name} on {metrics['images']} images: success {metrics['success_rate']:.2%} ({goal}), "
                  f"clean accuracy {metrics['clean_accuracy']:.2%} -> adversarial {metrics['adversarial_accuracy']:.2%}, "
                  f"median L-inf {metrics['linf_median']}, median L2 {metrics['l2_median']}")  # fmt: skip
        say(args, f"wrote {out}")
    return 0


def _attack_batches(model: torch.nn.Module, atk: Any, x: torch.Tensor, y: torch.Tensor, target: Target,
                    args: argparse.Namespace, sh: Shards, device: torch.device) -> None:  # fmt: skip
    """Attack this rank's batches that are not saved yet, saving each batch's columns (on the CPU) as it ends."""
    todo = sh.todo()
    show = not args.quiet and sh.dist.is_main()
    for b in progress(todo, not show, desc=atk.name, unit="batch", total=len(todo)):
        i = b * args.batch_size
        xb, yb = x[i : i + args.batch_size].to(device), y[i : i + args.batch_size].to(device)
        t0 = time.perf_counter()
        with torch.no_grad():
            clean = model(xb)
        try:
            res = atk(model, xb, yb, target=target)
        except ValueError as e:
            raise AdvlabError(f"{atk.name}: {e}") from None
        dt = time.perf_counter() - t0
        tgt = res.target if res.target is not None else torch.full_like(yb, -1)
        part = {"x_adv": res.x_adv, "clean_logits": clean, "adv_logits": res.logits, "success": res.success, "target": tgt,
                "l0": res.l0, "l2": res.l2, "linf": res.linf, "forwards": res.forwards, "backwards": res.backwards}  # fmt: skip
        if res.min_eps is not None:
            part["min_eps"] = res.min_eps
        sh.save(b, {k: v.detach().cpu() for k, v in part.items()}, {"seconds": dt})


def _columns(states: dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]]) -> dict[str, torch.Tensor]:
    """The saved batches joined in order; ``seconds`` is their summed attack time."""
    cols: dict[str, list[torch.Tensor]] = {}
    for b in sorted(states):
        for k, v in states[b][0].items():
            cols.setdefault(k, []).append(v)
    out = {k: torch.cat(v) for k, v in cols.items()}
    out["seconds"] = torch.tensor(sum(float(j["seconds"]) for _, j in states.values()))
    return out


def _median(v: torch.Tensor) -> float | None:
    return round(float(v.double().median()), 6) if v.numel() else None


def _mean(v: torch.Tensor) -> float | None:
    return round(float(v.double().mean()), 6) if v.numel() else None


def _metrics(cols: dict[str, torch.Tensor], y: torch.Tensor, atk: Any, info: zoo.ModelInfo, args: argparse.Namespace) -> dict[str, Any]:
    """Attack metrics over the data set. Untargeted success counts over clean-correct images (an image the
    model already gets wrong is no success of the attack); targeted success over all images."""
    clean_pred, adv_pred = cols["clean_logits"].argmax(1), cols["adv_logits"].argmax(1)
    labelled = y >= 0
    correct = (clean_pred == y) & labelled
    targeted = bool((cols["target"] >= 0).any())
    success = cols["success"]
    over = torch.ones_like(success) if targeted else correct
    n_lab = max(1, int(labelled.sum()))
    p_adv = cols["adv_logits"].float().softmax(1)
    m: dict[str, Any] = {
        "model": info.name, "data": args.data, "attack": atk.name, "config": repr(atk), "images": len(y),
        "targeted": targeted, "target": args.target,
        "success_rate": float(success[over].float().mean()) if over.any() else 0.0,
        "clean_accuracy": float(correct.sum()) / n_lab,
        "adversarial_accuracy": float(((adv_pred == y) & labelled).sum()) / n_lab,
        "strict_attack_success_rate": float((correct & (adv_pred != y)).sum()) / max(1, int(correct.sum())),
        "prediction_change_rate": float((adv_pred != clean_pred).float().mean()),
    }  # fmt: skip
    for k in ("linf", "l2", "l0"):
        m[f"{k}_median"], m[f"{k}_mean"] = _median(cols[k][success]), _mean(cols[k][success])
    m["clean_confidence_mean"] = _mean(cols["clean_logits"].float().softmax(1).amax(1))
    m["adversarial_confidence_mean"] = _mean(p_adv.amax(1)[success])
    if targeted:
        m["target_probability_mean"] = _mean(p_adv.gather(1, cols["target"].clamp(min=0)[:, None]).squeeze(1))
    m["gradient_evaluations"], m["forward_evaluations"] = int(cols["backwards"].sum()), int(cols["forwards"].sum())
    m["seconds"] = round(float(cols["seconds"]), 3)
    if "min_eps" in cols:
        eps_list = atk.eps
        m["curve"] = [{"eps": e, "success_rate": float((cols["min_eps"][over] <= e).float().mean()) if over.any() else 0.0,
                       "adversarial_accuracy": float((correct & (cols["min_eps"] > e)).sum()) / n_lab}
                      for e in sorted(eps_list)]  # fmt: skip
    return m


def sample_rows(cols: dict[str, torch.Tensor], y: torch.Tensor, names: list[str], info: zoo.ModelInfo) -> list[dict[str, Any]]:
    p_clean, p_adv = cols["clean_logits"].float().softmax(1), cols["adv_logits"].float().softmax(1)
    cp, ap = p_clean.argmax(1), p_adv.argmax(1)
    rows = []
    for i in range(len(y)):
        lab, t = int(y[i]), int(cols["target"][i])
        rows.append({
            "index": i, "image": names[i] if i < len(names) else str(i),
            "label": lab if lab >= 0 else "", "label_name": info.class_names[lab] if lab >= 0 else "",
            "clean_pred": int(cp[i]), "clean_name": info.class_names[int(cp[i])], "clean_confidence": round(float(p_clean[i, cp[i]]), 6),
            "adv_pred": int(ap[i]), "adv_name": info.class_names[int(ap[i])], "adv_confidence": round(float(p_adv[i, ap[i]]), 6),
            "target": t if t >= 0 else "", "target_probability": round(float(p_adv[i, t]), 6) if t >= 0 else "",
            "success": bool(cols["success"][i]), "l0": int(cols["l0"][i]), "l2": round(float(cols["l2"][i]), 6),
            "linf": round(float(cols["linf"][i]), 6), "forwards": int(cols["forwards"][i]), "backwards": int(cols["backwards"][i]),
        })  # fmt: skip
    return rows


def _write(run_dir: runs.Run, x: torch.Tensor, y: torch.Tensor, cols: dict[str, torch.Tensor], metrics: dict[str, Any],
           info: zoo.ModelInfo, args: argparse.Namespace) -> None:  # fmt: skip
    from advlab import data
    from advlab.data.images import save_image
    from advlab.report import adversarial_grid, line_plot, write_report

    names = data.item_names(args.data, limit=len(y))
    rows = sample_rows(cols, y, names, info)
    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("samples.csv", csv_text(rows))
    run_dir.save_tensors("adversarials.safetensors", {"x": x, "x_adv": cols["x_adv"], "y": y, "target": cols["target"],
                         "success": cols["success"], "adv_logits": cols["adv_logits"]},
                         metadata={"model": args.model, "data": args.data, "attack": metrics["config"]})  # fmt: skip
    pngs = run_dir.path / "adversarials"
    pngs.mkdir(exist_ok=True)
    for i in range(min(max(args.pngs, 0), len(x))):
        save_image(cols["x_adv"][i], pngs / f"{i:05d}_{rows[i]['adv_name'][:24].replace('/', '-').replace(' ', '-')}.png")
    show = sorted(range(len(x)), key=lambda i: not bool(cols["success"][i]))[:8]  # successes first
    clean_t = [f"clean: {short(rows[i]['clean_name'])} {rows[i]['clean_confidence']:.0%}" for i in show]
    adv_t = [f"adversarial: {short(rows[i]['adv_name'])} {rows[i]['adv_confidence']:.0%}" for i in show]
    colors = ["red" if rows[i]["success"] else "black" for i in show]
    idx = torch.tensor(show, dtype=torch.long)
    run_dir.save_figure("grid.png", adversarial_grid(x[idx], cols["x_adv"][idx], clean_t, adv_t, colors))
    if "curve" in metrics:
        eps = [c["eps"] for c in metrics["curve"]]
        fig = line_plot({"adversarial accuracy": [c["adversarial_accuracy"] for c in metrics["curve"]]}, "eps (pixel units)",
                        "accuracy", f"{metrics['attack']} on {info.name}: accuracy vs eps", x=eps)  # fmt: skip
        run_dir.save_figure("curve.png", fig)
    run_dir.clear_batches()
    write_report(run_dir.path, f"advlab attack: {metrics['attack']} on {info.name}, {args.data}")
