"""``advlab prototypes``: evolve a blank image, noise or photos into every class of a model (seed 000).

The run directory (named by the seed's convention, e.g. ``digits-cnn_digits-min-blank_pgd_alpha0.0039_<hash>``) holds
prototypes.safetensors (prototypes, start images, every trajectory, snapshots), trajectories.csv (one row per
pair and step), grid.png (the prototypes with class names and confidences), strips.png (snapshots over the
steps), probability.png, grad_norm.png and recognition.png (plots), metrics.json and report.html. Work is saved
after every batch; --resume continues an interrupted run, and the same seed gives the same prototypes. Under
``torchrun -m advlab prototypes`` the batches of pairs are shared out over the processes (:mod:`advlab.distributed`).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import shlex
from typing import Any

import torch

from advlab import distributed, prototypes, runs, zoo
from advlab.cli.common import (
    MAX_PIXELS,
    MAX_STEPS,
    SEED_RANGE,
    Formatter,
    add_device_args,
    add_model_args,
    add_run_args,
    batch_int,
    bounded_int,
    build_model,
    command_line,
    csv_text,
    default_out,
    nonnegative,
    number,
    place_model,
    positive_int,
    say,
    seed_int,
    short,
    steps_int,
)
from advlab.cli.runner import Job, Units, batch_size, run_job, run_settings
from advlab.errors import AdvlabError
from advlab.prototypes import Config, Evolution, Prototypes, Starts, recipes
from advlab.prototypes.parametrize import PARAMS

#: at most this many prototypes in grid.png and pairs in the probability plot (all are in the files)
GRID_MAX = 100
PLOT_MAX = 10


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "prototypes",
        parents=[flags],
        formatter_class=Formatter,
        help="evolve a blank image, noise or photos into every class; measure when the model recognizes it",
        description="Targeted descent from a start image towards each class of a frozen model (seed 000): the attack is\n"
        "the generator, the classifier its discriminator. Records, per (start, target) pair and step, the target\n"
        "probability, top-1 class, margin, input-gradient norm and distance from the start; the recognition point\n"
        "(first top-1, p > 0.5 / 0.9 / 0.99); and how other models (--judge) see the prototypes.\n\n"
        "modes: min (descend the target's loss until ||grad|| < --tol: a prototype); max (once the input is the\n"
        "target, ascend the input-gradient norm while it stays the target: double backprop)\n"
        "starts: blank:gray|black|white|COLOUR|R,G,B, noise:gaussian[:MEAN,STD], noise:uniform[:LOW,HIGH] (@K for K\n"
        "images), or any data spec (digits:test, samples, svhn, folder:PATH): each image towards each target\n\n"
        "examples:\n"
        "  advlab prototypes --model digits-cnn --start blank:gray\n"
        "  advlab prototypes --model digits-cnn --start digits:test --limit 5 --mode max\n"
        "  advlab prototypes --model efficientnet-lite0 --start blank:gray --targets 0-9 --steps 100 --judge efficientnet-lite1\n"
        "  advlab prototypes --model efficientnet-lite0 --start noise:gaussian --targets goldfish,wombat --tv 0.05 --jitter 4\n"
        "  advlab prototypes --model efficientnet-lite0 --preset natural --targets 0-9 --judge efficientnet-lite1 --compare adversarial\n"
        "  advlab prototypes quiz RUN; advlab prototypes score RUN answers.json       # a person's accuracy next to the judges'",
    )
    add_model_args(p, default="")  # required, except by the quiz and score subcommands (checked in run)
    p.add_argument(
        "--start",
        "-s",
        default="blank:gray",
        help="start spec (default blank:gray); under torchrun write -s: torchrun reads --start as its --start-method",
    )
    p.add_argument("--limit", type=positive_int, help="only the first N images of a data start")
    p.add_argument("--targets", "-t", default="all", help="all, a range 0-9, or a list 3,7 (indices or class names)")
    _add_generator_args(p)
    o = p.add_argument_group("output")
    o.add_argument(
        "--snapshots", help="steps whose images are kept, e.g. 0,10,100 (default 0,1,2,5,10,20,50,... and the last)"
    )
    o.add_argument("--strip-classes", help="targets shown in strips.png (first start; default the first 10)")
    o.add_argument(
        "--judge",
        action="append",
        default=[],
        metavar="MODEL[=WEIGHTS]",
        help="another model that scores the prototypes (repeatable), e.g. efficientnet-lite1 or digits-cnn=other.safetensors",
    )
    o.add_argument(
        "--compare",
        choices=list(recipes.RECIPES),
        help="also evolve the same pairs with this recipe (e.g. adversarial) and report its recognizability side by side",
    )
    o.add_argument("--batch-size", type=batch_int, help="pairs per batch (default: sized to memory)")
    o.add_argument("--json", action="store_true", help="print metrics as JSON")
    add_device_args(p)
    add_run_args(p, resume=True)
    p.set_defaults(func=run)
    _add_human_commands(p)


def _add_generator_args(p: argparse.ArgumentParser) -> None:
    """The recipe and its ingredients."""
    g = p.add_argument_group("generator")
    g.add_argument(
        "--preset",
        choices=list(recipes.RECIPES),
        help="a named recipe: adversarial (pixel PGD, the default) or natural (Fourier + decorrelated colour, random views: "
        "prototypes a person can recognize); every option below overrides its ingredient",
    )
    g.add_argument(
        "--mode",
        choices=prototypes.MODES,
        default="min",
        help="min: descend the loss until the input gradient vanishes (--tol); max: once the target holds, grow ||grad||",
    )
    g.add_argument("--method", choices=list(prototypes.METHODS), help="pgd, mifgsm (L-inf) or pgdl2 (L2) (default pgd)")
    g.add_argument(
        "--eps",
        type=number,
        help="radius of the ball around the start (L-inf for pgd/mifgsm, L2 for pgdl2; default: unconstrained)",
    )
    g.add_argument("--alpha", type=number, help="step size (default 1/255 for L-inf, 0.5 for L2)")
    g.add_argument(
        "--steps",
        type=steps_int,
        help=f"most optimization steps per prototype (default: the preset's, 200 adversarial, 256 natural; "
        f"at most {MAX_STEPS})",
    )
    g.add_argument("--tol", type=nonnegative, help="min mode: a pair stops when ||grad||_2 < tol (default 1e-4)")
    g.add_argument("--momentum", type=nonnegative, help="mifgsm's mu (default 1)")
    g.add_argument(
        "--param",
        choices=list(PARAMS),
        help="what the step moves: pixels (default), fourier (decorrelated colour, "
        "1/f spectrum) or phase (Fourier phase, natural magnitude)",
    )
    g.add_argument("--tv", type=nonnegative, help="weight of the total-variation prior")
    g.add_argument(
        "--bn", type=nonnegative, help="weight of the BatchNorm-statistics prior (DeepInversion; models with BatchNorm)"
    )
    g.add_argument("--l2", type=nonnegative, help="weight of the L2 prior ||x - 0.5||_2")
    g.add_argument(
        "--blur-prior", type=nonnegative, help="weight of the blur prior mean (x - blur(x))^2 (sigma 1 pixel)"
    )
    g.add_argument(
        "--jitter", type=bounded_int(0, MAX_PIXELS), help=f"random shift of up to N pixels per step (0..{MAX_PIXELS})"
    )
    g.add_argument("--scale", type=number, help="random zoom by up to +-S per view (a fraction, e.g. 0.1)")
    g.add_argument("--rotate", type=_degrees, help="random rotation by up to +-D degrees per view (0..180)")
    g.add_argument(
        "--transforms-per-step",
        type=bounded_int(1, MAX_VIEWS),
        help=f"random views per image and step (default 1; at most {MAX_VIEWS})",
    )
    g.add_argument(
        "--blur", type=_sigma, help=f"Gaussian blur sigma (pixels) after every step (pixels only; 0..{MAX_PIXELS})"
    )
    g.add_argument("--seed", type=seed_int, default=0, help=f"seed for noise starts and jitter ({SEED_RANGE})")


#: the most random views per image and step (each is a forward and backward pass), and the most --judge models
MAX_VIEWS = 256
MAX_JUDGES = 16


def _degrees(text: str) -> float:
    """--rotate: a number of degrees in [0, 180]."""
    v = number(text)
    if not 0 <= v <= 180:
        raise argparse.ArgumentTypeError(f"degrees in [0, 180], got {text[:40]!r}")
    return v


def _sigma(text: str) -> float:
    """--blur: a sigma in pixels, in [0, MAX_PIXELS]."""
    v = nonnegative(text)
    if v > MAX_PIXELS:
        raise argparse.ArgumentTypeError(f"a sigma of at most {MAX_PIXELS} pixels, got {text[:40]!r}")
    return v


def _add_human_commands(p: argparse.ArgumentParser) -> None:
    """``advlab prototypes quiz RUN`` and ``advlab prototypes score RUN ANSWERS.json``."""
    human = p.add_subparsers(
        dest="human",
        metavar="{quiz,score}",
        parser_class=type(p),
        help="a human check of a finished run: quiz RUN writes RUN/quiz.html; score RUN ANSWERS.json",
    )
    q = human.add_parser(
        "quiz", help="write RUN/quiz.html: each prototype with four class names in random order (self-contained)"
    )
    q.add_argument("run_dir", metavar="RUN", help="a finished prototypes run directory")
    q.add_argument("--quiz-seed", type=seed_int, default=0, help=f"seed of the choices and their order ({SEED_RANGE})")
    q.add_argument("--items", type=positive_int, default=100, help="at most this many prototypes (the first ones)")
    q.set_defaults(func=quiz_command)
    sc = human.add_parser("score", help="human accuracy of downloaded answers, next to the judges' agreement")
    sc.add_argument("run_dir", metavar="RUN", help="the run directory the quiz was written for")
    sc.add_argument("answers", metavar="ANSWERS.json", help="the answers the quiz page downloaded")
    sc.set_defaults(func=score_command)


def _steps_list(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(s) for s in text.split(",") if s.strip())
    except ValueError:
        raise AdvlabError(f"--snapshots takes step numbers separated by commas, got {text!r}") from None


def _judges(specs: list[str], info: zoo.ModelInfo) -> list[tuple[str, torch.nn.Module]]:
    if len(specs) > MAX_JUDGES:
        raise AdvlabError(f"{len(specs)} --judge models; at most {MAX_JUDGES}")
    out = []
    for spec in specs:
        name, _, weights = spec.partition("=")
        model = zoo.load(name, weights=weights or None)
        j: zoo.ModelInfo = model.info  # type: ignore[assignment]
        if j.channels != info.channels:
            raise AdvlabError(f"judge {name!r} takes {j.channels}-channel images, {info.name} {info.channels}")
        if j.num_classes != info.num_classes:
            raise AdvlabError(f"judge {name!r} has {j.num_classes} classes, {info.name} {info.num_classes}")
        out.append((spec, model))
    return out


#: the options that set a recipe ingredient (None: the recipe's)
INGREDIENTS = (
    "method",
    "eps",
    "alpha",
    "tol",
    "momentum",
    "param",
    "tv",
    "bn",
    "l2",
    "blur_prior",
    "jitter",
    "scale",
    "rotate",
    "transforms_per_step",
    "blur",
)


def _config(
    args: argparse.Namespace, model: torch.nn.Module | None = None, preset: str | None = None, ingredients: bool = True
) -> Config:
    """The run's Config: the preset (``--preset``, default adversarial), every ingredient option on top
    (``ingredients=False``: the preset alone, for ``--compare``)."""
    over = {k: getattr(args, k) for k in INGREDIENTS} if ingredients else {}
    try:
        config = recipes.config(
            preset or args.preset or "adversarial",
            model,
            mode=args.mode,
            steps=args.steps,
            seed=args.seed,
            snapshots=_steps_list(args.snapshots),
            **over,
        )
        config.validate()
    except ValueError as e:
        raise AdvlabError(str(e)) from None
    return config


def _pairs(args: argparse.Namespace, info: zoo.ModelInfo) -> tuple[Starts, list[int], list[int]]:
    """The starts, the targets and the pair indices (first start) whose snapshots strips.png shows."""
    _check_class_numbers(args.targets, "--targets", info.num_classes)
    _check_class_numbers(args.strip_classes, "--strip-classes", info.num_classes)
    starts = prototypes.parse_start(args.start, info.channels, info.input_size, seed=args.seed, limit=args.limit)
    targets = prototypes.parse_targets(args.targets, info.num_classes, info.class_names)
    strips = (
        prototypes.parse_targets(args.strip_classes, info.num_classes, info.class_names)
        if args.strip_classes
        else targets[:10]
    )
    missing = [t for t in strips if t not in targets]
    if missing:
        raise AdvlabError(f"--strip-classes {missing[0]} is not among the targets")
    return starts, targets, [targets.index(t) for t in strips]


def _check_class_numbers(spec: str | None, option: str, num_classes: int) -> None:
    """Refuse a class number of a --targets / --strip-classes spec ("3", "0-9") outside the model's classes before the
    spec is expanded: "0-1000000000" would otherwise build a list of a billion targets first."""
    for part in (spec or "").split(","):
        for token in part.strip().partition("-")[::2]:
            if token.isdigit() and (not token.isascii() or len(token) > 9 or int(token) >= num_classes):
                raise AdvlabError(
                    f"{option} {part.strip()[:40]!r} is out of range: the model has classes 0..{num_classes - 1}"
                )


def _finished_run(path: str) -> tuple[Any, dict[str, torch.Tensor], dict[str, Any]]:
    """A finished prototypes run: its directory, prototypes.safetensors and metrics.json."""
    from pathlib import Path

    from safetensors.torch import load_file

    d = Path(path)
    if not (d / "prototypes.safetensors").is_file() or not (d / "metrics.json").is_file():
        raise AdvlabError(f"{path!r} is not a finished prototypes run (no prototypes.safetensors / metrics.json)")
    return d, load_file(str(d / "prototypes.safetensors")), json.loads((d / "metrics.json").read_text())


def quiz_command(args: argparse.Namespace) -> int:
    """``advlab prototypes quiz RUN``: RUN/quiz.html and its answer key RUN/quiz.json."""
    from advlab.prototypes import quiz
    from advlab.runs import atomic_write

    d, t, m = _finished_run(args.run_dir)
    info = zoo.info(m["model"])
    quiz_id = f"{d.name}-{args.quiz_seed}"
    try:
        items = quiz.make(t["target"].tolist(), info.num_classes, seed=args.quiz_seed, limit=args.items)
    except ValueError as e:
        raise AdvlabError(str(e)) from None
    atomic_write(d / "quiz.json", json.dumps(quiz.key(items, quiz_id), indent=1))
    atomic_write(
        d / "quiz.html",
        quiz.page(items, t["x"], list(info.class_names), quiz_id, f"Which class? ({len(items)} pictures)"),
    )
    say(args, f"wrote {d / 'quiz.html'} ({len(items)} questions) and its key quiz.json")
    return 0


def score_command(args: argparse.Namespace) -> int:
    """``advlab prototypes score RUN ANSWERS.json``: human accuracy next to the model's and the judges'."""
    from pathlib import Path

    from advlab.prototypes import quiz

    d, _, m = _finished_run(args.run_dir)
    if not (d / "quiz.json").is_file():
        raise AdvlabError(f"{str(d)!r} has no quiz.json: run advlab prototypes quiz {shlex.quote(str(d))} first")
    try:
        answers = json.loads(Path(args.answers).read_text())
        human = quiz.score(json.loads((d / "quiz.json").read_text()), answers)
    except (OSError, json.JSONDecodeError, ValueError, AttributeError) as e:
        raise AdvlabError(f"cannot score {args.answers!r}: {e}") from None
    out = {
        "human": human,
        "self": m["self"]["top1_agreement"],
        "judges": {k: v["top1_agreement"] for k, v in m["judges"].items()},
    }
    if getattr(args, "json", False):
        print(json.dumps(out, indent=2))
        return 0
    acc = "n/a" if human["accuracy_answered"] is None else f"{human['accuracy_answered']:.0%}"
    print(f"human: {human['correct']} of {human['answered']} answered right ({acc}; {human['items']} questions)")
    print(
        f"the model itself: {out['self']:.0%} top-1 = target"
        + "".join(f"; judge {k}: {v:.0%}" for k, v in out["judges"].items())
    )
    return 0


def run(args: argparse.Namespace) -> int:
    if not args.model:
        raise AdvlabError("advlab prototypes needs --model (or: advlab prototypes quiz RUN / score RUN ANSWERS.json)")
    dist = distributed.setup(args.device)
    model = place_model(build_model(args), dist.device, args.channels_last)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    config = _config(args, model)
    starts, targets, strips = _pairs(args, info)
    judges = _judges(args.judge, info)
    out = args.out or default_out(
        runs.run_name(
            info.name,
            info.dataset,
            config.mode,
            starts.kind,
            config.method,
            config.eps,
            config.step_size,
            limit=args.limit,
            settings=run_settings(args),
        )
    )
    estimate = lambda: prototypes.auto_batch_size(model, starts.x[:1].to(dist.device), config.mode)  # noqa: E731
    bs = prototypes.pairs_per_batch(batch_size(args.batch_size, out, args.resume, dist, estimate), len(targets))
    saved_config = {
        "command": command_line(args.argv),
        "model": args.model,
        "weights": args.weights,
        "start": args.start,
        "limit": args.limit,
        "targets": targets,
        "config": repr(config),
        "batch_size": bs,
    }

    def write(run_dir: runs.Run, result: Prototypes, seconds: float) -> tuple[Prototypes, dict[str, Any]]:
        metrics = _metrics(result, model, info, judges, seconds, args)
        compared = _compare(args, model, result, judges, bs)
        if compared is not None:
            metrics["compare"] = compared[1]
            _grid(run_dir, compared[0], info.class_names, "compare.png")
        return result, _write(run_dir, result, info, metrics)

    def interrupted(run_dir: runs.Run, done: dict[int, Evolution], seconds: float) -> None:
        """Ctrl-C: what is done stays viewable in the partial directory; the unit files stay for --resume."""
        partial = Prototypes(
            starts, targets, config, Evolution.cat([done[b] for b in sorted(done)]), list(info.class_names)
        )
        metrics = _write(
            run_dir, partial, info, {"partial": True, **_metrics(partial, model, info, judges, seconds, args)}
        )
        _report(run_dir, partial, info, metrics, final=False)

    units = Units(
        math.ceil(len(starts.x) * len(targets) / bs),
        f"a batch of {bs} (start, target) pairs",
        lambda ev: (ev.tensors(), {}),
        lambda t, _: Evolution.from_tensors(t),
        bar="prototypes",
    )
    job = Job(
        out,
        saved_config,
        units,
        lambda work: prototypes.generate(model, starts, targets, config, batch_size=bs, strip_pairs=strips, work=work),
        write,
        lambda run_dir, shown: _report(run_dir, shown[0], info, shown[1]),
        interrupted,
        inputs={"model": model, "starts": starts.x},
    )
    shown = run_job(job, args, dist)
    if shown is not None:
        _print(args, *shown, out)
    return 0


def _print(args: argparse.Namespace, result: Prototypes, metrics: dict[str, Any], out: Any) -> None:
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    s = metrics["summary"]
    say(
        args,
        f"{s['pairs']} pairs ({len(result.starts.x)} starts x {len(result.targets)} targets), {result.config.mode} mode: "
        f"{s['reached_p99']} reached p >= 0.99, {s['ever_top1']} became top-1 "
        f"(median L2 {s['recognition_top1']['l2']['median']}), {s['converged']} converged; {metrics['seconds']:.1f} s",
    )
    for jname, j in metrics["judges"].items():
        say(args, f"judge {jname}: agrees on {j['top1_agreement']:.0%} of the prototypes")
    say(args, f"wrote {out}")


def _metrics(
    result: Prototypes,
    model: torch.nn.Module,
    info: zoo.ModelInfo,
    judges: list[tuple[str, torch.nn.Module]],
    seconds: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The run's numbers: the summary, throughput, and the prototypes as the model and each judge see them."""
    ev, cfg = result.evolution, result.config
    target_steps = int((ev.stopped + 1).sum())
    m: dict[str, Any] = {
        "model": info.name,
        "start": args.start,
        "start_kind": result.starts.kind,
        "starts": len(result.starts.x),
        "targets": len(result.targets),
        "mode": cfg.mode,
        "method": cfg.method,
        "eps": cfg.eps,
        "alpha": cfg.step_size,
        "steps": cfg.steps,
        "tol": cfg.tol,
        "tv": cfg.tv,
        "jitter": cfg.jitter,
        "blur": cfg.blur,
        "seed": cfg.seed,
        "preset": args.preset or "adversarial",
        "param": cfg.param,
        "scale": cfg.scale,
        "rotate": cfg.rotate,
        "transforms_per_step": cfg.transforms_per_step,
        "objective": repr(cfg.minimized()),
        "summary": result.summary(),
        "seconds": round(seconds, 3),
        "target_steps": target_steps,
        "target_steps_per_second": round(target_steps / seconds, 2) if seconds > 0 else None,
    }
    m.update(_verdicts(ev.x, ev.target, model, judges))
    return m


