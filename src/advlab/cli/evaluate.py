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
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from advlab import distributed, runs, zoo
from advlab.attacks.catalog import attack_classes, make
from advlab.cli.attack import add_attack_args, attack_options, csv_text, short
from advlab.cli.common import (
    Formatter,
    add_device_args,
    add_model_args,
    add_run_args,
    build_model,
    command_line,
    default_out,
    load_data_for,
    place_model,
    positive_int,
    say,
)
from advlab.cli.shards import open_shards
from advlab.errors import AdvlabError
from advlab.evaluation import PRESETS, BatchResult, EvalReport, evaluate
from advlab.prototypes import auto_batch_size
from advlab.runs.rundir import PARTIAL_SUFFIX


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "eval", parents=[flags], formatter_class=Formatter, help="robust accuracy under an attack ensemble (AutoAttack-style cascade)",
        description="Evaluate robustness: a clean pass, then each attack on the samples still standing; prints clean and\n"
        "robust accuracy, success rates, norms, gradient evaluations, per-attack breakdown and sanity warnings.\n\n"
        f"presets: reliable (APGD-CE + targeted APGD-DLR; default), fast. attacks: {', '.join(attack_classes())}\n\n"
        "examples:\n"
        "  advlab eval --model digits-cnn --data digits:test --eps 0.1\n"
        "  advlab eval --model digits-cnn --data digits:test --preset reliable --eps 0.1 --norm linf --json\n"
        "  advlab eval --model digits-cnn --data digits:test --attack pgd --eps 0.1 --steps 20 --no-early-stop",
    )
    add_model_args(p)
    p.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    p.add_argument("--preset", choices=PRESETS, help="attack ensemble (default: reliable, unless --attack is given)")
    p.add_argument("--attack", "-a", help="comma list of attacks to cascade instead of a preset (they share the attack options)")
    add_attack_args(p)
    p.add_argument("--early-stop", action=argparse.BooleanOptionalAction, default=True,
                   help="stop each sample at its first success (same robust accuracy, far fewer gradients)")  # fmt: skip
    p.add_argument("--attack-misclassified", action="store_true", help="also attack samples the model gets wrong (for the prediction change rate)")
    p.add_argument("--limit", type=positive_int, help="only the first N images")
    p.add_argument("--batch-size", type=_batch_size, default=256,
                   help="samples per batch (a unit of work under torchrun), or 'auto': sized to the free memory of the device "
                        "(half the free GPU memory, a quarter of the RAM), kept on --resume")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    add_device_args(p)
    p.add_argument("--amp", action="store_true",
                   help="run the attacks under bfloat16 autocast (faster on GPUs); every success is re-checked in float32 and only "
                        "confirmed ones count (a claimed one float32 does not confirm is searched again in float32); "
                        "the effect on attack strength is measured by benchmarks/amp_strength.py")  # fmt: skip
    add_run_args(p, resume=True)
    p.set_defaults(func=run)


def _attacks(args: argparse.Namespace) -> tuple[list[Any] | None, float | None, str | None]:
    eps = args.eps
    if isinstance(eps, list):
        raise AdvlabError("eval takes one --eps (for a robustness curve use advlab attack with a comma list)")
    if args.attack is None:
        if eps is None:
            raise AdvlabError("--eps is required (e.g. --eps 8/255 --norm linf)")
        extra = {k for k in attack_options(args) if k not in ("eps", "norm", "seed")}
        if extra:
            raise AdvlabError(f"the {args.preset or 'reliable'} preset fixes its own settings; drop {', '.join('--' + k.replace('_', '-') for k in sorted(extra))} or use --attack")
        return None, eps, args.norm or "linf"
    if args.preset:
        raise AdvlabError("give --preset or --attack, not both")
    opts = attack_options(args)
    atks = [make(name.strip(), **opts) for name in args.attack.split(",") if name.strip()]
    return atks, eps, args.norm if eps is not None else None


