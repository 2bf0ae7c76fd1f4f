"""``advlab detect``: train a SafetyNet-style detector and attack it the way the lecture says to (seed 004).

Steps: (1) a seeded fraction of the training split (``--calibration``) is held out; (2) the training attack
(default PGD, L-inf eps 0.1 on digits) runs on the rest, and a detector (:func:`advlab.defenses.train_detector`)
learns to tell those clean images from the successful adversarial ones on one layer's activations
(default the penultimate layer); (3) the threshold is the detector score flagging at most ``--fpr`` (5%)
of the held-out clean training images; (4) on the test split: the ROC AUC against held-out attacks (the
training attack itself, PGD at half and twice the eps, FGSM, DeepFool; or ``--held-out``); the
non-adaptive success (the training attack, which ignores the detector, counted only where it
misclassifies AND is not flagged) and the adaptive success (PGD on the guarded model with
:func:`advlab.defenses.guarded_loss`: fooling classifier and detector at once, the same eps and budget).

The run directory holds metrics.json, roc.png, detector.safetensors (the detector's weights, its layer,
pooling and threshold as metadata) and report.html.
"""

from __future__ import annotations

import argparse
import html
import json
from typing import Any

import torch

from advlab import runs, zoo
from advlab.attacks.base import Attack
from advlab.attacks.catalog import make
from advlab.cli.common import (
    MAX_EPOCHS,
    MAX_STEPS,
    Formatter,
    add_attack_args,
    add_model_args,
    add_run_args,
    batch_int,
    bounded_int,
    build_model,
    command_line,
    default_out,
    epochs_int,
    load_data_for,
    make_attack,
    number,
    positive_int,
    say,
    steps_int,
)

#: the most hidden units of the detector's MLP, and the most held-out attacks
MAX_HIDDEN = 65_536
MAX_HELD_OUT = 32


def _hidden(text: str) -> int:
    """--hidden: an integer up to MAX_HIDDEN (a negative one is refused when the detector is set up, saying why)."""
    return bounded_int(-(2**31), MAX_HIDDEN)(text)


from advlab.device import device_of
from advlab.errors import AdvlabError

