"""``advlab detect``: train a SafetyNet-style detector and attack it the way the lecture says to (research note 004).

Steps: (1) a seeded fraction of the training split (``--calibration``) is held out; (2) the training attack
(default PGD, L-inf eps 0.1 on digits) runs on the rest, and a detector (:func:`advlab.defenses.train_detector`)
learns to tell those clean images from the successful adversarial ones on one layer's activations
(default the penultimate layer); (3) the threshold is the detector score flagging at most ``--fpr`` (5%)
of the held-out clean training images; (4) on the test split: the ROC AUC against held-out attacks (the
training attack itself, PGD at half and twice the eps, FGSM, DeepFool; or ``--held-out``); the
non-adaptive success (the training attack, which ignores the detector, counted only where it
misclassifies AND is not flagged) and the adaptive success (PGD on the guarded model with
:func:`advlab.defenses.guarded_loss`: fooling classifier and detector at once, the same eps and budget).

Both data sets are read batch by batch, one pass each: the detector trains on the layer features of the training
images and of their successful adversarial examples (small per-image vectors, the only things kept), the test pass
keeps per-image scores and successes.

The run directory holds metrics.json, roc.png, detector.safetensors (the detector's weights, its layer,
pooling and threshold as metadata) and report.html. The command parses and writes; the experiment is
:mod:`advlab.defenses.detection`, the pictures and tables :mod:`advlab.report`.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from typing import Any

import torch

from advlab import runs, zoo
from advlab.attacks.base import Attack
from advlab.attacks.catalog import make
from advlab.cli.common import (
    MAX_EPOCHS,
    MAX_STEPS,
    add_attack_args,
    add_command,
    add_model_args,
    add_run_args,
    batch_int,
    bounded_int,
    build_model,
    command_line,
    default_out,
    epochs_int,
    make_attack,
    number,
    open_data_for,
    positive_int,
    say,
    steps_int,
)
from advlab.data import Batches
from advlab.defenses import detection
from advlab.defenses import detector as D
from advlab.defenses.detection import DetectorSetup
from advlab.device import device_of
from advlab.errors import AdvlabError
from advlab.evaluation.inputs import Source
from advlab.evaluation.metrics import attack_success_rate, clean_accuracy
from advlab.report import write_report
from advlab.report.detector import detector_sections
from advlab.report.figures import roc_figure

#: the most hidden units of the detector's MLP, and the most held-out attacks
MAX_HIDDEN = 65_536
MAX_HELD_OUT = 32


def _hidden(text: str) -> int:
    """--hidden: an integer up to MAX_HIDDEN (a negative one is refused when the detector is set up, saying why)."""
    return bounded_int(-(2**31), MAX_HIDDEN)(text)


#: held-out attacks that need no eps (minimum-norm attacks)
UNBOUNDED = ("deepfool", "cw", "lbfgs")


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "detect",
        help="train a detector of adversarial inputs (SafetyNet) and attack classifier and detector at once",
        description=DESCRIPTION,
    )
    add_model_args(p)
    p.add_argument("--data-train", required=True, help="data spec the detector is trained on (e.g. digits:train)")
    p.add_argument("--data", "-d", required=True, help="data spec it is evaluated on (e.g. digits:test)")
    p.add_argument("--attack", "-a", default="pgd", help="the training attack, eps-bounded (pgd, fgsm, mifgsm, apgd)")
    add_attack_args(p)
    _add_detector_args(p)
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


DESCRIPTION = (
    "Research note 004's SafetyNet: a small classifier on one layer's activations (default the penultimate\n"
    "layer) learns to tell clean images from adversarial ones made by --attack on --data-train. The threshold\n"
    "flags --fpr of held-out clean training images. On --data: ROC AUC against held-out attacks, and the\n"
    "lecture's point: an attack that ignores the detector (counted only if it misclassifies and is not\n"
    "flagged) versus an adaptive attack that must fool classifier and detector at once.\n\n"
    "held-out attacks (--held-out): NAME@EPS or NAME, comma-separated, e.g. pgd@0.05,fgsm@0.1,deepfool\n"
    "(default: the training attack, pgd at eps/2 and 2 eps, fgsm at eps, deepfool)\n\n"
    "examples:\n"
    "  advlab detect --model digits-cnn --data-train digits:train --data digits:test\n"
    "  advlab detect --model digits-cnn --data-train digits:train --data digits:test "
    "--attack pgd --eps 0.1 --steps 20\n"
    "  advlab detect --model digits-cnn --data-train digits:train --data digits:test "
    "--layer net.features.7 --hidden 0"
)


def _add_detector_args(p: argparse.ArgumentParser) -> None:
    """The detector's layer, pooling, width, training and threshold."""
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
    """(label, attack) pairs; the training attack itself (run on the other split) comes first, duplicates are
    dropped."""
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


