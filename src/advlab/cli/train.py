"""``advlab train``: train a zoo model from scratch (standard or adversarial training) and save its weights in a
run directory.

The run directory holds weights.safetensors, metrics.json (clean and robust accuracy, training seconds),
history.json and metrics.csv (one row per epoch: training objective, clean eval accuracy and, with adversarial
training, PGD-10 robust accuracy on the first 256 eval images), loss.png, accuracy.png and report.html. A
checkpoint (model, optimizer, scheduler, generators, history as safetensors + JSON) is written after every
epoch; Ctrl-C keeps ``<out>.partial`` with it, and ``--resume`` continues from it to the same bits.

The data are streamed (:func:`advlab.cli.common.open_data_for`): each epoch reads its shuffled batches as the
optimizer takes them, at most :data:`advlab.data.stream.PREFETCH` batches ahead in :data:`READERS` background
thread, so memory does not grow with the number of images (only the labels are held, as one tensor); the weights
are the bits that training on the stacked tensors gives.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from advlab import data, runs, zoo
from advlab.cli.common import (
    MAX_EPOCHS,
    MAX_STEPS,
    SEED_RANGE,
    add_command,
    add_model_args,
    add_run_args,
    batch_int,
    build_model,
    command_line,
    csv_text,
    default_out,
    epochs_int,
    number,
    open_data_for,
    positive_int,
    progress,
    say,
    seed_int,
    steps_int,
)
from advlab.cli.heartbeat import heartbeat
from advlab.defenses.training import (
    ADVERSARIAL,
    ATTACK_MODES,
    TrainConfig,
    TrainHistory,
    TrainingDiverged,
    TrainState,
    accuracy,
    fit,
)
from advlab.errors import AdvlabError
from advlab.runs.shards import check_settings

_EVAL_FOR = {
    "digits:train": "digits:test",
    "cifar10:train": "cifar10:test",
    "mnist:train": "mnist:test",
    "svhn:train": "svhn:test",
}
#: default L-inf eps ([0, 1] pixel units) per data set; others 8/255
_EPS_FOR = {"digits": 0.1, "mnist": 0.3}
#: the per-epoch robust accuracy: PGD with this many steps on the first EPOCH_ROBUST_IMAGES eval images
EPOCH_ROBUST_STEPS = 10
EPOCH_ROBUST_IMAGES = 256
ROBUST_COLUMN = f"robust_accuracy_pgd{EPOCH_ROBUST_STEPS}"
CHECKPOINT = "checkpoint_epoch"
#: threads that read the batches ahead of training (one, as evaluate's: a factory's Dataset is never read from two
#: threads at once)
READERS = 1


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p = add_command(
        sub,
        flags,
        "train",
        help="train a model from scratch (e.g. digits-cnn), optionally adversarially",
        description="Train a zoo model from random init with Adam + one-cycle LR, deterministically.\n"
        "Writes weights.safetensors (load with --weights), metrics.json, history.json, metrics.csv, plots "
        "and report.html.\n\n"
        "adversarial training (L-inf, eps in [0, 1] pixel units):\n"
        "  --adversarial pgd      Madry et al. 2018: min CE(f(x_adv), y), x_adv from PGD "
        "(random start, --adv-steps steps)\n"
        "  --adversarial fgsm-rs  Wong et al. 2020: x_adv = one FGSM step of 1.25 eps from a uniform random start\n"
        "  --logit-pairing L      adversarial logit pairing: CE(x) + gamma CE(x_adv) + L * mean ||f(x) - f(x_adv)||^2\n"
        "  objective in general:  c CE(f(x), y) + gamma CE(f(x_adv), y) + L mean ||f(x) - f(x_adv)||_2^2\n"
        "                         (c = --clean-weight: default 0, or 1 with --logit-pairing)\n"
        "x_adv is crafted with the model in eval mode (--attack-mode train: batch statistics, buffers restored).\n"
        "A checkpoint is saved after every epoch: Ctrl-C keeps it, --resume continues from it "
        "(bit-identical on a CPU).\n\n"
        "examples:\n"
        "  advlab train --model digits-cnn --data digits:train          # rebuilds the shipped digits-cnn weights\n"
        "  advlab train --model digits-cnn --data digits:train --seed 1 --out runs/digits-seed1\n"
        "  advlab train --adversarial pgd --eps 0.1 --adv-steps 7 --robust-eval reliable   # a robust digits-cnn\n"
        "  advlab train --adversarial fgsm-rs --epochs 15                # fast adversarial training\n"
        "  advlab train --adversarial pgd --adv-steps 3 --logit-pairing 0.5\n"
        "  advlab train --adversarial pgd --out runs/robust --resume    # continue an interrupted run\n"
        "  advlab classify digits:test --model digits-cnn --weights runs/digits-seed1/weights.safetensors --limit 5",
    )
    _add_training_args(p, d)
    _add_adversarial_args(p, d)
    add_run_args(p, resume=True)
    p.set_defaults(func=run)


def _add_training_args(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """The model, the data and the optimizer's settings (defaults from ``d``)."""
    add_model_args(p, default="digits-cnn")
    p.add_argument("--data", "-d", default="digits:train", help="training data spec")
    p.add_argument("--eval-data", help="held-out data spec (default: the matching :test split)")
    p.add_argument(
        "--epochs", type=epochs_int, default=d.epochs, help=f"passes over the training data (1..{MAX_EPOCHS})"
    )
    p.add_argument("--lr", type=number, default=d.lr, help="peak learning rate")
    p.add_argument("--batch-size", type=batch_int, default=d.batch_size, help="images per optimizer step")
    p.add_argument(
        "--seed",
        type=seed_int,
        default=d.seed,
        help=f"seed of the initial weights, the data order and the attacks ({SEED_RANGE})",
    )
    p.add_argument("--limit", type=positive_int, help="train on the first N samples only")