def _verdicts(
    x: torch.Tensor, target: torch.Tensor, model: torch.nn.Module, judges: list[tuple[str, torch.nn.Module]]
) -> dict[str, Any]:
    """How the model itself, each judge and (with two or more) the judges' ensemble see the prototypes ``x``:
    top-1 agreement with the targets, mean target probability, Inception-Score-style number."""
    from advlab.data.images import resize_batch

    m: dict[str, Any] = {"self": prototypes.judge(prototypes.class_probabilities(model, x), target), "judges": {}}
    probs = []
    for spec, judge in judges:
        size = judge.info.input_size  # type: ignore[attr-defined]
        probs.append(prototypes.class_probabilities(judge, x if x.shape[-1] == size else resize_batch(x, size)))
        m["judges"][spec] = prototypes.judge(probs[-1], target)
    if len(probs) > 1:
        m["judge_ensemble"] = prototypes.judge(prototypes.ensemble(probs), target)
    return m


def _compare(
    args: argparse.Namespace,
    model: torch.nn.Module,
    result: Prototypes,
    judges: list[tuple[str, torch.nn.Module]],
    bs: int,
) -> tuple[Prototypes, dict[str, Any]] | None:
    """``--compare PRESET``: the same pairs evolved by that recipe (same mode and seed; ``--steps`` when given, else
    the recipe's own step count), and its verdicts."""
    if not args.compare:
        return None
    cfg = _config(args, model, preset=args.compare, ingredients=False)
    other = prototypes.generate(model, result.starts, result.targets, cfg, batch_size=bs, strip_pairs=[])
    ev = other.evolution
    return other, {
        "preset": args.compare,
        "objective": repr(cfg.minimized()),
        "summary_reached_top1": int((ev.final_top1 == ev.target).sum()),
        **_verdicts(ev.x, ev.target, model, judges),
    }


