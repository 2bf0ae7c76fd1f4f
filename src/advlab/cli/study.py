"""``advlab study prune``: research note 003's sweep of weight and activation defenses against one attack.

The run directory holds study.md (the seed's table layout), study.csv (every number, with 95% intervals and
McNemar p-values), metrics.json, one accuracy-vs-setting plot per defense and report.html. Each setting is
saved as it finishes; --resume continues an interrupted sweep. The data is read batch by batch, one pass per
setting (the undefended model's adversarial images, which every setting's transfer column needs, wait in a temporary
folder on disk, one file per batch). Under ``torchrun -m advlab study prune`` the
settings are shared out over the processes (:mod:`advlab.distributed`); the McNemar tests against the
undefended row are completed when rank 0 merges the rows.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from advlab import distributed, runs, zoo
from advlab.cli.common import (
    add_attack_args,
    add_command,
    add_device_args,
    add_model_args,
    add_run_args,
    batch_int,
    build_model,
    csv_text,
    default_out,
    make_attack,
    number,
    open_data_for,
    place_model,
    positive_int,
    run_config,
    say,
)
from advlab.cli.heartbeat import heartbeat
from advlab.cli.runner import Job, UnitSpec, run_job, run_settings
from advlab.data import Batches
from advlab.errors import AdvlabError
from advlab.experiments import study
from advlab.experiments.study import Outcome, Setting
from advlab.report.html import html_table
from advlab.work import Work

#: the most defense settings one study sweeps (each is a full attack on the sample set)
MAX_SETTINGS = 100

DEFENSE_NAMES = ("e", "s", "r", "quant", "clamp")


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "study",
        help="studies: does pruning defend? (research note 003)",
        description="Studies that sweep defenses. See advlab study prune --help.",
    )
    inner = p.add_subparsers(dest="study", metavar="STUDY", required=True, parser_class=type(p))
    q = add_command(
        inner,
        flags,
        "prune",
        help="sweep weight/activation defenses against an attack",
        description="Research note 003: for each defense setting, build the defended model from the undefended one\n"
        "and measure clean accuracy, remnant (robust) accuracy under a white-box attack on the defended model,\n"
        "prediction change rate, strict attack success rate, and the transfer attack from the undefended model,\n"
        "with 95% intervals and McNemar tests against the undefended model.\n\n"
        "defenses: e (zero |w| < E), s (clamp weights to mu +- S sigma), r (add U[-R, R]), quant (bits),\n"
        "clamp (feature maps clamped to a calibrated percentile)\n"
        "settings: 'e=1e-3,1e-2;s=5,3' (default: a sweep of >= 5 settings per defense, sized to the model)\n\n"
        "examples:\n"
        "  advlab study prune --model digits-cnn --data digits:test\n"
        "  advlab study prune --model digits-cnn --data digits:test --defense e,s --eps 0.1 --steps 20\n"
        "  advlab study prune --model cifar-resnet18 --weights resnet18_cifar.pth --data cifar10:test "
        "--limit 1000 --eps 8/255",
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


@dataclass(frozen=True)
class _Setup:
    """What the arguments ask for, opened and checked before the run directory opens: ``data`` is read batch
    by batch (each row of the sweep is one pass over it); ``y`` its labels, read without decoding an image."""

    model: torch.nn.Module
    info: zoo.ModelInfo
    settings: list[Setting]
    attack: Any
    data: Batches
    y: torch.Tensor
    dataset: str


def _setup(args: argparse.Namespace, device: torch.device) -> _Setup:
    model = place_model(build_model(args), device, args.channels_last)
    info = zoo.info_of(model)
    settings = parse_settings(args.settings, [d.strip() for d in args.defense.split(",") if d.strip()], model)
    atk = make_attack(args, info)
    data = open_data_for(args, info, batch_size=args.batch_size)
    y = data.labels()
    if (y < 0).any():
        raise AdvlabError(f"data {args.data!r} has unlabelled images; the study needs labels")
    return _Setup(model, info, settings, atk, data, y, data.info.dataset)


def _calibration(data: Batches, settings: list[Setting], n: int) -> torch.Tensor | None:
    """The first ``n`` images, which calibrate the clamp and quantization defenses (None when no setting needs
    them): the one place the study holds several batches of images at once, bounded by --calibration."""
    if not any(s.defense in ("clamp", "quant") for s in settings):
        return None
    parts: list[torch.Tensor] = []
    for b in range(len(data)):
        if sum(len(p) for p in parts) >= n:
            break
        parts.append(data.batch(b)[0])
    return torch.cat(parts)[:n]


def run(args: argparse.Namespace) -> int:
    dist = distributed.setup(args.device)
    s = _setup(args, dist.device)
    out = args.out or default_out(
        runs.run_name(
            s.info.name,
            s.info.dataset,
            "prune",
            s.dataset,
            s.attack.name,
            attack=s.attack,
            limit=args.limit,
            settings=run_settings(args),
        )
    )
    with heartbeat(s.model, "study", args.quiet):
        outcomes = run_job(_job(args, s, out), args, dist)
    if outcomes is not None and args.json:
        print(json.dumps(study.table(outcomes), indent=2))
    elif outcomes is not None:
        say(args, _table_text(outcomes, s.info))
        say(args, f"wrote {out}")
    return 0


def _job(args: argparse.Namespace, s: _Setup, out: str | Path) -> Job[Outcome, list[Outcome], list[Outcome]]:
    """The sweep as a job of the run runner: one unit per defense setting (0: the undefended model)."""
    config = run_config(
        args,
        attack=repr(s.attack),
        settings=[[setting.defense, setting.value] for setting in s.settings],
        calibration=args.calibration,
    )

    def sweep(work: Work[Outcome]) -> list[Outcome]:
        try:
            with tempfile.TemporaryDirectory(prefix="advlab-study-") as spill:
                return study.sweep(
                    s.model,
                    s.data,
                    s.y,
                    s.settings,
                    s.attack,
                    calibration=_calibration(s.data, s.settings, args.calibration),
                    batch_size=args.batch_size,
                    work=work,
                    spill=Path(spill),
                )
        except ValueError as e:
            raise AdvlabError(str(e)) from None

    def write(run_dir: runs.Run, outcomes: list[Outcome], seconds: float) -> list[Outcome]:
        rows = study.table(outcomes)
        metrics = {"model": s.info.name, "data": args.data, "n": len(s.y), "attack": repr(s.attack), "rows": rows}
        _write(run_dir, outcomes, rows, metrics, s.info)
        return outcomes

    units = UnitSpec(
        1 + len(s.settings),
        "a defense setting (0: the undefended model)",
        Outcome.to_saved,
        Outcome.from_saved,
        bar="study",
    )
    return Job(
        out,
        config,
        units,
        sweep,
        write,
        lambda run_dir, outcomes: _report(run_dir, outcomes, s.info),
        inputs={"model": s.model, "data": (s.data.names(), s.y)},
        # the saved rows with their McNemar tests: with every row done, sweep measures nothing (no model call)
        merge=lambda done, _plan: study.sweep(s.model, s.data, s.y, s.settings, s.attack, work=Work(done=done)),
    )


def _table_text(outcomes: list[Outcome], info: zoo.ModelInfo) -> str:
    """The study's Markdown table (research note 003's layout) with the note on how to read it."""
    return study.markdown(outcomes, info.name) + "\n" + study.TABLE_NOTE


def _write(
    run_dir: runs.Run, outcomes: list[Outcome], rows: list[dict[str, Any]], metrics: dict[str, Any], info: zoo.ModelInfo
) -> None:
    """metrics.json, study.md, study.csv and one accuracy-vs-setting plot per defense."""
    from advlab.report.results import study_figures

    run_dir.save_json("metrics.json", metrics)
    run_dir.save_text("study.md", _table_text(outcomes, info) + "\n")
    run_dir.save_text("study.csv", csv_text(rows))
    for name, figure in study_figures(outcomes, info.name).items():
        run_dir.save_figure(name, figure)


def _report(run_dir: runs.Run, outcomes: list[Outcome], info: zoo.ModelInfo) -> None:
    from advlab.report import write_report
    from advlab.report.results import study_captions

    write_report(
        run_dir.path,
        f"advlab study prune: {info.name}",
        [("The study (research note 003's layout)", html_table(_table_text(outcomes, info)))],
        captions=study_captions(outcomes, info.name),
    )