def _add_adversarial_args(p: argparse.ArgumentParser, d: TrainConfig) -> None:
    """The inner maximization, the objective's weights and the robust evaluation (defaults from ``d``)."""
    a = p.add_argument_group("adversarial training")
    a.add_argument(
        "--adversarial", choices=ADVERSARIAL, help="inner maximization: pgd (Madry et al.) or fgsm-rs (Wong et al.)"
    )
    a.add_argument(
        "--eps",
        type=number,
        help="L-inf radius in [0, 1] pixel units, e.g. 0.1 or 8/255 (default 0.1 on digits, "
        "0.3 on mnist, else 8/255); also the radius of the robust evaluation",
    )
    a.add_argument(
        "--adv-steps", type=steps_int, default=d.adv_steps, help=f"PGD steps per batch (pgd only; 1..{MAX_STEPS})"
    )
    a.add_argument(
        "--adv-alpha",
        type=number,
        help="step size in pixel units (default 2.5 eps / steps for pgd, 1.25 eps for fgsm-rs)",
    )
    a.add_argument(
        "--logit-pairing",
        type=number,
        default=d.logit_pairing,
        metavar="LAMBDA",
        help="weight of mean ||f(x) - f(x_adv)||_2^2",
    )
    a.add_argument("--gamma", type=number, default=d.gamma, help="weight of CE(f(x_adv), y)")
    a.add_argument("--clean-weight", type=number, help="weight of CE(f(x), y) (default 0, or 1 with --logit-pairing)")
    a.add_argument(
        "--attack-mode", choices=ATTACK_MODES, default=d.attack_mode, help="model mode while x_adv is crafted"
    )
    a.add_argument(
        "--robust-eval",
        choices=("fast", "reliable", "none"),
        help="final robust accuracy on the eval data: evaluate()'s preset at --eps (default fast with "
        "--adversarial or --eps, else none)",
    )
    a.add_argument("--robust-limit", type=positive_int, help="final robust evaluation on the first N eval images only")


