"""What every subcommand shares: one-line argument errors, model/data arguments, progress bars, run dirs."""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import torch

from advlab import data, runs, zoo
from advlab.errors import AdvlabError

T = TypeVar("T")


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line on stderr and exit code 2 (no usage dump)."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keep the examples' line breaks and show defaults."""


def number(text: str) -> float:
    """A finite float that may be written as a fraction: "8/255", "0.5/255", "0.03", "1e-3"."""
    try:
        if "/" in text:
            num, den = text.split("/")
            v = float(Fraction(num.strip())) / float(Fraction(den.strip()))
        else:
            v = float(text)
    except (ValueError, ZeroDivisionError):
        raise argparse.ArgumentTypeError(f"not a number: {text!r} (use e.g. 0.03 or 8/255)") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return v


def floats(text: str) -> list[float]:
    """Comma-separated numbers ("0.485,0.456,0.406")."""
    return [number(t) for t in text.split(",") if t.strip()]


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def add_model_args(p: argparse.ArgumentParser, default: str | None = None) -> None:
    p.add_argument("--model", "-m", default=default, required=default is None,
                   help="model spec: efficientnet-lite0, digits-cnn, resnet18, cifar-resnet18, torchvision:NAME, timm:NAME, file.py:factory")  # fmt: skip
    p.add_argument("--weights", help="checkpoint for the model (.safetensors, or .pt/.pth read with weights_only=True)")
    p.add_argument("--mean", type=floats, help="per-channel mean the network expects, e.g. 0.485,0.456,0.406")
    p.add_argument("--std", type=floats, help="per-channel std the network expects, e.g. 0.229,0.224,0.225")


def add_run_args(p: argparse.ArgumentParser, resume: bool = False) -> None:
    p.add_argument("--out", "-o", help="run directory (default: runs/<name>)")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    if resume:
        p.add_argument("--resume", action="store_true", help="continue an interrupted run in the same directory")


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--device and --channels-last (commands that torchrun can shard: eval, attack, prototypes, study prune)."""
    g = p.add_argument_group("device (under torchrun -m advlab, every process takes the same arguments; see advlab.distributed)")
    g.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N; under torchrun, cuda is each process's own GPU (cuda:LOCAL_RANK)")
    g.add_argument("--channels-last", action="store_true",
                   help="convolution weights in channels_last memory format (faster on GPUs with tensor cores; results may differ in the last bits)")  # fmt: skip


def place_model(model: torch.nn.Module, device: torch.device, channels_last: bool = False) -> torch.nn.Module:
    """``model`` on ``device``, in channels_last memory format if asked (``.info`` is kept: the module is moved in place)."""
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def build_model(args: argparse.Namespace, pretrained: bool = True) -> torch.nn.Module:
    return zoo.load(args.model, weights=args.weights, mean=args.mean, std=args.std, pretrained=pretrained)


def load_data_for(spec: str, info: zoo.ModelInfo, limit: int | None = None, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, data.DatasetInfo]:
    """Load a data spec the way ``info``'s model needs it.

    Photos are resized/cropped to the model's input size and converted to its channel count; tensor data
    sets are used as they are (resized only when ``size`` is asked) and checked: a wrong channel count or
    size, or a label the model has no class for, is an :class:`AdvlabError`, not a silent conversion.
    """
    x, y, desc = data.load_for_model(spec, info.input_size, info.channels, size=size, limit=limit)
    zoo.check_input(info, x, what=f"data {spec!r}")
    y = labels_for_model(y, desc.class_names, info.class_names)
    zoo.check_labels(info, y, what=f"data {spec!r}")
    return x, y, desc


def labels_for_model(y: torch.Tensor, data_classes: Sequence[str] | None, model_classes: Sequence[str]) -> torch.Tensor:
    """Labels in the model's class indices: a data set with its own class names (a folder of cats/ and dogs/)
    is mapped by name, and classes the model does not have become -1 (unlabelled), never another class."""
    if data_classes is None or list(data_classes) == list(model_classes[: len(data_classes)]):
        return y
    lookup = {name: i for i, name in enumerate(model_classes)}
    remap = torch.tensor([lookup.get(name, -1) for name in data_classes], dtype=torch.long)
    return torch.where(y >= 0, remap[y.clamp(min=0)], y)


def progress(items: Iterable[T], quiet: bool, **kw: Any) -> Iterable[T]:
    """A tqdm bar on stderr, only when it is a terminal and --quiet was not given."""
    from tqdm import tqdm

    return tqdm(items, disable=quiet or not sys.stderr.isatty(), leave=False, dynamic_ncols=True, **kw)


def command_line(argv: Sequence[str] | None) -> str:
    return "advlab " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def check_resumable(run: runs.Run, config: dict[str, Any]) -> None:
    """A resumed run must have been started with the same settings (the command line may differ in --resume)."""
    saved_path = run.path / "config.json"
    if not run.resumed or not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text())
    diff = [k for k, v in config.items() if k != "command" and json.loads(json.dumps(v)) != saved.get(k)]
    if diff:
        raise AdvlabError(f"{run.final} was started with other settings ({', '.join(diff)}); use --force to start over")


def default_out(name: str) -> Path:
    return Path("runs") / name


def say(args: argparse.Namespace, text: str) -> None:
    """Human output on stdout, unless --json (machine output) asked for silence."""
    if not getattr(args, "json", False):
        print(text)


def require(cond: bool, message: str) -> None:
    if not cond:
        raise AdvlabError(message)