#: held-out attacks that need no eps (minimum-norm attacks)
UNBOUNDED = ("deepfool", "cw", "lbfgs")


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "detect",
        parents=[flags],
        formatter_class=Formatter,
        help="train a detector of adversarial inputs (SafetyNet) and attack classifier and detector at once",
        description="Seed 004's SafetyNet: a small classifier on one layer's activations (default the penultimate\n"
        "layer) learns to tell clean images from adversarial ones made by --attack on --data-train. The threshold\n"
        "flags --fpr of held-out clean training images. On --data: ROC AUC against held-out attacks, and the\n"
        "lecture's point: an attack that ignores the detector (counted only if it misclassifies and is not\n"
        "flagged) versus an adaptive attack that must fool classifier and detector at once.\n\n"
        "held-out attacks (--held-out): NAME@EPS or NAME, comma-separated, e.g. pgd@0.05,fgsm@0.1,deepfool\n"
        "(default: the training attack, pgd at eps/2 and 2 eps, fgsm at eps, deepfool)\n\n"
        "examples:\n"
        "  advlab detect --model digits-cnn --data-train digits:train --data digits:test\n"
        "  advlab detect --model digits-cnn --data-train digits:train --data digits:test --attack pgd --eps 0.1 --steps 20\n"
        "  advlab detect --model digits-cnn --data-train digits:train --data digits:test --layer net.features.7 --hidden 0",
    )
    add_model_args(p)
    p.add_argument("--data-train", required=True, help="data spec the detector is trained on (e.g. digits:train)")
    p.add_argument("--data", "-d", required=True, help="data spec it is evaluated on (e.g. digits:test)")
    p.add_argument("--attack", "-a", default="pgd", help="the training attack, eps-bounded (pgd, fgsm, mifgsm, apgd)")
    add_attack_args(p)
    g = p.add_argument_group("detector")
    g.add_argument("--layer", help="module name whose output the detector reads (default: the penultimate layer)")
    g.add_argument(
        "--pool",
        choices=("auto", "flatten", "mean"),
        default="auto",
        help="how a feature map becomes a vector (auto: flatten up to 4096 values, else the spatial mean)",
    )
    g.add_argument(
        "--hidden",
        type=_hidden,
        default=64,
        help=f"hidden units of the detector's MLP (0: logistic regression; at most {MAX_HIDDEN})",
    )
    g.add_argument("--epochs", type=epochs_int, default=50, help=f"training epochs of the detector (1..{MAX_EPOCHS})")
    g.add_argument(
        "--calibration",
        type=number,
        default=0.2,
        help="fraction of --data-train held out (clean) to choose the threshold, in (0, 1)",
    )
    g.add_argument(
        "--fpr",
        type=number,
        default=0.05,
        help="false-positive rate on the held-out clean images at the threshold, in (0, 1)",
    )
    e = p.add_argument_group("evaluation")
    e.add_argument("--held-out", help="attacks the detector never saw, e.g. pgd@0.05,fgsm@0.1,deepfool")
    e.add_argument(
        "--adaptive-steps",
        type=steps_int,
        help=f"steps of the adaptive PGD (default: the training attack's, at least 10; at most {MAX_STEPS})",
    )
    e.add_argument(
        "--adaptive-c", type=number, default=1.0, help="weight c of the detector's margin in the adaptive objective"
    )
    e.add_argument("--adaptive-kappa", type=number, default=1.0, help="margin kappa beyond which a goal stops pulling")
    p.add_argument("--limit-train", type=positive_int, help="only the first N images of --data-train")
    p.add_argument("--limit", type=positive_int, help="only the first N images of --data")
    p.add_argument("--batch-size", type=batch_int, default=256, help="images per attack batch")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    add_run_args(p)
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------------ setup
def _training_attack(args: argparse.Namespace, info: zoo.ModelInfo) -> tuple[Attack, float]:
    """The eps-bounded training attack (made as every command makes it: without --eps, :func:`default_eps`)."""
    if args.attack in UNBOUNDED:
        raise AdvlabError(
            f"the training attack must be eps-bounded (pgd, fgsm, mifgsm, apgd), not {args.attack!r}: "
            "the adaptive attack is compared with it at the same eps"
        )
    if isinstance(args.eps, list):
        raise AdvlabError(f"detect takes one --eps, got {','.join(f'{e:g}' for e in args.eps)}")
    atk = make_attack(args, info)
    eps = getattr(atk, "eps", None)
    if not isinstance(eps, float):
        raise AdvlabError(f"the training attack must be eps-bounded (pgd, fgsm, mifgsm, apgd), not {args.attack!r}")
    return atk, eps


def _label(atk: Attack) -> str:
    eps = getattr(atk, "eps", None)
    return f"{atk.name}@{eps:g}" if isinstance(eps, float) else atk.name


def _held_out(spec: str | None, atk: Attack, eps: float, seed: int) -> list[tuple[str, Attack]]:
    """(label, attack) pairs; the training attack itself (run on the other split) comes first, duplicates are dropped."""
    norm = getattr(atk, "norm", "linf")
    if spec is None:
        items = [
            f"pgd@{eps / 2:g}",
            f"pgd@{min(2 * eps, 1.0) if norm == 'linf' else 2 * eps:g}",
            f"fgsm@{eps:g}",
            "deepfool",
        ]
    else:
        items = [s.strip() for s in spec.split(",") if s.strip()]
        if not items:
            raise AdvlabError("--held-out names no attack; e.g. pgd@0.05,fgsm@0.1,deepfool")
        if len(items) > MAX_HELD_OUT:
            raise AdvlabError(f"--held-out names {len(items)} attacks; at most {MAX_HELD_OUT}")
    out = [(f"{_label(atk)} (training attack)", atk)]
    seen = {_label(atk)}
    for item in items:
        name, at, value = item.partition("@")
        name = name.strip()
        opts: dict[str, Any] = {"seed": seed}
        if at:
            try:
                opts["eps"] = number(value)
            except argparse.ArgumentTypeError as e:
                raise AdvlabError(f"--held-out {item!r}: {e}") from None
            if name in ("pgd", "fgsm", "mifgsm", "apgd", "apgd-t"):
                opts["norm"] = norm
        held = make(name, **opts)
        if _label(held) not in seen:
            seen.add(_label(held))
            out.append((_label(held), held))
    return out