def _config(args: argparse.Namespace, eps: float) -> TrainConfig:
    """The TrainConfig the arguments ask for; impossible settings become one-line errors."""
    if args.lr <= 0:
        raise AdvlabError(f"--lr must be positive, got {args.lr}")
    if not 0 < eps <= 1:
        raise AdvlabError(f"--eps must be in (0, 1] ([0, 1] pixel units), got {eps:g}")
    if args.adversarial is None:
        given = [
            f
            for f, v in (
                ("--logit-pairing", args.logit_pairing != 0),
                ("--gamma", args.gamma != 1),
                ("--clean-weight", args.clean_weight is not None),
                ("--adv-alpha", args.adv_alpha is not None),
                ("--adv-steps", args.adv_steps != TrainConfig.adv_steps),
                ("--attack-mode", args.attack_mode != TrainConfig.attack_mode),
            )
            if v
        ]
        if given:
            raise AdvlabError(f"{', '.join(given)} needs --adversarial ({' or '.join(ADVERSARIAL)})")
    config = TrainConfig(
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        seed=args.seed,
        adversarial=args.adversarial,
        eps=eps,
        adv_steps=args.adv_steps,
        adv_alpha=args.adv_alpha,
        gamma=args.gamma,
        logit_pairing=args.logit_pairing,
        clean_weight=args.clean_weight,
        attack_mode=args.attack_mode,
    )
    try:
        config.validate()
    except ValueError as e:
        raise AdvlabError(
            str(e).replace("adv_alpha", "--adv-alpha").replace("logit_pairing", "--logit-pairing")
        ) from None
    return config


def _name(info: zoo.ModelInfo, dataset: str, config: TrainConfig) -> str:
    name = f"train_{info.name}_{dataset}_seed{config.seed}"
    if config.adversarial is not None:
        steps = f"{config.adv_steps}" if config.adversarial == "pgd" else ""
        name += f"_{config.adversarial}{steps}_e{runs.format_number(config.eps)}"
        if config.logit_pairing:
            name += f"_alp{runs.format_number(config.logit_pairing)}"
    return name


def _latest_checkpoint(run_dir: runs.Run) -> TrainState | None:
    """The newest complete checkpoint in the run directory (one cut off mid-save is skipped)."""
    epochs = sorted(
        (
            int(p.stem[len(CHECKPOINT) :])
            for p in run_dir.path.glob(f"{CHECKPOINT}*.json")
            if p.stem[len(CHECKPOINT) :].isdigit()
        ),
        reverse=True,
    )
    for k in epochs:
        saved = run_dir.load_state(f"{CHECKPOINT}{k:04d}")
        if saved is not None:
            return TrainState.from_saved(*saved)
    return None


def _clear_checkpoints(run_dir: runs.Run, keep: int | None = None) -> None:
    for p in run_dir.path.glob(f"{CHECKPOINT}*.json"):
        k = p.stem[len(CHECKPOINT) :]
        if k.isdigit() and int(k) != keep:
            run_dir.clear_state(p.stem)
    for p in run_dir.path.glob(f"{CHECKPOINT}*.safetensors"):  # a tensor file whose JSON never got written
        k = p.stem[len(CHECKPOINT) :]
        if k.isdigit() and int(k) != keep:
            p.unlink(missing_ok=True)


def _epoch_rows(history: TrainHistory) -> list[dict[str, Any]]:
    rows = []
    for i, loss in enumerate(history.loss):
        row: dict[str, Any] = {"epoch": i + 1, "loss": loss}
        if history.eval_accuracy:
            row["eval_accuracy"] = history.eval_accuracy[i]
        for k, v in history.metrics.items():
            row[k] = v[i]
        row["seconds"] = round(history.seconds[i], 4) if i < len(history.seconds) else None
        rows.append(row)
    return rows


def _write_log(run_dir: runs.Run, history: TrainHistory) -> None:
    """history.json and metrics.csv: one entry / row per finished epoch."""
    h = history.to_dict()
    run_dir.save_json(
        "history.json",
        {"loss": h["loss"], "eval_accuracy": h["eval_accuracy"], "seconds": h["seconds"], **h["metrics"]},
    )
    run_dir.save_text("metrics.csv", csv_text(_epoch_rows(history)))


