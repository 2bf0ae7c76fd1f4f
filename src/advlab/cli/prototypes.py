"""``advlab prototypes``: evolve a blank image, noise or photos into every class of a model (research note 000).

The run directory (named by the research note's convention, e.g.
``digits-cnn_digits-min-blank_pgd_alpha0.0039_<hash>``) holds prototypes.safetensors (prototypes, start images,
every trajectory, snapshots), trajectories.csv (one row per pair and step), grid.png (the prototypes with class
names and confidences), strips.png (snapshots over the steps), probability.png, grad_norm.png and recognition.png
(plots), metrics.json and report.html. Work is saved after every batch; --resume continues an interrupted run, and
the same --seed gives the same prototypes. Under ``torchrun -m advlab prototypes`` the batches of pairs are shared
out over the processes (:mod:`advlab.distributed`).
``--compare RECIPE`` evolves the same pairs by another recipe as further units of the same job (saved, resumed and
shared out like the run's own batches); its verdicts go to metrics.json (``compare``), its prototypes to
compare.png. The command parses, runs the job and writes; the numbers come from :mod:`advlab.prototypes`, the
pictures and tables from :mod:`advlab.report.prototypes`.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
from dataclasses import dataclass
from typing import Any

import torch

from advlab import distributed, prototypes, runs, zoo
from advlab.cli.common import (
    MAX_PIXELS,
    MAX_STEPS,
    SEED_RANGE,
    add_command,
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
    steps_int,
)
from advlab.cli.heartbeat import heartbeat
from advlab.cli.runner import Job, UnitSpec, batch_size, run_job, run_settings
from advlab.errors import AdvlabError
from advlab.prototypes import Config, Evolution, Prototypes, Starts, recipes
from advlab.prototypes.parametrize import PARAMS
from advlab.report import write_report
from advlab.report.prototypes import (
    CAPTIONS,
    grid_figures,
    prototype_figures,
    recognition_table,
    recognizability_table,
)


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "prototypes",
        help="evolve a blank image, noise or photos into every class; measure when the model recognizes it",
        description=DESCRIPTION,
    )
    _add_args(p)
    p.set_defaults(func=run)
    _add_human_commands(p)


DESCRIPTION = (
    "Targeted descent from a start image towards each class of a frozen model (research note 000): the attack\n"
    "is the generator, the classifier its discriminator. Records, per (start, target) pair and step, the target\n"
    "probability, top-1 class, margin, input-gradient norm and distance from the start; the recognition point\n"
    "(first top-1, p > 0.5 / 0.9 / 0.99); and how other models (--judge) see the prototypes.\n\n"
    "modes: min (descend the target's loss until ||grad|| < --tol: a prototype); max (once the input is the\n"
    "target, ascend the input-gradient norm while it stays the target: double backprop)\n"
    "starts: blank:gray|black|white|COLOUR|R,G,B, noise:gaussian[:MEAN,STD], noise:uniform[:LOW,HIGH] (@K for K\n"
    "images), or any data spec (digits:test, samples, svhn, folder:PATH): each image towards each target\n\n"
    "examples:\n"
    "  advlab prototypes --model digits-cnn --start blank:gray\n"
    "  advlab prototypes --model digits-cnn --start digits:test --limit 5 --mode max\n"
    "  advlab prototypes --model efficientnet-lite0 --start blank:gray --targets 0-9 --steps 100 "
    "--judge efficientnet-lite1\n"
    "  advlab prototypes --model efficientnet-lite0 --start noise:gaussian --targets goldfish,wombat --tv 0.05 "
    "--jitter 4\n"
    "  advlab prototypes --model efficientnet-lite0 --recipe natural --targets 0-9 --judge efficientnet-lite1 "
    "--compare adversarial\n"
    "  advlab prototypes quiz RUN; advlab prototypes score RUN answers.json       "
    "# a person's accuracy next to the judges'"
)


def _add_args(p: argparse.ArgumentParser) -> None:
    """Every option of a run (the quiz and score subcommands have their own)."""
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
        help="another model that scores the prototypes (repeatable), e.g. efficientnet-lite1 or "
        "digits-cnn=other.safetensors",
    )
    o.add_argument(
        "--compare",
        choices=list(recipes.RECIPES),
        help="also evolve the same pairs with this recipe (e.g. adversarial) and report its recognizability side "
        "by side",
    )
    o.add_argument("--batch-size", type=batch_int, help="pairs per batch (default: sized to memory)")
    o.add_argument("--json", action="store_true", help="print metrics as JSON")
    add_device_args(p)
    add_run_args(p, resume=True)


def _add_generator_args(p: argparse.ArgumentParser) -> None:
    """The recipe and its ingredients."""
    g = p.add_argument_group("generator")
    g.add_argument(
        "--recipe",
        choices=list(recipes.RECIPES),
        help="a named recipe: adversarial (pixel PGD, the default) or natural (Fourier + decorrelated colour, random "
        "views: prototypes a person can recognize); every option below overrides its ingredient",
    )
    g.add_argument("--preset", dest="renamed_preset", metavar="RECIPE", help="renamed --recipe: refused with that hint")
    g.add_argument(
        "--mode",
        choices=prototypes.MODES,
        default="min",
        help="min: descend the loss until the input gradient vanishes (--tol); max: once the target holds, grow "
        "||grad||",
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
        help=f"most optimization steps per prototype (default: the recipe's, 200 adversarial, 256 natural; "
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
        j = zoo.info_of(model)
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
    args: argparse.Namespace, model: torch.nn.Module | None = None, recipe: str | None = None, ingredients: bool = True
) -> Config:
    """The run's Config: the recipe (``--recipe``, default adversarial), every ingredient option on top
    (``ingredients=False``: the recipe alone, for ``--compare``)."""
    over = {k: getattr(args, k) for k in INGREDIENTS} if ingredients else {}
    try:
        config = recipes.config(
            recipe or args.recipe or "adversarial",
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
    if args.renamed_preset is not None:
        raise AdvlabError(f"--preset is now --recipe (a prototypes recipe): --recipe {args.renamed_preset}")
    if not args.model:
        raise AdvlabError("advlab prototypes needs --model (or: advlab prototypes quiz RUN / score RUN ANSWERS.json)")
    dist = distributed.setup(args.device)
    model = place_model(build_model(args), dist.device, args.channels_last)
    info = zoo.info_of(model)
    configs = [_config(args, model)]
    if args.compare:
        configs.append(_config(args, model, recipe=args.compare, ingredients=False))
    starts, targets, strips = _pairs(args, info)
    judges = _judges(args.judge, info)
    cfg = configs[0]
    name = (info.name, info.dataset, cfg.mode, starts.kind, cfg.method, cfg.eps, cfg.step_size)
    out = args.out or default_out(runs.run_name(*name, limit=args.limit, settings=run_settings(args)))
    estimate = lambda: prototypes.auto_batch_size(model, starts.x[:1].to(dist.device), cfg.mode)  # noqa: E731
    bs = prototypes.pairs_per_batch(batch_size(args.batch_size, out, args.resume, dist, estimate), len(targets))
    outputs = _Outputs(args, model, info, judges, (starts, targets, cfg), math.ceil(len(starts.x) * len(targets) / bs))
    units = UnitSpec(
        len(configs) * outputs.batches,
        f"a batch of {bs} (start, target) pairs",
        lambda ev: (ev.tensors(), {}),
        lambda t, _: Evolution.from_tensors(t),
        bar="prototypes",
    )
    job: Job[Evolution, list[Prototypes | None], tuple[Prototypes, dict[str, Any]]] = Job(
        out,
        _saved_config(args, targets, configs, bs),
        units,
        lambda work: prototypes.generate_each(
            model, starts, targets, configs, batch_size=bs, strip_pairs=strips, work=work
        ),
        outputs.write,
        outputs.report,
        outputs.interrupted,
        inputs={"model": model, "starts": starts.x},
        merge=lambda done, _plan: [  # the saved batches of each config, joined in order (no model call)
            Prototypes(
                starts,
                targets,
                c,
                Evolution.cat([done[k * outputs.batches + b] for b in range(outputs.batches)]),
                list(info.class_names),
            )
            for k, c in enumerate(configs)
        ],
    )
    with heartbeat(model, "prototypes", args.quiet):
        shown = run_job(job, args, dist)
    if shown is not None:
        _print(args, *shown, out)
    return 0


def _saved_config(args: argparse.Namespace, targets: list[int], configs: list[Config], bs: int) -> dict[str, Any]:
    """config.json: the settings a resumed run must match (``compare``: the --compare recipe's config)."""
    saved = {
        "command": command_line(args.argv),
        "model": args.model,
        "weights": args.weights,
        "start": args.start,
        "limit": args.limit,
        "targets": targets,
        "config": repr(configs[0]),
        "batch_size": bs,
    }
    if len(configs) > 1:
        saved["compare"] = repr(configs[1])
    return saved


@dataclass(frozen=True)
class _Outputs:
    """What a prototypes job writes from its units: the run's (the first ``batches`` units) and, with --compare,
    the compared recipe's (the next ``batches``). ``pairs``: the starts, targets and config of the run."""

    args: argparse.Namespace
    model: torch.nn.Module
    info: zoo.ModelInfo
    judges: list[tuple[str, torch.nn.Module]]
    pairs: tuple[Starts, list[int], Config]
    batches: int

    def write(
        self, run_dir: runs.Run, results: list[Prototypes | None], seconds: float
    ) -> tuple[Prototypes, dict[str, Any]]:
        """Every file of the finished run; returns what the command prints."""
        result, compared = results[0], [r for r in results[1:] if r is not None]
        assert result is not None, "the merged units hold every batch"
        metrics = _metrics([result, *compared], self.model, self.info, self.judges, seconds, self.args)
        for other in compared:
            ev = other.evolution
            metrics["compare"] = {
                "recipe": self.args.compare,
                "objective": repr(other.config.minimized()),
                "summary_reached_top1": prototypes.reached_top1(ev),
                **prototypes.verdicts(ev.x, ev.target, self.model, self.judges),
            }
            for file, fig in grid_figures(other, self.info.class_names, compare=True).items():
                run_dir.save_figure(file, fig)
        return result, _write(run_dir, result, self.info, metrics)

    def report(self, run_dir: runs.Run, shown: tuple[Prototypes, dict[str, Any]]) -> None:
        _report(run_dir, shown[0], self.info, shown[1])

    def interrupted(self, run_dir: runs.Run, done: dict[int, Evolution], seconds: float) -> None:
        """Ctrl-C: what is done of the run stays viewable in the partial directory; the unit files stay for
        --resume."""
        mine = [done[b] for b in sorted(done) if b < self.batches]
        if not mine:
            return
        starts, targets, config = self.pairs
        partial = Prototypes(starts, targets, config, Evolution.cat(mine), list(self.info.class_names))
        metrics = _metrics([partial], self.model, self.info, self.judges, seconds, self.args)
        metrics = _write(run_dir, partial, self.info, {"partial": True, **metrics})
        _report(run_dir, partial, self.info, metrics, final=False)


def _print(args: argparse.Namespace, result: Prototypes, metrics: dict[str, Any], out: Any) -> None:
    if args.json:
        print(json.dumps(metrics, indent=2))
        return
    s = metrics["summary"]
    stuck = s.get("zero_gradient_at_start", 0)  # not convergence: no step could move them
    ended = f"{s['converged']} converged" + (f", {stuck} did not move: {s['advice']}" if stuck else "")
    say(
        args,
        f"{s['pairs']} pairs ({len(result.starts.x)} starts x {len(result.targets)} targets), {result.config.mode} "
        f"mode: {s['reached_p99']} reached p >= 0.99, {s['ever_top1']} became top-1 "
        f"(median L2 {s['recognition_top1']['l2']['median']}), {ended}; {metrics['seconds']:.1f} s",
    )
    for jname, j in metrics["judges"].items():
        say(args, f"judge {jname}: agrees on {j['top1_agreement']:.0%} of the prototypes")
    say(args, f"wrote {out}")


def _metrics(
    results: list[Prototypes],
    model: torch.nn.Module,
    info: zoo.ModelInfo,
    judges: list[tuple[str, torch.nn.Module]],
    seconds: float,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """The run's numbers (``results[0]``): the summary, throughput, and the prototypes as the model and each judge
    see them. ``seconds`` is the compute time of every result given (with --compare, both recipes), and so are
    the target steps of the throughput."""
    result = results[0]
    ev, cfg = result.evolution, result.config
    target_steps = sum(int((r.evolution.stopped + 1).sum()) for r in results)
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
        "recipe": args.recipe or "adversarial",
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
    m.update(prototypes.verdicts(ev.x, ev.target, model, judges))
    return m


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
    run_dir.save_text("trajectories.csv", csv_text(prototypes.trajectory_rows(ev, result.starts.names, names)))
    for file, fig in prototype_figures(result, info.name, names).items():
        run_dir.save_figure(file, fig)
    return metrics


def _report(
    run_dir: runs.Run, result: Prototypes, info: zoo.ModelInfo, metrics: dict[str, Any], final: bool = True
) -> None:
    """report.html; ``final=False``: an interrupted run's (its unit files stay for --resume)."""
    title = f"advlab prototypes: {info.name}, {metrics['start']}, {result.config.mode} mode"
    if not final:
        title += f" (interrupted: {len(result.evolution.target)} pairs done; --resume continues)"
    sections = [
        ("Recognizability", recognizability_table(metrics)),
        ("Recognition points", recognition_table(result, info.class_names)),
    ]
    write_report(run_dir.path, title, sections, captions=CAPTIONS)