def _trajectory_rows(result: Prototypes, names: list[str]) -> list[dict[str, Any]]:
    ev = result.evolution
    rows = []
    cols = {k: getattr(ev, k).tolist() for k in ("prob", "top1", "margin", "grad_norm", "l2", "linf")}
    for i in range(len(ev.target)):
        s, t = int(ev.start[i]), int(ev.target[i])
        for step in range(int(ev.stopped[i]) + 1):
            rows.append(
                {
                    "pair": i,
                    "start": s,
                    "start_name": result.starts.names[s],
                    "target": t,
                    "target_name": names[t],
                    "step": step,
                    "target_probability": round(cols["prob"][i][step], 6),
                    "top1": cols["top1"][i][step],
                    "margin": round(cols["margin"][i][step], 5),
                    "grad_norm": f"{cols['grad_norm'][i][step]:.4g}",
                    "l2": round(cols["l2"][i][step], 5),
                    "linf": round(cols["linf"][i][step], 5),
                }
            )
    return rows


def _recognition_table(result: Prototypes, names: list[str]) -> str:
    """An HTML table: per pair (up to GRID_MAX), where the target became top-1 and passed 0.5/0.9/0.99."""
    rp = prototypes.recognition_points(result.evolution)
    ev = result.evolution
    head = "<tr><th>start</th><th>target</th><th>top-1 at step (L2)</th><th>p&gt;0.5</th><th>p&gt;0.9</th><th>p&gt;0.99</th><th>final p</th><th>stopped</th></tr>"
    body = []
    for i in range(min(len(ev.target), GRID_MAX)):
        cells = []
        for k in ("top1", "p50", "p90", "p99"):
            step = int(rp[f"{k}_step"][i])
            cells.append("never" if step < 0 else f"{step} ({float(rp[f'{k}_l2'][i]):.3g})")
        s = int(ev.start[i])
        body.append(
            f"<tr><td>{html.escape(result.starts.names[s])}</td><td>{html.escape(names[int(ev.target[i])])}</td>"
            + "".join(f"<td>{c}</td>" for c in cells)
            + f"<td>{float(ev.final_prob[i]):.3f}</td><td>{int(ev.stopped[i])}{' (converged)' if ev.converged[i] else ''}</td></tr>"
        )
    note = (
        f"<p>First {GRID_MAX} of {len(ev.target)} pairs; all are in trajectories.csv.</p>"
        if len(ev.target) > GRID_MAX
        else ""
    )
    return f"{note}<table>{head}{''.join(body)}</table>"