def _plots(
    run_dir: runs.Run,
    history: TrainHistory,
    info: zoo.ModelInfo,
    data_spec: str,
    eval_spec: str | None,
    config: TrainConfig,
) -> None:
    """loss.png and, with eval data, eval_accuracy.png (clean, and the per-epoch robust accuracy)."""
    from advlab.report.results import training_figures

    objective = "training objective" if config.adversarial is not None else "cross-entropy"
    accuracy: dict[str, Sequence[float]] = (
        {f"{eval_spec or 'eval'} clean": history.eval_accuracy} if history.eval_accuracy else {}
    )
    if ROBUST_COLUMN in history.metrics:
        accuracy[f"robust (PGD-{EPOCH_ROBUST_STEPS}, eps {config.eps:.4g}, first {EPOCH_ROBUST_IMAGES})"] = (
            history.metrics[ROBUST_COLUMN]
        )
    for name, figure in training_figures(history.loss, accuracy, info.name, data_spec, objective).items():
        run_dir.save_figure(name, figure)


@dataclass(frozen=True)
class _Setup:
    """What the arguments ask for, loaded and checked before the run directory opens."""

    model: torch.nn.Module
    info: zoo.ModelInfo
    x: data.Batches
    y: torch.Tensor
    dataset: str
    config: TrainConfig
    eval_spec: str | None
    eval_data: tuple[data.Batches, torch.Tensor] | None
    preset: str


def _setup(args: argparse.Namespace) -> _Setup:
    _config(args, args.eps if args.eps is not None else 0.1)  # bad arguments fail before anything is loaded
    torch.manual_seed(args.seed)  # the initial weights come from this seed
    model = build_model(args, pretrained=False)
    info = zoo.info_of(model)
    x = open_data_for(args, info, args.batch_size).rebatched(args.batch_size, workers=READERS)
    y = x.labels()
    config = _config(args, args.eps if args.eps is not None else _EPS_FOR.get(x.info.dataset, 8 / 255))
    if (y < 0).any():
        raise AdvlabError(f"data {args.data!r} has unlabelled images; training needs labels")
    eval_spec = args.eval_data or _EVAL_FOR.get(args.data)
    eval_data = _open_eval(args, info, eval_spec) if eval_spec else None
    preset = args.robust_eval or ("fast" if config.adversarial is not None or args.eps is not None else "none")
    if preset != "none" and eval_data is None:
        raise AdvlabError(
            f"a robust evaluation needs held-out data: give --eval-data (no default for {args.data!r}) "
            "or --robust-eval none"
        )
    return _Setup(model, info, x, y, x.info.dataset, config, eval_spec, eval_data, preset)


def _open_eval(args: argparse.Namespace, info: zoo.ModelInfo, spec: str) -> tuple[data.Batches, torch.Tensor]:
    """The held-out data, streamed as the training data are, and their labels: all of it (--limit is the training
    data's)."""
    from advlab.evaluation import EvalConfig

    size = EvalConfig().batch_size
    every = argparse.Namespace(**{**vars(args), "limit": None})
    batches = open_data_for(every, info, size, spec=spec).rebatched(size, workers=READERS)
    return batches, batches.labels()


def _first(batches: data.Batches, n: int | None, batch_size: int) -> data.Batches:
    """The first ``n`` images of ``batches`` (all for None) in batches of ``batch_size``."""
    head = batches if n is None or n >= batches.count else batches.reordered(range(n))
    return head.rebatched(batch_size)