# ------------------------------------------------------------------------------------------------ run
def run(args: argparse.Namespace) -> int:
    model = build_model(args)
    info = zoo.info_of(model)
    atk, eps = _training_attack(args, info)
    held = _held_out(args.held_out, atk, eps, args.seed)
    adaptive = _adaptive_attack(args, atk, eps)
    train, test = _data(args, info)
    fit, _ = _split(train.count, args)
    layer, pool = _layer(args, model, train)
    setup = DetectorSetup(layer, pool, args.hidden, args.epochs, args.fpr, args.seed, args.batch_size)
    out = args.out or default_out(runs.run_name(info.name, info.dataset, "detect", test.info.dataset, atk.name, eps))
    with runs.start(out, _run_config(args, atk, setup, held, adaptive), force=args.force) as run_dir:
        det, tau, trained = _train(model, atk, train, fit, setup)
        tested, curves = _evaluate(model, det, tau, (held, adaptive), test, args.batch_size)
        metrics = {"model": info.name, "data_train": args.data_train, "data": args.data, **trained, **tested}
        _write(run_dir, det, metrics, curves, info)
    _print(args, det, metrics, out)
    return 0


def _stream(data: Batches, model: torch.nn.Module) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` of every batch on the model's device, the next batch read in a background thread while this one
    is in use (at most one batch ahead: :class:`advlab.evaluation.inputs.Source`)."""
    dev = device_of(model)
    for _, x, y in Source(data).select(lambda b: True):
        yield x.to(dev), y.to(dev)


def _train(
    model: torch.nn.Module, atk: Attack, train: Batches, fit: torch.Tensor, setup: DetectorSetup
) -> tuple[D.Detector, float, dict[str, Any]]:
    """:func:`advlab.defenses.detection.train_on_attack` read batch by batch: per batch the training attack on
    its ``fit`` images and the pooled features of those, of the successful adversarial ones and of the held-out
    clean ones (the only things kept); then the detector (:func:`advlab.defenses.detector.fit_detector`) and its
    threshold on the held-out scores."""
    is_fit = torch.zeros(train.count, dtype=torch.bool)
    is_fit[fit] = True
    feats: dict[str, list[torch.Tensor]] = {"clean": [], "adv": [], "cal": []}
    oks, start = [], 0
    for x, y in _stream(train, model):
        rows = is_fit[start : start + len(x)].to(x.device)
        start += len(x)
        if bool(rows.any()):
            xa, ok = detection.run_attack(atk, model, x[rows], y[rows], setup.batch_size)
            oks.append(ok)
            feats["clean"].append(D.layer_features(model, setup.layer, x[rows], pool=setup.pool))
            feats["adv"].append(D.layer_features(model, setup.layer, xa[ok.to(xa.device)], pool=setup.pool))
        if not bool(rows.all()):
            feats["cal"].append(D.layer_features(model, setup.layer, x[~rows], pool=setup.pool))
    ok = torch.cat(oks)
    if not bool(ok.any()):
        raise AdvlabError(
            f"{atk.name} broke none of the {len(ok)} training images: nothing to learn from; raise its eps or steps"
        )
    fc, fa, f_cal = (torch.cat(feats[k]) for k in ("clean", "adv", "cal"))
    det = D.fit_detector(
        model, setup.layer, fc, fa, pool=setup.pool, epochs=setup.epochs, seed=setup.seed, hidden=setup.hidden
    )
    with torch.no_grad():
        s_cal = torch.sigmoid(torch.cat([det.head_logit(f).double() for f in f_cal.split(setup.batch_size)]))
    tau = D.threshold_at_fpr(s_cal, setup.fpr)
    return det, tau, detection.training_metrics(det, atk, ok, s_cal, tau, setup)


def _evaluate(
    model: torch.nn.Module,
    det: D.Detector,
    tau: float,
    attacks: tuple[list[tuple[str, Attack]], Attack],
    test: Batches,
    batch_size: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`advlab.defenses.detection.evaluate_detector` read batch by batch: per batch every held-out attack
    and the adaptive one run, and only per-image columns are kept (detector scores, successes, predictions)."""
    held, adaptive = attacks
    guarded = D.Guarded(model, det, tau)
    cols: dict[str, list[torch.Tensor]] = {k: [] for k in ("s_clean", "pred", "y", "evaded", "missed", "flagged")}
    ok_of: dict[str, list[torch.Tensor]] = {label: [] for label, _ in held}
    s_of: dict[str, list[torch.Tensor]] = {label: [] for label, _ in held}
    for x, y in _stream(test, model):
        cols["s_clean"].append(det.score(x, batch_size).cpu())
        cols["pred"].append(detection.predictions(model, x, batch_size))
        cols["y"].append(y.cpu())
        for label, held_atk in held:
            xa, ok = detection.run_attack(held_atk, model, x, y, batch_size)
            ok_of[label].append(ok)
            s_of[label].append(det.score(xa, batch_size).cpu())
        xa, _ = detection.run_attack(adaptive, guarded, x, y, batch_size)
        cols["evaded"].append(D.evades(model, det, tau, xa, y, batch_size))
        cols["missed"].append(detection.predictions(model, xa, batch_size) != y.cpu())
        cols["flagged"].append(det.score(xa, batch_size).cpu() > tau)
    c = {k: torch.cat(v) for k, v in cols.items()}
    s_clean = c["s_clean"]
    metrics: dict[str, Any] = {
        "fpr_test": float((s_clean > tau).double().mean()),
        "test_images": len(s_clean),
        "clean_accuracy": clean_accuracy(c["y"], c["pred"]),
    }
    rows, curves = {}, {}
    for label, held_atk in held:
        ok, s_adv = torch.cat(ok_of[label]), torch.cat(s_of[label])
        rows[label], curve = detection.held_out_row(held_atk, ok, s_adv, s_clean, tau)
        if curve is not None:
            curves[label] = curve
    metrics["held_out"] = rows
    metrics["non_adaptive"] = detection.non_adaptive(held, rows)
    metrics["adaptive"] = {
        "attack": repr(adaptive),
        "success": attack_success_rate(c["evaded"]),
        "misclassified": attack_success_rate(c["missed"]),
        "flagged": float(c["flagged"].float().mean()),
    }
    return metrics, curves


def _run_config(
    args: argparse.Namespace, atk: Attack, setup: DetectorSetup, held: list[tuple[str, Attack]], adaptive: Attack
) -> dict[str, Any]:
    """config.json: the command line and every setting of the run."""
    return {
        "command": command_line(args.argv),
        "model": args.model,
        "weights": args.weights,
        "data_train": args.data_train,
        "data": args.data,
        "limit_train": args.limit_train,
        "limit": args.limit,
        "attack": repr(atk),
        "layer": setup.layer,
        "pool": args.pool,
        "hidden": args.hidden,
        "epochs": args.epochs,
        "calibration": args.calibration,
        "fpr": args.fpr,
        "held_out": [[lab, repr(a)] for lab, a in held],
        "adaptive": repr(adaptive),
        "seed": args.seed,
    }


def _adaptive_attack(args: argparse.Namespace, atk: Attack, eps: float) -> Attack:
    """The adaptive PGD on the guarded model (:func:`advlab.defenses.detection.adaptive_attack`); the detector's
    options are checked here, before anything runs."""
    if not 0 < args.fpr < 1:
        raise AdvlabError(f"--fpr must be in (0, 1), got {args.fpr:g}")
    if args.hidden < 0:
        raise AdvlabError(f"--hidden must be >= 0 (0: logistic regression), got {args.hidden}")
    return detection.adaptive_attack(
        atk, eps, steps=args.adaptive_steps, c=args.adaptive_c, kappa=args.adaptive_kappa, seed=args.seed
    )


def _split(n: int, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, calibration) indices of --data-train (:func:`advlab.defenses.detection.calibration_split`)."""
    if not 0 < args.calibration < 1:
        raise AdvlabError(f"--calibration must be a fraction in (0, 1), got {args.calibration:g}")
    return detection.calibration_split(n, args.calibration, args.seed)


def _data(args: argparse.Namespace, info: zoo.ModelInfo) -> tuple[Batches, Batches]:
    """--data-train (first --limit-train images) and --data (first --limit), opened to be read batch by batch;
    both must be labelled (checked from the labels alone, no image decoded)."""
    out = []
    for spec, limit in ((args.data_train, args.limit_train), (args.data, args.limit)):
        opened = open_data_for(argparse.Namespace(**{**vars(args), "limit": limit}), info, args.batch_size, spec=spec)
        if (opened.labels() < 0).any():
            raise AdvlabError(f"data {spec!r} has unlabelled images; the detector's attacks need labels")
        out.append(opened)
    return out[0], out[1]


def _layer(args: argparse.Namespace, model: torch.nn.Module, train: Batches) -> tuple[str, str]:
    """--layer or the penultimate layer, and the pooling --pool auto resolves to (flatten up to
    :data:`advlab.defenses.detector.MAX_FLAT` values, else the spatial mean), from the first two training images;
    an unknown or unused layer fails here, before the run directory exists."""
    x = train.rebatched(2).batch(0)[0].to(device_of(model))
    layer = args.layer or D.penultimate_layer(model, x[:2])
    probe = D.layer_features(model, layer, x[:1])
    pool = args.pool if args.pool != "auto" else "flatten" if probe.shape[1] <= D.MAX_FLAT else "mean"
    return layer, pool


def _print(args: argparse.Namespace, det: D.Detector, metrics: dict[str, Any], out: Any) -> None:
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    kind = f"MLP {det.hidden}" if det.hidden else "logistic regression"
    say(
        args,
        f"detector on {det.layer} ({det.dim} features, {kind}); threshold {metrics['threshold']:.4g}: "
        f"{metrics['fpr_test']:.1%} of clean test images flagged (target {args.fpr:.0%})",
    )
    for label, row in metrics["held_out"].items():
        auc = "n/a" if row["auc"] is None else f"{row['auc']:.3f}"
        say(
            args,
            f"  {label:<28} success {row['success_rate']:6.1%}  AUC {auc}  "
            f"success and not flagged {row['success_not_flagged']:6.1%}",
        )
    say(
        args,
        f"non-adaptive success (not flagged): {metrics['non_adaptive']['success_not_flagged']:.1%}; "
        f"adaptive (fools both): {metrics['adaptive']['success']:.1%}",
    )
    say(args, f"wrote {out}")


# ------------------------------------------------------------------------------------------------ output
def _write(
    run_dir: runs.Run, det: D.Detector, metrics: dict[str, Any], curves: dict[str, Any], info: zoo.ModelInfo
) -> None:
    """metrics.json, detector.safetensors (its weights; layer, pooling and threshold as metadata), roc.png and
    report.html."""
    run_dir.save_json("metrics.json", metrics)
    meta = {
        **det.config(),
        "threshold": repr(metrics["threshold"]),
        "fpr_target": repr(metrics["fpr_target"]),
        "model": info.name,
    }
    run_dir.save_tensors("detector.safetensors", det.state_dict(), meta)
    aucs = {k: metrics["held_out"][k]["auc"] for k in curves}
    title = f"{info.name}: detector on {det.layer}"
    run_dir.save_figure("roc.png", roc_figure(curves, aucs, metrics["fpr_target"], title))
    write_report(run_dir.path, f"advlab detect: {title}", detector_sections(metrics))
