"""``advlab eval``: robust accuracy under an attack ensemble (default: the reliable preset), with a run directory.

Prints the metrics (JSON with --json) and writes metrics.json, samples.csv, adversarials.safetensors,
grid.png (broken samples: clean | amplified perturbation | adversarial) and report.html. Every finished
batch is saved; --resume continues an interrupted evaluation where it stopped. Under ``torchrun -m advlab
eval`` the batches are shared out over the processes (:mod:`advlab.distributed`) and rank 0 merges them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from advlab import distributed, runs, zoo
from advlab.attacks.catalog import attack_classes
from advlab.cli import adversarials
from advlab.cli.common import (
    add_attack_args,
    add_command,
    add_device_args,
    add_label_args,
    add_model_args,
    add_run_args,
    add_selection_args,
    attack_options,
    batch_int,
    build_model,
    csv_text,
    default_out,
    make_attack,
    open_data_for,
    place_model,
    positive_int,
    require_labels,
    run_config,
    say,
    say_notes,
)
from advlab.cli.heartbeat import heartbeat
from advlab.cli.runner import Job, UnitSpec, batch_size, run_job, run_settings
from advlab.errors import AdvlabError
from advlab.evaluation import PRESETS, BatchResult, EvalConfig, EvalReport, Plan, evaluate, merge, prepare
from advlab.evaluation.inputs import Indexed, with_predicted_labels


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "eval",
        usage="advlab eval --model SPEC --data SPEC [--preset NAME | --attack LIST] [--eps EPS] [options]",
        help="robust accuracy under an attack ensemble (AutoAttack-style cascade)",
        description="Evaluate robustness: a clean pass, then each attack on the samples still unbroken; prints clean "
        "and\nrobust accuracy, success rates, norms, gradient evaluations, per-attack breakdown and warnings.\n\n"
        f"presets: reliable (APGD-CE + targeted APGD-DLR; default), fast. attacks: {', '.join(attack_classes())}\n\n"
        "examples:\n"
        "  advlab eval --model digits-cnn --data digits:test --eps 0.1\n"
        "  advlab eval --model digits-cnn --data digits:test --preset reliable --eps 0.1 --norm linf --json\n"
        "  advlab eval --model digits-cnn --data digits:test --attack pgd --eps 0.1 --steps 20 --no-early-stop",
    )
    add_model_args(p)
    p.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    add_label_args(p)
    _add_attack_choice(p)
    p.add_argument("--limit", type=positive_int, help="only the first N images")
    add_selection_args(p)
    p.add_argument(
        "--batch-size",
        type=_batch_size,
        default=256,
        help="samples per batch (a unit of work under torchrun), or 'auto': sized to the free memory of the device "
        "(half the free GPU memory, a quarter of the RAM), kept on --resume",
    )
    _add_output_args(p)
    _add_attack_model_args(p)
    add_run_args(p, resume=True)
    add_attack_args(p)  # last: --help shows the command's own options first, then each attack's under its name
    p.set_defaults(func=run)


def _add_attack_choice(p: argparse.ArgumentParser) -> None:
    """Which attacks run and how: --preset or --attack (their options: :func:`add_attack_args`), --early-stop,
    --attack-misclassified."""
    p.add_argument("--preset", choices=PRESETS, help="attack ensemble (default: reliable, unless --attack is given)")
    p.add_argument(
        "--draws",
        type=positive_int,
        default=16,
        metavar="K",
        help="for a randomized model: fresh draws per sample of its expected accuracy (the headline), and of the "
        "worst case reported beside it (robust in all K draws)",
    )
    p.add_argument(
        "--active-test",
        type=int,
        default=EvalConfig.active_test,
        metavar="N",
        help="plant a provable adversarial example within eps near each of the first N images (binary tasks built "
        "from the model, Zimmermann et al. 2022) and check the attacks find them; below 95%% trust is low (0: off)",
    )
    p.add_argument(
        "--attack", "-a", help="comma list of attacks to cascade instead of a preset (they share the attack options)"
    )
    p.add_argument(
        "--early-stop",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="stop each sample at its first success (same robust accuracy, far fewer gradients)",
    )
    p.add_argument(
        "--attack-misclassified",
        action="store_true",
        help="also attack samples the model gets wrong (for the prediction change rate)",
    )


def _add_output_args(p: argparse.ArgumentParser) -> None:
    """What is printed and written besides the run directory: --json, --robustbench."""
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    p.add_argument(
        "--robustbench",
        metavar="FILE.json",
        help="also write a RobustBench-style model_info entry (name, dataset, eps, clean_acc, robust_acc, attacks, "
        "passes per image, trust, diagnostics)",
    )


def _add_attack_model_args(p: argparse.ArgumentParser) -> None:
    """Where and on what the attacks run: --bpda (a differentiable twin), the device options, --amp (bfloat16
    autocast)."""
    p.add_argument(
        "--bpda",
        metavar="FILE.py:FACTORY",
        help="a differentiable twin of the model (a model file or zoo name, taking the same [0, 1] images): the "
        "attacks run on it and every success is confirmed on --model (BPDA for what advlab cannot do by itself)",
    )
    add_device_args(p)
    p.add_argument(
        "--amp",
        action="store_true",
        help="run the attacks under bfloat16 autocast (faster on GPUs); every success is re-checked in float32 and "
        "only confirmed ones count (a claimed one float32 does not confirm is searched again in float32); "
        "the effect on attack strength is measured by benchmarks/amp_strength.py",
    )


def _config(args: argparse.Namespace, info: zoo.ModelInfo) -> EvalConfig:
    """The evaluation the arguments ask for: a preset at --eps, or the --attack list (each attack made as
    ``advlab attack`` makes it, sharing the attack options)."""
    eps = args.eps
    if isinstance(eps, list):
        raise AdvlabError("eval takes one --eps (for a robustness curve use advlab attack with a comma list)")
    common = {
        "early_stop": args.early_stop,
        "attack_misclassified": args.attack_misclassified,
        "keep_adversarials": True,
        "seed": args.seed,
        "draws": args.draws,
        "active_test": args.active_test,
    }
    if args.attack is None:
        if eps is None:
            raise AdvlabError("--eps is required (e.g. --eps 8/255 --norm linf)")
        extra = {k for k in attack_options(args) if k not in ("eps", "norm", "seed")}
        if extra:
            drop = ", ".join("--" + k.replace("_", "-") for k in sorted(extra))
            raise AdvlabError(
                f"the {args.preset or 'reliable'} preset fixes its own settings; drop {drop} or use --attack"
            )
        return EvalConfig(preset=args.preset or "reliable", eps=eps, norm=args.norm or "linf", **common)
    if args.preset:
        raise AdvlabError("give --preset or --attack, not both")
    names = [name.strip() for name in args.attack.split(",") if name.strip()]
    if not names:
        raise AdvlabError(f"--attack {args.attack!r} names no attack; e.g. --attack apgd,square")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise AdvlabError(f"--attack lists {', '.join(twice)} twice: a cascade runs each attack once (use --restarts)")
    atks = tuple(make_attack(args, info, name) for name in names)
    return EvalConfig(attacks=atks, eps=eps, norm=args.norm if eps is not None else None, **common)


def run(args: argparse.Namespace) -> int:
    dist = distributed.setup(args.device)
    model = place_model(build_model(args), dist.device, args.channels_last)
    info = zoo.info_of(model)
    config = _config(args, info)
    if args.robustbench:
        _check_robustbench(args.robustbench)
    if args.amp:
        _check_amp(config)
    # labels and names without decoding an image; one image to size the batches
    probe = open_data_for(args, info, batch_size=1, notes=False)
    labels = probe.labels()
    require_labels(args, labels)
    out = args.out or default_out(_run_name(args, info, probe.info.dataset, config))
    attack_model = _attack_model(args, model, dist)
    given = None if args.batch_size == "auto" else args.batch_size
    size = batch_size(given, out, args.resume, dist, lambda: _auto(model, probe.batch(0)[0], dist))
    config = dataclasses.replace(config, batch_size=size)
    batches = probe.rebatched(size)
    say_notes(batches.info.notes, labels)
    data = with_predicted_labels(batches, model) if args.labels == "predicted" else batches
    plans: list[Plan] = []

    def plan() -> Plan:  # decided once, on the first batch, when a new run first needs it (a resumed or sharded
        # run rebuilds the saved plan.json instead: evaluate() reads it from work.plan, no probe again)
        if not plans:
            plans.append(prepare(model, data, config, attack_model=attack_model))
        return plans[0]

    job = Job(
        out,
        {**_saved_config(args, config), "label_source": batches.info.label_source},
        UnitSpec(len(batches), f"a batch of {size} samples", runs.units.EVALUATE.encode, _decode, bar="evaluate"),
        lambda work: evaluate(
            model, data, config, work=_light(work), attack_model=attack_model, plan=plans[0] if plans else None
        ),
        lambda run_dir, report, sec: _write(
            run_dir, data, batches.names(), dataclasses.replace(report, seconds=sec), info, args
        ),
        lambda run_dir, report: _report(run_dir, report, info, args),
        inputs={"model": model, "data": (batches.names(), labels)},
        merge=lambda done, saved: merge([done[b] for b in sorted(done)], saved or plan().record()),
        plan=lambda: plan().record(),
    )
    with heartbeat(model, "eval", args.quiet):
        report = run_job(job, args, dist)
    if report is not None:
        _show(args, report, probe.info.dataset, out, info.class_names)
    return 0


def _light(work: Any) -> Any:
    """``work`` keeping in memory only the small per-sample columns of each saved batch (its adversarial images
    are in the batch's file, and :func:`_write` reads them back one batch at a time)."""
    return dataclasses.replace(work, keep=lambda part: dataclasses.replace(part, x_adv=None))


def _run_name(args: argparse.Namespace, info: zoo.ModelInfo, dataset: str, config: EvalConfig) -> str:
    """The run directory's name (:func:`advlab.runs.run_name`): the preset or the attacks, the ball, the settings."""
    method = args.attack.replace(",", "+") if args.attack else config.preset or "reliable"
    return runs.run_name(
        info.name,
        info.dataset,
        "eval",
        dataset,
        method,
        config.eps,
        limit=args.limit,
        norm=config.norm,
        attack=config.attacks[0] if config.attacks and len(config.attacks) == 1 else None,
        settings=run_settings(args),
    )


def _show(
    args: argparse.Namespace, report: EvalReport, dataset: str, out: Any, class_names: list[str] | None = None
) -> None:
    """Rank 0, after the run: the --robustbench entry (its missing folders made), then the metrics printed (as JSON
    with --json): the headline, robust accuracy per class (named with ``class_names``), the details."""
    if args.robustbench:
        entry = report.robustbench(robustbench_name(args.model), dataset)
        runs.atomic_write(args.robustbench, json.dumps(entry, indent=2) + "\n")
    if args.json:
        print(json.dumps({"labels": args.labels, **report.to_dict()}, indent=2))
        return
    if args.labels == "predicted":
        say(
            args,
            "labels: the model's own clean predictions (--labels predicted), so clean accuracy is 100% by construction",
        )
    say(args, report.format(class_names))
    say(args, f"wrote {out}")


def robustbench_name(spec: str) -> str:
    """The --robustbench entry's model ``name`` for the --model ``spec``: a model file ``path/to/net.py:make`` is
    ``net-make`` (its file stem and factory, as advlab names the model in run names and reports: the folders are
    the user's machine, not the model), any other spec is itself (``digits-cnn``, ``timm:resnet50``)."""
    if ".py:" not in spec:
        return spec
    path, _, factory = spec.rpartition(":")
    return f"{Path(path).stem}-{factory}"


def _check_robustbench(path: str) -> None:
    """Refuse a --robustbench file that cannot be written before the evaluation runs, not after: a name the file
    system takes, and nothing there but a regular file (a link, folder, device or FIFO is never replaced). Missing
    folders on its path are made when it is written."""
    target = Path(path)
    if not target.name or path.endswith(os.sep):
        raise AdvlabError(f"--robustbench {path!r} is a directory; name a .json file")
    if len(os.fsencode(target.name)) > 255:
        raise AdvlabError(
            f"--robustbench {path[:60]!r}...: the file name is too long for the file system (at most 255 bytes)"
        )
    runs.check_writable(target)


def _attack_model(args: argparse.Namespace, model: torch.nn.Module, dist: distributed.Dist) -> torch.nn.Module | None:
    """What the attacks run on: the --bpda twin (checked to take the model's input and give its number of classes),
    under bfloat16 autocast with --amp; None: the model itself."""
    twin = model
    if args.bpda:
        info = zoo.info_of(model)
        twin = place_model(
            zoo.load(args.bpda, input_size=info.input_size, channels=info.channels), dist.device, args.channels_last
        )
        probe = torch.rand(2, info.channels, info.input_size, info.input_size, device=dist.device)
        with torch.no_grad():
            out, want = twin(probe), model(probe)
        if not isinstance(out, torch.Tensor) or out.shape != want.shape:
            got = tuple(getattr(out, "shape", ()))
            raise AdvlabError(
                f"--bpda {args.bpda!r}: the twin gives {got} for an input on which the model gives "
                f"{tuple(want.shape)}; it must take the same images and return the same classes"
            )
    if args.amp:
        return zoo.Autocast(twin)
    return None if twin is model else twin


def _auto(model: torch.nn.Module, x: torch.Tensor, dist: distributed.Dist) -> int:
    from advlab.prototypes import auto_batch_size

    return auto_batch_size(model, x[:1].to(dist.device))


def _saved_config(args: argparse.Namespace, config: EvalConfig) -> dict[str, Any]:
    """config.json: what a resumed run must match."""
    return run_config(
        args,
        preset=config.preset if not config.attacks else None,
        attacks=[repr(a) for a in config.attacks or ()],
        eps=config.eps,
        norm=config.norm,
        seed=config.seed,
        early_stop=config.early_stop,
        attack_misclassified=config.attack_misclassified,
        batch_size=config.batch_size,
        **({"draws": config.draws} if config.draws != EvalConfig.draws else {}),
        **({"active_test": config.active_test} if config.active_test != EvalConfig.active_test else {}),
        **({"amp": "bfloat16"} if args.amp else {}),
        **({"labels": "predicted"} if args.labels == "predicted" else {}),
        **({"bpda": args.bpda} if args.bpda else {}),
    )


#: --amp refuses smaller L-inf balls: bfloat16 resolves a normalized input to about 1/255 of the pixel range
AMP_MIN_EPS = 1 / 255


def _check_amp(config: EvalConfig) -> None:
    """Refuse --amp where bfloat16 cannot represent the perturbation (measured: efficientnet-lite0 at 0.2/255
    loses 2 of 16 successes; see benchmarks/amp_strength.py)."""
    balls: list[tuple[Any, str]]  # (an eps, or an attack's eps list or None; the norm)
    if config.eps is not None:
        balls = [(config.eps, config.norm or "linf")]
    else:
        balls = [(getattr(a, "eps", None), a.threat_norm) for a in config.attacks or ()]
    for e, n in balls:
        small = e if isinstance(e, (int, float)) else (min(e) if e else None)
        if n == "linf" and small is not None and small < AMP_MIN_EPS:
            raise AdvlabError(
                f"--amp: L-inf eps {small:.3g} is below 1/255, about the resolution bfloat16 leaves a normalized "
                "input; the attacks would lose strength: evaluate this eps in float32 (drop --amp)"
            )


def _batch_size(text: str) -> int | str:
    return "auto" if text == "auto" else batch_int(text)


def _decode(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> BatchResult:
    """A saved batch's per-sample columns; its adversarial images stay in its file (read by :func:`_write`)."""
    return runs.units.EVALUATE.decode({k: v for k, v in tensors.items() if k != "x_adv"}, info)


#: the broken samples shown in grid.png
GRID = 8


def _write(
    run_dir: runs.Run,
    data: Indexed,
    names: list[str],
    report: EvalReport,
    info: zoo.ModelInfo,
    args: argparse.Namespace,
) -> EvalReport:
    """metrics.json, samples.csv, adversarials.safetensors (written batch by batch: the images read again, the
    adversarial examples from each batch's saved file) and grid.png (the first broken samples); returns ``report``."""
    from advlab.report.figures import adversarial_grid, prediction_titles

    s = report.samples
    amp = {"amp": "attacks under bfloat16 autocast; successes confirmed in float32"} if args.amp else {}
    run_dir.save_json(
        "metrics.json", {"model": info.name, "data": args.data, "labels": args.labels, **amp, **report.to_dict()}
    )
    rows = report.rows(info.class_names)
    for row, name in zip(rows, names, strict=True):
        row["name"] = name
    run_dir.save_text("samples.csv", csv_text(rows))
    shown = _write_adversarials(run_dir, data, report, args)
    if shown:
        x, x_adv, idx = (torch.cat(t) for t in zip(*shown, strict=True))
        names = info.class_names
        clean_t = prediction_titles(
            "clean", [names[int(p)] for p in s.clean_pred[idx]], s.clean_confidence[idx].tolist()
        )
        adv_t = prediction_titles(
            "adversarial", [names[int(p)] for p in s.adv_pred[idx]], s.adv_confidence[idx].tolist()
        )
        run_dir.save_figure("grid.png", adversarial_grid(x, x_adv, clean_t, adv_t, ["red"] * len(idx)))
    return report


def _write_adversarials(
    run_dir: runs.Run, data: Indexed, report: EvalReport, args: argparse.Namespace
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """adversarials.safetensors, one batch at a time; the (x, x_adv, index) of the first :data:`GRID` broken."""
    s = report.samples
    columns = {"y": s.y, "broken_by": s.broken_by, "clean_pred": s.clean_pred, "adv_pred": s.adv_pred}
    shown: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for at, x, x_adv in adversarials.write(run_dir, data, columns, {"model": args.model, "data": args.data}):
        broken = s.broken[at : at + len(x)].nonzero().flatten()[: GRID - sum(len(t[2]) for t in shown)]
        if len(broken):
            shown.append((x[broken], x_adv[broken], broken + at))
    return shown


def _report(run_dir: runs.Run, report: EvalReport, info: zoo.ModelInfo, args: argparse.Namespace) -> None:
    """report.html in the order of the printed summary: the headline (robust accuracy with its interval, trust and
    why), robust accuracy per class, then the metrics, the warnings and the pictures."""
    from advlab.report.html import html_lines, html_list, render_value, write_report

    per_class = report.classes_shown(info.class_names)
    total = len(report.per_class())
    heading = "Per class" if len(per_class) == total else f"Per class: the {len(per_class)} worst of {total}"
    summary = [("Summary", html_lines(report.headline_lines())), (heading, render_value(per_class))]
    sections = [("Warnings", html_list(report.warnings))] if report.warnings else []
    write_report(run_dir.path, f"advlab eval: {info.name} on {args.data}", sections, summary=summary)