def run(args: argparse.Namespace) -> int:
    s = _setup(args)
    out = args.out or default_out(_name(s.info, s.dataset, s.config))
    run_config = {
        "command": command_line(args.argv),
        "model": args.model,
        "data": args.data,
        "eval_data": s.eval_spec,
        "train_config": dataclasses.asdict(s.config),
        "limit": args.limit,
        "robust_eval": s.preset,
        "robust_limit": args.robust_limit,
    }
    with runs.start(out, run_config, force=args.force, resume=args.resume) as run_dir:
        if run_dir.resumed and run_dir.path == run_dir.final:
            say(args, f"{out} is complete already")
            return 0
        check_settings(run_dir, run_config)
        state = _checkpoint_to_resume(run_dir, s) if run_dir.resumed else None
        if state is not None:
            say(args, f"resuming {out} after epoch {state.epochs_done} of {s.config.epochs}")
        with heartbeat(s.model, "train", args.quiet):
            history = _train(run_dir, s, state, args)
        metrics = _metrics(s, history, state, args)
        run_dir.save_tensors(
            "weights.safetensors",
            s.model.net.state_dict(),  # type: ignore[union-attr]
            metadata={"model": args.model, "recipe": run_config["command"]},
        )
        run_dir.save_json("metrics.json", metrics)
        _write_log(run_dir, history)
        _plots(run_dir, history, s.info, args.data, s.eval_spec, s.config)
        _clear_checkpoints(run_dir)  # the results are written: the state goes
        _report(run_dir, s, args.data)
    acc = f", {s.eval_spec} accuracy {metrics['eval_accuracy']:.2%}" if s.eval_data is not None else ""
    if "robust_accuracy" in metrics:
        acc += f", robust accuracy {metrics['robust_accuracy']:.2%} ({s.preset} preset, L-inf {s.config.eps:.4g})"
    say(args, f"trained {s.info.name} in {metrics['seconds']:.1f} s{acc}; weights in {out}/weights.safetensors")
    return 0


def _report(run_dir: runs.Run, s: _Setup, data_spec: str, interrupted: str = "") -> None:
    from advlab.report import write_report

    kind = f" ({s.config.adversarial} adversarial training, eps {s.config.eps:.4g})" if s.config.adversarial else ""
    write_report(run_dir.path, f"advlab train: {s.info.name} on {data_spec}" + (interrupted or kind))


def _checkpoint_to_resume(run_dir: runs.Run, s: _Setup) -> TrainState | None:
    """The newest checkpoint, checked before training: one from other settings cannot be continued."""
    state = _latest_checkpoint(run_dir)
    if state is None:
        return None
    try:
        saved = TrainConfig(**state.config)
    except TypeError:
        raise AdvlabError(
            f"{str(run_dir.path)!r} holds a checkpoint this version cannot read; use --force to start over"
        ) from None
    if saved != s.config or state.samples != len(s.y):
        raise AdvlabError(f"{str(run_dir.path)!r} was checkpointed with other settings; use --force to start over")
    return state


def _epoch_metrics(s: _Setup) -> Callable[[torch.nn.Module], dict[str, float]] | None:
    """With adversarial training: PGD-EPOCH_ROBUST_STEPS robust accuracy on the first EPOCH_ROBUST_IMAGES eval
    images."""
    if s.config.adversarial is None or s.eval_data is None:
        return None
    from advlab.attacks import PGD
    from advlab.evaluation import EvalConfig, evaluate

    config = EvalConfig(
        attacks=(PGD(eps=s.config.eps, steps=EPOCH_ROBUST_STEPS),), eps=s.config.eps, norm="linf", sanity=False
    )
    first = _first(s.eval_data[0], EPOCH_ROBUST_IMAGES, config.batch_size)
    return lambda m: {ROBUST_COLUMN: evaluate(m, first, config).robust_accuracy}