def _split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, calibration) indices: a seeded random ``fraction`` of range(n) for calibration."""
    if not 0 < fraction < 1:
        raise AdvlabError(f"--calibration must be a fraction in (0, 1), got {fraction:g}")
    k = round(fraction * n)
    if k < 1 or n - k < 2:
        raise AdvlabError(
            f"--data-train has {n} images: too few to hold out {fraction:g} of them and train on the rest"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


# ------------------------------------------------------------------------------------------------ run
def _attack(
    atk: Attack, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_adv, success)`` of an untargeted ``atk`` run batch by batch; success = argmax f(x_adv) != y."""
    xs, ok = [], []
    try:
        for i in range(0, len(x), batch_size):
            r = atk(model, x[i : i + batch_size], y[i : i + batch_size])
            xs.append(r.x_adv)
            ok.append(r.success.cpu())
    except ValueError as e:
        raise AdvlabError(f"{atk.name}: {e}") from None
    return torch.cat(xs), torch.cat(ok)


def run(args: argparse.Namespace) -> int:
    model = build_model(args)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    atk, eps = _training_attack(args, info)
    held = _held_out(args.held_out, atk, eps, args.seed)
    adaptive = _adaptive_attack(args, atk, eps)
    train, test = _data(args, info)
    fit, cal = _split(len(train[0]), args.calibration, args.seed)
    layer = _layer(args, model, train[0])
    out = args.out or default_out(runs.run_name(info.name, info.dataset, "detect", test[2], atk.name, eps))
    config = {
        "command": command_line(args.argv),
        "model": args.model,
        "weights": args.weights,
        "data_train": args.data_train,
        "data": args.data,
        "limit_train": args.limit_train,
        "limit": args.limit,
        "attack": repr(atk),
        "layer": layer,
        "pool": args.pool,
        "hidden": args.hidden,
        "epochs": args.epochs,
        "calibration": args.calibration,
        "fpr": args.fpr,
        "held_out": [[lab, repr(a)] for lab, a in held],
        "adaptive": repr(adaptive),
        "seed": args.seed,
    }
    with runs.start(out, config, force=args.force) as run_dir:
        dev = device_of(model)
        x1, y1, x2, y2 = train[0].to(dev), train[1].to(dev), test[0].to(dev), test[1].to(dev)
        det, tau, trained = _train(args, model, atk, layer, x1[fit], y1[fit], x1[cal])
        s_clean = det.score(x2, args.batch_size)
        metrics = {
            "model": info.name,
            "data_train": args.data_train,
            "data": args.data,
            **trained,
            "fpr_test": float((s_clean > tau).double().mean()),
            "test_images": len(x2),
            "clean_accuracy": _accuracy(model, x2, y2, args.batch_size),
        }
        rows, curves = _held_out_rows(held, model, det, tau, s_clean, x2, y2, args.batch_size)
        first = rows[held[0][0]]
        metrics["held_out"] = rows
        metrics["non_adaptive"] = {
            "attack": repr(atk),
            "success_without_detector": first["success_rate"],
            "success_not_flagged": first["success_not_flagged"],
        }
        metrics["adaptive"] = _adaptive(adaptive, model, det, tau, x2, y2, args.batch_size)
        _write(run_dir, det, metrics, curves, info)
    _print(args, det, metrics, out)
    return 0


def _adaptive_attack(args: argparse.Namespace, atk: Attack, eps: float) -> Attack:
    """The adaptive PGD on the guarded model: the training attack's ball, at least 10 steps, the guarded loss."""
    from advlab.defenses import detector as D

    if not 0 < args.fpr < 1:
        raise AdvlabError(f"--fpr must be in (0, 1), got {args.fpr:g}")
    if args.hidden < 0:
        raise AdvlabError(f"--hidden must be >= 0 (0: logistic regression), got {args.hidden}")
    steps = args.adaptive_steps or max(10, int(getattr(atk, "steps", 10)))
    return make(
        "pgd",
        eps=eps,
        norm=getattr(atk, "norm", "linf"),
        steps=steps,
        restarts=getattr(atk, "restarts", None),
        seed=args.seed,
        loss=D.guarded_loss(args.adaptive_c, args.adaptive_kappa),
    )