def _write(run_dir: runs.Run, result: Prototypes, info: zoo.ModelInfo, metrics: dict[str, Any]) -> dict[str, Any]:
    """metrics.json, prototypes.safetensors, trajectories.csv and the pictures; returns ``metrics``."""
    ev, names = result.evolution, info.class_names
    run_dir.save_json("metrics.json", metrics)
    tensors = {
        **ev.tensors(),
        "start_images": result.starts.x,
        "start_labels": result.starts.labels,
        "targets": torch.tensor(result.targets),
    }
    run_dir.save_tensors("prototypes.safetensors", tensors, {"config": repr(result.config), "model": info.name})
    run_dir.save_text("trajectories.csv", csv_text(_trajectory_rows(result, names)))
    _grid(run_dir, result, names)
    _strips(run_dir, result, names)
    _plots(run_dir, result, info)
    return metrics


def _grid(run_dir: runs.Run, result: Prototypes, names: list[str], file: str = "grid.png") -> None:
    """grid.png: the prototypes (up to GRID_MAX), titled with the target and its final probability; for a noise
    or photo start also difference.png, the change from the start amplified (grey: none)."""
    from advlab.report import image_grid

    ev, n_t = result.evolution, len(result.targets)
    shown = list(range(min(len(ev.target), GRID_MAX)))
    fp, ft = ev.final_prob, ev.final_top1
    titles = [f"{short(names[int(ev.target[i])])}\np={float(fp[i]):.2f}" for i in shown]
    colors = ["black" if int(ft[i]) == int(ev.target[i]) else "red" for i in shown]
    run_dir.save_figure(file, image_grid(ev.x[shown], titles, ncols=min(n_t, 10), cell=1.6, title_colors=colors))
    if file == "grid.png" and result.starts.kind != "blank":
        diff = prototypes.amplified_difference(ev.x[shown], result.starts.x[ev.start[shown]])
        run_dir.save_figure(
            "difference.png", image_grid(diff, titles, ncols=min(n_t, 10), cell=1.6, title_colors=colors)
        )


