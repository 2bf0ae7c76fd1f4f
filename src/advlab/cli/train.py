"""``advlab train``: train a zoo model from scratch on a data spec and save its weights in a run directory."""

from __future__ import annotations

import argparse
import time

import torch

from advlab import runs, zoo
from advlab.cli.common import (
    Formatter,
    add_model_args,
    add_run_args,
    build_model,
    command_line,
    default_out,
    load_data_for,
    number,
    positive_int,
    progress,
    say,
)
from advlab.errors import AdvlabError
from advlab.train import TrainConfig, accuracy, fit

_EVAL_FOR = {"digits:train": "digits:test", "cifar10:train": "cifar10:test", "mnist:train": "mnist:test", "svhn:train": "svhn:test"}


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p = sub.add_parser(
        "train", parents=[flags], formatter_class=Formatter, help="train a model from scratch (e.g. digits-cnn)",
        description="Train a zoo model from random init with Adam + one-cycle LR, deterministically.\n"
        "Writes weights.safetensors (load with --weights), metrics.json, loss.png and report.html.\n\n"
        "examples:\n"
        "  advlab train --model digits-cnn --data digits:train          # rebuilds the shipped digits-cnn weights\n"
        "  advlab train --model digits-cnn --data digits:train --seed 1 --out runs/digits-seed1\n"
        "  advlab classify digits:test --model digits-cnn --weights runs/digits-seed1/weights.safetensors --limit 5",
    )
    add_model_args(p, default="digits-cnn")
    p.add_argument("--data", "-d", default="digits:train", help="training data spec")
    p.add_argument("--eval-data", help="held-out data spec (default: the matching :test split)")
    p.add_argument("--epochs", type=positive_int, default=d.epochs)
    p.add_argument("--lr", type=number, default=d.lr, help="peak learning rate")
    p.add_argument("--batch-size", type=positive_int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--limit", type=positive_int, help="train on the first N samples only")
    add_run_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.lr <= 0:
        raise AdvlabError(f"--lr must be positive, got {args.lr}")
    config = TrainConfig(epochs=args.epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
    torch.manual_seed(args.seed)  # the initial weights come from this seed
    model = build_model(args, pretrained=False)
    info: zoo.ModelInfo = model.info  # type: ignore[assignment]
    x, y, desc = load_data_for(args.data, info, limit=args.limit)
    if (y < 0).any():
        raise AdvlabError(f"data {args.data!r} has unlabelled images; training needs labels")
    eval_spec = args.eval_data or _EVAL_FOR.get(args.data)
    eval_data = load_data_for(eval_spec, info)[:2] if eval_spec else None
    name = f"{info.name}_{desc.dataset}_seed{args.seed}"
    out = args.out or default_out(f"train_{name}")
    run_config = {"command": command_line(args.argv), "model": args.model, "data": args.data, "eval_data": eval_spec,
                  "train_config": vars(config), "limit": args.limit}  # fmt: skip
    with runs.start(out, run_config, force=args.force) as run_dir:
        steps = args.epochs * ((len(y) + args.batch_size - 1) // args.batch_size)
        bar = progress(range(steps), args.quiet, desc=f"train {info.name}", unit="step")
        it = iter(bar)

        def on_step(epoch: int, step: int, loss: float) -> None:
            next(it, None)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.3f}")

        t0 = time.perf_counter()
        history = fit(model, x, y, config, eval_data=eval_data, on_step=on_step)
        seconds = time.perf_counter() - t0
        if hasattr(bar, "close"):
            bar.close()
        metrics = {"model": info.name, "train_samples": len(y), "epochs": args.epochs, "seconds": round(seconds, 2),
                   "final_train_loss": history.loss[-1], "train_accuracy": accuracy(model, x, y)}  # fmt: skip
        if eval_data is not None:
            metrics["eval_data"] = eval_spec
            metrics["eval_accuracy"] = history.eval_accuracy[-1]
        run_dir.save_tensors("weights.safetensors", model.net.state_dict(),  # type: ignore[union-attr]
                             metadata={"model": args.model, "recipe": run_config["command"]})  # fmt: skip
        run_dir.save_json("metrics.json", metrics)
        run_dir.save_json("history.json", {"loss": history.loss, "eval_accuracy": history.eval_accuracy})
        from advlab.report import line_plot, write_report

        series = {"train loss": history.loss}
        run_dir.save_figure("loss.png", line_plot(series, "epoch", "cross-entropy", f"{info.name} on {args.data}"))
        if history.eval_accuracy:
            run_dir.save_figure("eval_accuracy.png", line_plot({eval_spec or "eval": history.eval_accuracy}, "epoch", "accuracy"))
        write_report(run_dir.path, f"advlab train: {info.name} on {args.data}")
    acc = f", {eval_spec} accuracy {metrics['eval_accuracy']:.2%}" if eval_data is not None else ""
    say(args, f"trained {info.name} in {seconds:.1f} s{acc}; weights in {out}/weights.safetensors")
    return 0