def run(args: argparse.Namespace) -> int:
    dist = distributed.setup(args.device)
    model = place_model(build_model(args), dist.device, args.channels_last)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    atks, eps, norm = _attacks(args)
    if args.amp:
        _check_amp(atks, eps, norm)
    x, y, desc = load_data_for(args.data, info, limit=args.limit)
    method = args.attack.replace(",", "+") if args.attack else (args.preset or "reliable")
    out = args.out or default_out(runs.run_name(info.name, info.dataset, "eval", desc.dataset, method, eps))
    if args.batch_size == "auto":  # rank 0's estimate: free memory differs between processes
        saved = _saved_batch_size(out) if args.resume else None
        args.batch_size = int(dist.share(saved or auto_batch_size(model, x[:1].to(dist.device))))
    config = {"command": command_line(args.argv), "model": args.model, "weights": args.weights, "data": args.data,
              "limit": args.limit, "preset": None if atks else (args.preset or "reliable"), "attacks": [repr(a) for a in atks or []],
              "eps": eps, "norm": norm, "seed": args.seed, "early_stop": args.early_stop,
              "attack_misclassified": args.attack_misclassified, "batch_size": args.batch_size,
              **({"amp": "bfloat16"} if args.amp else {})}  # fmt: skip
    n_units = math.ceil(len(x) / args.batch_size)
    with open_shards(dist, out, config, n_units, force=args.force, resume=args.resume,
                     unit_name=f"a batch of {args.batch_size} samples") as opened:  # fmt: skip
        sh = opened.shards
        if sh is None:
            if dist.is_main():
                say(args, f"{out} is complete already")
            return 0
        t0 = time.perf_counter()
        common = {"preset": None if atks else (args.preset or "reliable"), "eps": eps, "norm": norm, "batch_size": args.batch_size,
                  "early_stop": args.early_stop, "attack_misclassified": args.attack_misclassified, "keep_adversarials": True,
                  "seed": args.seed, "device": dist.device}  # fmt: skip

        def save(b: int, part: BatchResult) -> None:
            sh.save(b, part.tensors(), {"checks": part.checks})

        report: EvalReport | None = None
        with sh.working():
            if sh.todo():
                report = evaluate(model, (x, y), atks, **common, progress=dist.is_main() and not args.quiet and sys.stderr.isatty(),
                                  done={} if dist.distributed else sh.saved(_decode), on_batch=save, units=sh.mine,
                                  attack_model=zoo.Autocast(model) if args.amp else None)  # fmt: skip
        if not dist.is_main():
            return 0
        if report is None or dist.distributed:  # merge every saved batch exactly as one process would
            merged = evaluate(model, (x, y), atks, **common, done=sh.load_all(_decode))
            report = dataclasses.replace(merged, seconds=round(time.perf_counter() - t0, 4) if dist.distributed else merged.seconds)
        sh.finish()
        _write(sh.run, x, y, report, info, args)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        say(args, report.format())
        say(args, f"wrote {out}")
    return 0


#: --amp refuses smaller L-inf balls: bfloat16 resolves a normalized input to about 1/255 of the pixel range
AMP_MIN_EPS = 1 / 255


def _check_amp(atks: list[Any] | None, eps: float | None, norm: str | None) -> None:
    """Refuse --amp where bfloat16 cannot represent the perturbation (measured: efficientnet-lite0 at 0.2/255
    loses 2 of 16 successes; see benchmarks/amp_strength.py)."""
    balls = [(eps, norm or "linf")] if eps is not None else [(getattr(a, "eps", None), a.threat_norm) for a in atks or []]
    for e, n in balls:
        small = e if isinstance(e, (int, float)) else (min(e) if e else None)
        if n == "linf" and small is not None and small < AMP_MIN_EPS:
            raise AdvlabError(f"--amp: L-inf eps {small:.3g} is below 1/255, about the resolution bfloat16 leaves a normalized "
                              "input; the attacks would lose strength: evaluate this eps in float32 (drop --amp)")  # fmt: skip


def _batch_size(text: str) -> int | str:
    return "auto" if text == "auto" else positive_int(text)


def _saved_batch_size(out: str | Path) -> int | None:
    saved = Path(f"{out}{PARTIAL_SUFFIX}") / "config.json"
    return json.loads(saved.read_text()).get("batch_size") if saved.exists() else None


def _decode(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> BatchResult:
    return BatchResult.from_tensors(tensors, info["checks"])


def _write(run_dir: runs.Run, x: torch.Tensor, y: torch.Tensor, report: EvalReport, info: zoo.ModelInfo, args: argparse.Namespace) -> None:
    from advlab.report import adversarial_grid, write_report

    assert report.x_adv is not None
    s = report.samples
    amp = {"amp": "attacks under bfloat16 autocast; successes confirmed in float32"} if args.amp else {}
    run_dir.save_json("metrics.json", {"model": info.name, "data": args.data, **amp, **report.to_dict()})
    run_dir.save_text("samples.csv", csv_text(report.rows(info.class_names)))
    run_dir.save_tensors("adversarials.safetensors", {"x": x, "x_adv": report.x_adv, "y": y, "broken_by": s.broken_by,
                         "clean_pred": s.clean_pred, "adv_pred": s.adv_pred}, metadata={"model": args.model, "data": args.data})  # fmt: skip
    broken = s.broken.nonzero().flatten()[:8]
    if len(broken):
        names = info.class_names
        clean_t = [f"clean: {short(names[int(s.clean_pred[i])])} {float(s.clean_confidence[i]):.0%}" for i in broken]
        adv_t = [f"adversarial: {short(names[int(s.adv_pred[i])])} {float(s.adv_confidence[i]):.0%}" for i in broken]
        run_dir.save_figure("grid.png", adversarial_grid(x[broken], report.x_adv[broken], clean_t, adv_t, ["red"] * len(broken)))
    sections = [("Warnings", "<ul>" + "".join(f"<li>{f}</li>" for f in report.flags) + "</ul>")] if report.flags else []
    run_dir.clear_batches()  # the results are written: the state goes, and the report does not list it
    write_report(run_dir.path, f"advlab eval: {info.name} on {args.data}", sections)