def _strips(run_dir: runs.Run, result: Prototypes, names: list[str]) -> None:
    """strips.png: the snapshots of the strip pairs over the steps (up to where the last of them stopped)."""
    from advlab.report import image_grid

    ev = result.evolution
    if len(ev.snapshot_pairs):
        rows = ev.snapshot_pairs.tolist()
        stop = max(int(ev.stopped[r]) for r in rows)
        keep = [k for k, s in enumerate(ev.snapshot_steps) if s <= stop or k == 0 or ev.snapshot_steps[k - 1] < stop]
        steps = [ev.snapshot_steps[k] for k in keep]
        imgs = ev.snapshots[:, keep].flatten(0, 1)
        st = []
        for r in rows:
            for s in steps:
                col = min(s, int(ev.stopped[r]))
                st.append(f"{short(names[int(ev.target[r])], 12)} @{s}\np={float(ev.prob[r, col]):.2f}")
        run_dir.save_figure("strips.png", image_grid(imgs, st, ncols=len(steps), cell=1.3))


def _plots(run_dir: runs.Run, result: Prototypes, info: zoo.ModelInfo) -> None:
    """probability.png and grad_norm.png (the first PLOT_MAX pairs and the median), recognition.png."""
    from advlab.report import histogram, line_plot

    ev, names = result.evolution, info.class_names
    last = int(ev.stopped.max())  # plots end where the last pair stopped: beyond, nothing changes
    plotted = list(range(min(len(ev.target), PLOT_MAX)))
    x_steps = list(range(last + 1))
    prob, gnorm = ev.prob[:, : last + 1], ev.grad_norm[:, : last + 1].clamp_min(1e-12)
    labels = [short(names[int(ev.target[i])], 14) for i in plotted]
    series = {lab: prob[i].tolist() for lab, i in zip(labels, plotted)}
    gseries = {lab: gnorm[i].tolist() for lab, i in zip(labels, plotted)}
    if len(ev.target) > PLOT_MAX:
        series["median over all pairs"] = prob.median(0).values.tolist()
        gseries["median over all pairs"] = gnorm.median(0).values.tolist()
    mode = result.config.mode
    run_dir.save_figure(
        "probability.png",
        line_plot(
            series,
            "step",
            "target probability",
            f"{info.name}: target probability ({mode} mode)",
            x=x_steps,
            markers=False,
        ),
    )
    run_dir.save_figure(
        "grad_norm.png",
        line_plot(
            gseries,
            "step",
            "||d loss / dx||_2",
            f"{info.name}: input-gradient norm ({mode} mode)",
            x=x_steps,
            logy=True,
            markers=False,
        ),
    )
    rp = prototypes.recognition_points(ev)
    hit = rp["top1_step"] >= 0
    if bool(hit.any()):
        run_dir.save_figure(
            "recognition.png",
            histogram(
                rp["top1_l2"][hit].tolist(),
                "L2 distance from the start when the target became top-1",
                f"recognition distance ({int(hit.sum())} of {len(hit)} pairs)",
            ),
        )