def _train(run_dir: runs.Run, s: _Setup, state: TrainState | None, args: argparse.Namespace) -> TrainHistory:
    """``fit`` with a progress bar over the steps, a checkpoint and the epoch log after every epoch; on Ctrl-C
    what is done stays viewable in the partial directory and the checkpoint stays for --resume."""
    steps_per_epoch = len(s.x)
    done = state.epochs_done if state is not None else 0
    bar = progress(
        range(done * steps_per_epoch, s.config.epochs * steps_per_epoch),
        args.quiet,
        desc=f"train {s.info.name}",
        unit="step",
    )
    it = iter(bar)
    history = state.history if state is not None else TrainHistory()

    def on_step(epoch: int, step: int, loss: float) -> None:
        next(it, None)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}")

    def on_epoch(epoch: int, st: TrainState) -> None:
        nonlocal history
        run_dir.save_state(f"{CHECKPOINT}{st.epochs_done:04d}", *st.to_saved())
        _clear_checkpoints(run_dir, keep=st.epochs_done)
        history = st.history
        _write_log(run_dir, history)

    try:
        return fit(
            s.model,
            s.x,
            s.y,
            s.config,
            eval_data=s.eval_data,
            on_step=on_step,
            on_epoch=on_epoch,
            resume=state,
            epoch_metrics=_epoch_metrics(s),
        )
    except TrainingDiverged as e:  # the weights mean nothing: no checkpoint is kept, no weights are written
        run_dir.checkpointed = False
        raise AdvlabError(f"{e}; nothing was saved") from None
    except KeyboardInterrupt:
        if history.loss:
            _plots(run_dir, history, s.info, args.data, s.eval_spec, s.config)
            _report(
                run_dir,
                s,
                args.data,
                f" (interrupted after {len(history.loss)} of {s.config.epochs} epochs; --resume continues)",
            )
        raise
    finally:
        if hasattr(bar, "close"):
            bar.close()


def _metrics(s: _Setup, history: TrainHistory, state: TrainState | None, args: argparse.Namespace) -> dict[str, Any]:
    """metrics.json: training loss and accuracy, the adversarial recipe, eval accuracy, the final robust evaluation."""
    config = s.config
    metrics: dict[str, Any] = {
        "model": s.info.name,
        "train_samples": len(s.y),
        "epochs": args.epochs,
        "seconds": round(sum(history.seconds), 2),
        "final_train_loss": history.loss[-1],
        "train_accuracy": accuracy(s.model, s.x, s.y),
    }
    if config.adversarial is not None:
        c, g, lam = config.loss_weights()
        metrics["adversarial"] = {
            "method": config.adversarial,
            "eps": config.eps,
            "norm": "linf",
            "steps": 1 if config.adversarial == "fgsm-rs" else config.adv_steps,
            "alpha": config.attack().step_size(config.eps),  # type: ignore[union-attr]
            "clean_weight": c,
            "gamma": g,
            "logit_pairing": lam,
            "attack_mode": config.attack_mode,
        }
    if s.eval_data is not None:
        metrics.update(
            {
                "eval_data": s.eval_spec,
                "eval_accuracy": history.eval_accuracy[-1],
                "clean_accuracy": history.eval_accuracy[-1],
            }
        )
    if ROBUST_COLUMN in history.metrics:
        metrics[f"epoch_{ROBUST_COLUMN}"] = history.metrics[ROBUST_COLUMN][-1]
    if s.preset != "none" and s.eval_data is not None:
        metrics.update(_robust_eval(s, args))
    if state is not None:
        metrics["resumed_after_epoch"] = state.epochs_done
    return metrics


def _robust_eval(s: _Setup, args: argparse.Namespace) -> dict[str, Any]:
    """The final robust accuracy: ``evaluate``'s preset at the training eps on the eval data (--robust-limit)."""
    from advlab.evaluation import EvalConfig, evaluate
    from advlab.work import Work

    assert s.eval_data is not None
    config = EvalConfig(preset=s.preset, eps=s.config.eps, norm="linf", limit=args.robust_limit)
    rep = evaluate(
        s.model,
        _first(s.eval_data[0], args.robust_limit, config.batch_size),
        config,
        work=Work(progress=lambda todo: progress(todo, args.quiet, desc="evaluate", unit="batch")),
    )
    return {
        "robust_accuracy": rep.robust_accuracy,
        "robust_eval": {
            "preset": s.preset,
            "eps": s.config.eps,
            "norm": "linf",
            "images": rep.n,
            "clean_accuracy": rep.clean_accuracy,
            "attacks": rep.attacks,
            "seconds": rep.seconds,
            "warnings": rep.warnings,
        },
    }
