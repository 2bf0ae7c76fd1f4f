"""``advlab study prune``: seed 003's sweep of weight and activation defenses against one attack.

The run directory holds study.md (the seed's table layout), study.csv (every number, with 95% intervals and
McNemar p-values), metrics.json, one accuracy-vs-setting plot per defense and report.html. Each setting is
saved as it finishes; --resume continues an interrupted sweep. Under ``torchrun -m advlab study prune`` the
settings are shared out over the processes (:mod:`advlab.distributed`); the McNemar tests against the
undefended row are completed when rank 0 merges the rows.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import torch

from advlab import distributed, runs, zoo
from advlab.cli.common import (
    Formatter,
    add_attack_args,
    add_device_args,
    add_model_args,
    add_run_args,
    batch_int,
    build_model,
    command_line,
    csv_text,
    default_out,
    html_table,
    load_data_for,
    make_attack,
    number,
    place_model,
    positive_int,
    say,
)
from advlab.cli.runner import Job, Units, run_job, run_settings
from advlab.errors import AdvlabError
from advlab.experiments import study
from advlab.experiments.study import Outcome, Row, Setting
from advlab.work import Work

#: the most defense settings one study sweeps (each is a full attack on the sample set)
MAX_SETTINGS = 100

DEFENSE_NAMES = ("e", "s", "r", "quant", "clamp")
#: what each defense does to the model, for captions
DEFENSE_TEXT = {
    "e": "weights with |w| < E set to zero",
    "s": "weights clamped to mu +- S sigma",
    "r": "U[-R, R] noise added to the weights",
    "quant": "weights quantized to the given bits",
    "clamp": "feature maps clamped to a calibrated percentile",
}
#: under study.md's table (and the report's): how to read the brackets and the p-value
TABLE_NOTE = (
    "Accuracies: estimate [95% Wilson interval, in percent] over the n images. McNemar p: exact test of the "
    "robust-correct flags against the undefended model."
)


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "study",
        parents=[flags],
        formatter_class=Formatter,
        help="studies: does pruning defend? (seed 003)",
        description="Studies that sweep defenses. See advlab study prune --help.",
    )
    inner = p.add_subparsers(dest="study", metavar="STUDY", required=True, parser_class=type(p))
    q = inner.add_parser(
        "prune",
        parents=[flags],
        formatter_class=Formatter,
        help="sweep weight/activation defenses against an attack",
        description="Seed 003: for each defense setting, build the defended model from the undefended one and measure\n"
        "clean accuracy, remnant (robust) accuracy under a white-box attack on the defended model, prediction change\n"
        "rate, strict attack success rate, and the transfer attack from the undefended model, with 95% intervals and\n"
        "McNemar tests against the undefended model.\n\n"
        "defenses: e (zero |w| < E), s (clamp weights to mu +- S sigma), r (add U[-R, R]), quant (bits),\n"
        "clamp (feature maps clamped to a calibrated percentile)\n"
        "settings: 'e=1e-3,1e-2;s=5,3' (default: a sweep of >= 5 settings per defense, sized to the model)\n\n"
        "examples:\n"
        "  advlab study prune --model digits-cnn --data digits:test\n"
        "  advlab study prune --model digits-cnn --data digits:test --defense e,s --eps 0.1 --steps 20\n"
        "  advlab study prune --model cifar-resnet18 --weights resnet18_cifar.pth --data cifar10:test --limit 1000 --eps 8/255",
    )
    add_model_args(q)
    q.add_argument("--data", "-d", required=True, help="data spec (see advlab data)")
    q.add_argument("--defense", default=",".join(DEFENSE_NAMES), help="comma list of e, s, r, quant, clamp")
    q.add_argument("--settings", help="values per defense, e.g. 'e=1e-3,1e-2;s=5,3;quant=8,4'")
    q.add_argument("--attack", "-a", default="pgd", help="the attack (default pgd; see advlab attack --help)")
    add_attack_args(q)
    q.add_argument("--limit", type=positive_int, default=500, help="the sample set: the first N images (default 500)")
    q.add_argument(
        "--calibration",
        type=positive_int,
        default=128,
        help="images (the first N of the sample set, unlabelled use) that calibrate clamp bounds (default 128)",
    )
    q.add_argument("--batch-size", type=batch_int, default=256, help="images per attack batch")
    q.add_argument("--json", action="store_true", help="print the rows as JSON")
    add_device_args(q)
    add_run_args(q, resume=True)
    q.set_defaults(func=run)


def parse_settings(text: str | None, defenses: list[str], model: torch.nn.Module) -> list[Setting]:
    """'e=1e-3,1e-2;s=5,3' for the listed defenses; a defense without values gets its default sweep."""
    given: dict[str, list[float]] = {}
    for part in (text or "").split(";"):
        if not part.strip():
            continue
        name, eq, values = part.partition("=")
        name = name.strip()
        if not eq or name not in DEFENSE_NAMES:
            raise AdvlabError(
                f"--settings: expected DEFENSE=V1,V2 with DEFENSE one of {', '.join(DEFENSE_NAMES)}, got {part!r}"
            )
        try:
            given[name] = [number(v) for v in values.split(",") if v.strip()]
        except argparse.ArgumentTypeError:
            raise AdvlabError(
                f"--settings: values for {name} must be numbers (finite ones), got {values[:60]!r}"
            ) from None
        if name not in defenses:
            defenses.append(name)
    out: list[Setting] = []
    for d in defenses:
        if d not in DEFENSE_NAMES:
            raise AdvlabError(f"unknown defense {d!r}; choose from {', '.join(DEFENSE_NAMES)}")
        out += [Setting(d, v) for v in given[d]] if d in given else study.default_settings(model, d)
    if len(out) > MAX_SETTINGS:
        raise AdvlabError(f"--settings: {len(out)} defense settings; a study sweeps at most {MAX_SETTINGS}")
    for s in out:
        s.check()
    return out


def run(args: argparse.Namespace) -> int:
    dist = distributed.setup(args.device)
    model = place_model(build_model(args), dist.device, args.channels_last)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    settings = parse_settings(args.settings, [d.strip() for d in args.defense.split(",") if d.strip()], model)
    atk = make_attack(args, info)
    x, y, desc = load_data_for(args.data, info, limit=args.limit)
    if (y < 0).any():
        raise AdvlabError(f"data {args.data!r} has unlabelled images; the study needs labels")
    out = args.out or default_out(
        runs.run_name(
            info.name,
            info.dataset,
            "prune",
            desc.dataset,
            atk.name,
            attack=atk,
            limit=args.limit,
            settings=run_settings(args),
        )
    )
    config = {
        "command": command_line(args.argv),
        "model": args.model,
        "weights": args.weights,
        "data": args.data,
        "limit": args.limit,
        "attack": repr(atk),
        "settings": [[s.defense, s.value] for s in settings],
        "calibration": args.calibration,
    }

    def sweep(work: Work[Outcome]) -> list[Outcome]:
        try:
            return study.sweep(
                model, x, y, settings, atk, calibration=x[: args.calibration], batch_size=args.batch_size, work=work
            )
        except ValueError as e:
            raise AdvlabError(str(e)) from None

    def write(run_dir: runs.Run, outcomes: list[Outcome], seconds: float) -> list[Outcome]:
        rows = study.table(outcomes)
        _write(
            run_dir,
            outcomes,
            rows,
            {"model": info.name, "data": args.data, "n": len(y), "attack": repr(atk), "rows": rows},
            info,
        )
        return outcomes

    units = Units(1 + len(settings), "a defense setting (0: the undefended model)", _encode, _decode, bar="study")
    job = Job(
        out,
        config,
        units,
        sweep,
        write,
        lambda run_dir, outcomes: _report(run_dir, outcomes, info),
        inputs={"model": model, "data": (x, y)},
    )
    outcomes = run_job(job, args, dist)
    if outcomes is not None and args.json:
        print(json.dumps(study.table(outcomes), indent=2))
    elif outcomes is not None:
        say(args, study.markdown(outcomes, info.name) + "\n" + TABLE_NOTE)
        say(args, f"wrote {out}")
    return 0


def _encode(o: Outcome) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return {"clean_correct": o.clean_correct, "robust_correct": o.robust_correct}, o.row.to_dict()


def _decode(t: dict[str, torch.Tensor], d: dict[str, Any]) -> Outcome:
    d = dict(d)
    for k in ("clean_ci", "robust_ci", "transfer_ci"):
        d[k] = tuple(d[k])
    return Outcome(Row(**d), t["clean_correct"].bool(), t["robust_correct"].bool())


def _write(
    run_dir: runs.Run, outcomes: list[Outcome], rows: list[dict[str, Any]], metrics: dict[str, Any], info: zoo.ModelInfo
) -> None:
    """metrics.json, study.md, study.csv and one accuracy-vs-setting plot per defense."""
    from advlab.report import line_plot

    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("study.md", study.markdown(outcomes, info.name) + "\n" + TABLE_NOTE + "\n")
    run_dir.save_text("study.csv", csv_text(rows))
    base = outcomes[0].row
    for d in dict.fromkeys(o.row.defense for o in outcomes[1:]):
        part = sorted((o.row for o in outcomes[1:] if o.row.defense == d), key=lambda r: float(r.value or 0))
        series = {
            "clean": [r.clean_accuracy for r in part],
            "remnant (white box)": [r.robust_accuracy for r in part],
            "remnant (transfer from undefended)": [r.transfer_robust_accuracy for r in part],
        }
        reference = {"undefended clean": base.clean_accuracy, "undefended remnant": base.robust_accuracy}
        label = part[0].label.split("=")[0]
        xs = [float(r.value or 0) for r in part]
        fig = line_plot(
            series, label, "accuracy", f"{info.name}: {label}", x=xs, reference=reference, logx=d in ("e", "r")
        )
        run_dir.save_figure(f"accuracy_vs_{d}.png", fig)


def _report(run_dir: runs.Run, outcomes: list[Outcome], info: zoo.ModelInfo) -> None:
    from advlab.report import write_report

    table = html_table(study.markdown(outcomes, info.name) + "\n" + TABLE_NOTE)
    captions = {}
    for d in dict.fromkeys(o.row.defense for o in outcomes[1:]):
        captions[f"accuracy_vs_{d}.png"] = (
            f"{info.name} defended by {d} ({DEFENSE_TEXT.get(d, d)}): clean accuracy and remnant accuracy "
            f"under the white-box attack and under the attack transferred from the undefended model, "
            f"against the setting; dashed: the undefended model."
        )
    write_report(
        run_dir.path, f"advlab study prune: {info.name}", [("The study (seed 003's layout)", table)], captions=captions
    )