def _data(
    args: argparse.Namespace, info: zoo.ModelInfo
) -> tuple[tuple[torch.Tensor, torch.Tensor, str], tuple[torch.Tensor, torch.Tensor, str]]:
    """(x, y, dataset name) of --data-train and of --data; both must be labelled."""
    out = []
    for spec, limit in ((args.data_train, args.limit_train), (args.data, args.limit)):
        x, y, desc = load_data_for(spec, info, limit=limit)
        if (y < 0).any():
            raise AdvlabError(f"data {spec!r} has unlabelled images; the detector's attacks need labels")
        out.append((x, y, desc.dataset))
    return out[0], out[1]


def _layer(args: argparse.Namespace, model: torch.nn.Module, x: torch.Tensor) -> str:
    """--layer or the penultimate layer; an unknown or unused layer fails here, before the run directory exists."""
    from advlab.defenses import detector as D

    layer = args.layer or D.penultimate_layer(model, x[:2])
    D.layer_features(model, layer, x[:1])
    return layer


def _train(
    args: argparse.Namespace,
    model: torch.nn.Module,
    atk: Attack,
    layer: str,
    x: torch.Tensor,
    y: torch.Tensor,
    x_cal: torch.Tensor,
) -> tuple[Any, float, dict[str, Any]]:
    """The detector trained on ``x`` and the successful ``atk`` examples on it, its threshold on ``x_cal``
    (clean, held out) at --fpr, and the training metrics."""
    from advlab.defenses import detector as D

    xa, ok = _attack(atk, model, x, y, args.batch_size)
    if not bool(ok.any()):
        raise AdvlabError(
            f"{atk.name} broke none of the {len(x)} training images: nothing to learn from; raise --eps or --steps"
        )
    det = D.train_detector(
        model, layer, x, xa[ok.to(xa.device)], epochs=args.epochs, seed=args.seed, hidden=args.hidden, pool=args.pool
    )
    s_cal = det.score(x_cal, args.batch_size)
    tau = D.threshold_at_fpr(s_cal, args.fpr)
    metrics = {
        "layer": det.layer,
        "pool": det.pool,
        "features": det.dim,
        "hidden": det.hidden,
        "training_attack": repr(atk),
        "eps": getattr(atk, "eps", None),
        "train_clean": len(x),
        "train_adversarial": int(ok.sum()),
        "train_attack_success_rate": float(ok.float().mean()),
        "calibration_images": len(x_cal),
        "fpr_target": args.fpr,
        "threshold": tau,
        "fpr_calibration": float((s_cal > tau).double().mean()),
    }
    return det, tau, metrics