def _report(
    run_dir: runs.Run, result: Prototypes, info: zoo.ModelInfo, metrics: dict[str, Any], final: bool = True
) -> None:
    """report.html; ``final=False``: an interrupted run's (its unit files stay for --resume)."""
    from advlab.report import write_report

    names = info.class_names
    title = f"advlab prototypes: {info.name}, {metrics['start']}, {result.config.mode} mode"
    write_report(
        run_dir.path,
        title + ("" if final else f" (interrupted: {len(result.evolution.target)} pairs done; --resume continues)"),
        [
            ("Recognizability", _recognizability_table(metrics)),
            ("Recognition points", _recognition_table(result, names)),
        ],
        captions=CAPTIONS,
    )


#: captions of the pictures only prototypes runs draw
CAPTIONS = {
    "grid.png": "the prototypes, titled with the target and the model's final probability (red: the target is not top-1)",
    "difference.png": "what the run changed: 0.5 + (prototype - start) / (2 max |prototype - start|) per image, grey = no change",
    "compare.png": "the same pairs evolved by the --compare recipe",
}


def _recognizability_table(metrics: dict[str, Any]) -> str:
    """An HTML table: how the model, each judge and their ensemble see this run's (and --compare's) prototypes."""
    rows = []
    for recipe, m in (
        (metrics.get("preset", ""), metrics),
        (metrics.get("compare", {}).get("preset"), metrics.get("compare")),
    ):
        if not m:
            continue
        who = [("the model itself", m["self"]), *[(f"judge {k}", v) for k, v in m["judges"].items()]]
        who += [("judge ensemble", m["judge_ensemble"])] if "judge_ensemble" in m else []
        for name, j in who:
            rows.append(
                f"<tr><td>{html.escape(str(recipe))}</td><td>{html.escape(name)}</td><td>{j['top1_agreement']:.1%}</td>"
                f"<td>{j['target_probability_mean']:.3f}</td><td>{j['inception_score']:.2f}</td></tr>"
            )
    head = "<tr><th>recipe</th><th>seen by</th><th>top-1 = target</th><th>mean target p</th><th>IS</th></tr>"
    return f"<p>Would another model (a stand-in for a person) name the target? (--judge, --compare)</p><table>{head}{''.join(rows)}</table>"