def _held_out_rows(
    held: list[tuple[str, Attack]],
    model: torch.nn.Module,
    det: Any,
    tau: float,
    s_clean: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per held-out attack: success rate, ROC AUC of the detector (successful vs clean, and all), the share
    flagged at the threshold and the share that succeeds unflagged; and the ROC curves."""
    from advlab.defenses import detector as D

    rows, curves = {}, {}
    for label, held_atk in held:
        xa, ok = _attack(held_atk, model, x, y, batch_size)
        s_adv = det.score(xa, batch_size).cpu()
        flagged = s_adv > tau
        row: dict[str, Any] = {
            "attack": repr(held_atk),
            "success_rate": float(ok.float().mean()),
            "successful": int(ok.sum()),
            "auc": None,
            "auc_all": D.roc_auc(s_clean, s_adv),
            "detected_at_threshold": None,
            "success_not_flagged": float((ok & ~flagged).float().mean()),
        }
        if bool(ok.any()):
            row["auc"] = D.roc_auc(s_clean, s_adv[ok])
            row["detected_at_threshold"] = float(flagged[ok].float().mean())
            curves[label] = D.roc_curve(s_clean, s_adv[ok])
        rows[label] = row
    return rows, curves


def _adaptive(
    adaptive: Attack, model: torch.nn.Module, det: Any, tau: float, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> dict[str, Any]:
    """The adaptive attack on the guarded model: the share that fools both, misclassified, flagged."""
    from advlab.defenses import detector as D

    xa, _ = _attack(adaptive, D.Guarded(model, det, tau), x, y, batch_size)
    evaded = D.evades(model, det, tau, xa, y, batch_size)
    with torch.no_grad():
        wrong = torch.cat([model(b).argmax(1) for b in xa.split(batch_size)]).cpu() != y.cpu()
    return {
        "attack": repr(adaptive),
        "success": float(evaded.float().mean()),
        "misclassified": float(wrong.float().mean()),
        "flagged": float((det.score(xa, batch_size).cpu() > tau).float().mean()),
    }


def _print(args: argparse.Namespace, det: Any, metrics: dict[str, Any], out: Any) -> None:
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    say(
        args,
        f"detector on {det.layer} ({det.dim} features, {'MLP ' + str(det.hidden) if det.hidden else 'logistic regression'}); "
        f"threshold {metrics['threshold']:.4g}: {metrics['fpr_test']:.1%} of clean test images flagged (target {args.fpr:.0%})",
    )
    for label, row in metrics["held_out"].items():
        auc = "n/a" if row["auc"] is None else f"{row['auc']:.3f}"
        say(
            args,
            f"  {label:<28} success {row['success_rate']:6.1%}  AUC {auc}  success and not flagged {row['success_not_flagged']:6.1%}",
        )
    say(
        args,
        f"non-adaptive success (not flagged): {metrics['non_adaptive']['success_not_flagged']:.1%}; "
        f"adaptive (fools both): {metrics['adaptive']['success']:.1%}",
    )
    say(args, f"wrote {out}")


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> float:
    with torch.no_grad():
        pred = torch.cat([model(b).argmax(1) for b in x.split(batch_size)])
    return float((pred == y).float().mean())


# ------------------------------------------------------------------------------------------------ output
def roc_figure(
    curves: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]], aucs: dict[str, float], fpr: float, title: str
) -> Any:
    """ROC curves (false-positive rate on clean vs true-positive rate on successful adversarial images), one
    per held-out attack, with the chance diagonal and the target false-positive rate as a dashed line."""
    from advlab.report.figures import plt  # pyplot with the Agg backend selected

    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for label, (f, t, _) in curves.items():
        ax.plot(f.tolist(), t.tolist(), label=f"{label} (AUC {aucs[label]:.3f})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="gray", linewidth=1, label="chance")
    ax.axvline(fpr, linestyle="--", color="silver", linewidth=1, label=f"target FPR {fpr:g}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (clean images flagged)")
    ax.set_ylabel("true-positive rate (successful attacks flagged)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def _write(run_dir: runs.Run, det: Any, metrics: dict[str, Any], curves: dict[str, Any], info: zoo.ModelInfo) -> None:
    from advlab.report import write_report

    run_dir.save_json("metrics.json", metrics)
    meta = {
        **det.config(),
        "threshold": repr(metrics["threshold"]),
        "fpr_target": repr(metrics["fpr_target"]),
        "model": info.name,
    }
    run_dir.save_tensors("detector.safetensors", det.state_dict(), meta)
    aucs = {k: metrics["held_out"][k]["auc"] for k in curves}
    run_dir.save_figure(
        "roc.png", roc_figure(curves, aucs, metrics["fpr_target"], f"{info.name}: detector on {det.layer}")
    )
    head = (
        "<tr><th>held-out attack</th><th>success</th><th>ROC AUC (successful vs clean)</th><th>AUC (all)</th>"
        "<th>flagged at threshold</th><th>success and not flagged</th></tr>"
    )
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{r['success_rate']:.1%}</td><td>{_fmt(r['auc'])}</td><td>{r['auc_all']:.3f}</td>"
        f"<td>{_pct(r['detected_at_threshold'])}</td><td>{r['success_not_flagged']:.1%}</td></tr>"
        for k, r in metrics["held_out"].items()
    )
    na, ad = metrics["non_adaptive"], metrics["adaptive"]
    point = (
        f"<p>Without the detector the training attack succeeds on {na['success_without_detector']:.1%} of the test images; "
        f"counted only where the detector does not flag it, {na['success_not_flagged']:.1%}. The adaptive attack, which must fool "
        f"classifier and detector at once, succeeds on {ad['success']:.1%} (misclassified {ad['misclassified']:.1%}, flagged "
        f"{ad['flagged']:.1%}). Threshold {metrics['threshold']:.4g} flags {metrics['fpr_test']:.1%} of the clean test images "
        f"(target {metrics['fpr_target']:.0%} on held-out clean training images).</p>"
    )
    write_report(
        run_dir.path,
        f"advlab detect: {info.name}, detector on {det.layer}",
        [("Held-out attacks", f"<table>{head}{body}</table>"), ("Adaptive vs non-adaptive (seed 004)", point)],
    )


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"
