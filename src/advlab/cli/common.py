"""What several subcommands share: one-line argument errors, model/data/attack arguments, progress bars, run
directories, and the small renderers of their outputs (CSV text, file-name parts)."""

from __future__ import annotations

import argparse
import csv
import io
import math
import re
import shlex
import sys
from collections.abc import Iterable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import torch

from advlab import data, zoo
from advlab.attacks.base import Target
from advlab.cli.parsing import (  # noqa: F401 (the parsing pieces, importable from here as before)
    Formatter,
    OneLineParser,
    _shown,
    bounded_int,
    did_you_mean,
    one_line,
)
from advlab.errors import AdvlabError
from advlab.zoo.layout import MEMORY_FORMATS, set_memory_format

T = TypeVar("T")


#: Upper bounds of the options that size the work: far above any run that makes sense, low enough that a typo
#: (a few extra zeros) is refused at once instead of running for days or filling the memory.
MAX_STEPS = 100_000
MAX_RESTARTS = 1_000
MAX_QUERIES = 1_000_000
MAX_IMAGES = 100_000_000
MAX_BATCH = 100_000
MAX_EPOCHS = 10_000
MAX_EPS_VALUES = 64
MAX_PIXELS = 4096
MAX_CHANNELS = 1024
#: seeds: 0 <= seed < 2**32 (numpy's range; well inside what torch.manual_seed takes, also after the arithmetic
#: that derives other seeds from it, e.g. seed * 1_000_003 + batch in prototypes)
MAX_SEED = 2**32 - 1
#: the largest magnitude a number option may have: the arithmetic is float32 (about 3.4e38 at most)
MAX_MAGNITUDE = 1e30


def number(text: str) -> float:
    """A finite float that may be written as a fraction: "8/255", "0.5/255", "0.03", "1e-3" (at most
    :data:`MAX_MAGNITUDE` in magnitude: the arithmetic is float32)."""
    try:
        if "/" in text:
            num, den = text.split("/")
            v = float(Fraction(num.strip())) / float(Fraction(den.strip()))
        else:
            v = float(text)
    except (ValueError, ZeroDivisionError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a number: {_shown(text)} (use e.g. 0.03 or 8/255)") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"not a finite number: {_shown(text)}")
    if abs(v) > MAX_MAGNITUDE:
        raise argparse.ArgumentTypeError(f"out of range: {_shown(text)} (at most {MAX_MAGNITUDE:g} in magnitude)")
    return v


def nonnegative(text: str) -> float:
    """A :func:`number` >= 0 (a weight, a tolerance, a size in pixels)."""
    v = number(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {_shown(text)}")
    return v


def floats(text: str) -> list[float]:
    """Comma-separated numbers ("0.485,0.456,0.406"), at most :data:`MAX_CHANNELS` of them."""
    values = [number(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError(f"no number in {_shown(text)}")
    if len(values) > MAX_CHANNELS:
        raise argparse.ArgumentTypeError(f"{len(values)} numbers; at most {MAX_CHANNELS} (one per channel)")
    return values


def positive_floats(text: str) -> list[float]:
    """:func:`floats`, each > 0 (a per-channel std: the inputs are divided by it)."""
    values = floats(text)
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"every value must be positive, got {_shown(text)}")
    return values


def positive_int(text: str) -> int:
    """An integer in 1..:data:`MAX_IMAGES` (a count: images, items, units)."""
    return bounded_int(1, MAX_IMAGES)(text)


#: argparse types of the options several commands share
steps_int = bounded_int(1, MAX_STEPS)
batch_int = bounded_int(1, MAX_BATCH)
epochs_int = bounded_int(1, MAX_EPOCHS)
seed_int = bounded_int(0, MAX_SEED)
#: help text of a --seed option's range
SEED_RANGE = "0 <= seed < 2**32"


def add_command(
    sub: argparse._SubParsersAction, flags: argparse.ArgumentParser, name: str, **kw: Any
) -> argparse.ArgumentParser:
    """A (sub)command's parser: the flags every command shares (``flags``: ``--quiet``, ...) and the help
    formatter of the CLI; ``kw`` are ``add_parser``'s (``help``, ``description``, ...)."""
    return sub.add_parser(name, parents=[flags], formatter_class=Formatter, **kw)


def add_model_args(p: argparse.ArgumentParser, default: str | None = None, *, required: bool | None = None) -> None:
    p.add_argument(
        "--model",
        "-m",
        default=default,
        required=default is None if required is None else required,
        help="model spec: efficientnet-lite0, digits-cnn, resnet18, cifar-resnet18, torchvision:NAME, timm:NAME, "
        "file.py:factory",
    )
    p.add_argument("--weights", help="checkpoint for the model (.safetensors, or .pt/.pth read with weights_only=True)")
    p.add_argument("--mean", type=floats, help="per-channel mean the network expects, e.g. 0.485,0.456,0.406")
    p.add_argument(
        "--std", type=positive_floats, help="per-channel std the network expects, e.g. 0.229,0.224,0.225 (each > 0)"
    )
    p.add_argument(
        "--input-size",
        type=bounded_int(1, MAX_PIXELS),
        metavar="PIXELS",
        help="your own model file (file.py:factory): the side of its square input (default: its input_size attribute, "
        "else the data's size, else 224; at most 4096)",
    )
    p.add_argument(
        "--channels",
        type=bounded_int(1, MAX_CHANNELS),
        help="your own model file: its input channels (default: its in_channels attribute, else its first "
        "layer's, else the data's, else 3)",
    )
    p.add_argument(
        "--class-names",
        metavar="FILE",
        help="the model's class names, one per line (line k names output k); a model file may also set class_names",
    )


def add_run_args(p: argparse.ArgumentParser, resume: bool = False) -> None:
    p.add_argument("--out", "-o", help="run directory (default: runs/<name>)")
    p.add_argument("--force", action="store_true", help="replace an existing run directory")
    if resume:
        p.add_argument("--resume", action="store_true", help="continue an interrupted run in the same directory")


def add_device_args(p: argparse.ArgumentParser) -> None:
    """--device and --memory-format (commands that torchrun can shard: eval, attack, prototypes, study prune).
    The layout goes to ``args.channels_last`` (auto, channels_last or contiguous), the name the old flag had."""
    g = p.add_argument_group(
        "device (under torchrun -m advlab, every process takes the same arguments; see advlab.distributed)"
    )
    g.add_argument(
        "--device",
        default="cpu",
        type=device_name,
        help="cpu, cuda or cuda:N; under torchrun, cuda is each process's own GPU (cuda:LOCAL_RANK)",
    )
    g.add_argument(
        "--memory-format",
        dest="channels_last",
        choices=MEMORY_FORMATS,
        default="auto",
        help="layout of the convolution weights: auto (default: channels_last for the built-in models, measured "
        "faster; your own model as built), channels_last, or contiguous (NCHW); logits agree to float rounding",
    )
    g.add_argument(
        "--channels-last",
        dest="channels_last",
        action="store_const",
        const="channels_last",
        help="the same as --memory-format channels_last",
    )


def device_name(text: str) -> str:
    """A device torch knows ("cpu", "cuda", "cuda:1", "mps"); a CUDA index this machine lacks is an error too."""
    try:
        dev = torch.device(text.strip())
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"not a device: {text!r} (use cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda", "mps"):
        raise argparse.ArgumentTypeError(f"advlab runs on cpu, cuda or mps, not {text!r}")
    if (
        dev.type == "cuda"
        and dev.index is not None
        and torch.cuda.is_available()
        and dev.index >= torch.cuda.device_count()
    ):
        raise argparse.ArgumentTypeError(
            f"no such GPU: {text!r} (this machine has {torch.cuda.device_count()}: cuda:0..)"
        )
    return text.strip()


def place_model(model: torch.nn.Module, device: torch.device, memory_format: str | bool = "auto") -> torch.nn.Module:
    """``model`` on ``device`` in ``memory_format`` (auto: as loaded; channels_last or contiguous: see
    :func:`advlab.zoo.layout.set_memory_format`; True means channels_last). ``.info`` is kept: the module is
    moved in place."""
    if isinstance(memory_format, bool):
        memory_format = "channels_last" if memory_format else "auto"
    return set_memory_format(model.to(device), memory_format)


def build_model(args: argparse.Namespace, pretrained: bool = True) -> torch.nn.Module:
    """The --model with its --weights, normalization and (for a model file) input shape; a model file that
    declares no shape is probed with the shape of the command's data (--data, or classify's first input)."""
    return zoo.load(
        args.model,
        weights=args.weights,
        mean=args.mean,
        std=args.std,
        pretrained=pretrained,
        input_size=getattr(args, "input_size", None),
        channels=getattr(args, "channels", None),
        data_shape=_data_shape(args),
        class_names=data.read_class_names(args.class_names) if getattr(args, "class_names", None) else None,
    )


def _data_shape(args: argparse.Namespace) -> tuple[int, int] | None:
    """(channels, size) of the command's data (--data, or classify's first input) for a model file, when all its
    images share one square size (:func:`advlab.data.native_shape`: image files from their headers); None for
    built-in models, which know their shape."""
    spec = getattr(args, "data", None) or (getattr(args, "inputs", None) or [None])[0]
    if ".py:" not in str(args.model) or not isinstance(spec, str) or getattr(args, "input_size", None):
        return None
    return data.native_shape(spec)


def say_notes(notes: list[str], y: torch.Tensor) -> None:
    """The data layer's notes on stderr, one line each; not when no image has a label: then the command's own
    one-line error (or --labels predicted) says what to do, and the note would make it two lines."""
    if bool((y >= 0).any()):
        for note in notes:
            print(f"advlab: {note}", file=sys.stderr)


def add_selection_args(p: argparse.ArgumentParser) -> None:
    """--subset and --sample: which images of --data a command reads (with --limit: the first N of those)."""
    p.add_argument(
        "--subset",
        metavar="FILE",
        help="only the images named in FILE, one file name (or path relative to the data folder) per line: e.g. "
        "the 5,000-image ImageNet list RobustBench evaluates on",
    )
    p.add_argument(
        "--sample",
        type=positive_int,
        metavar="N",
        help="a random N of the images, drawn with --seed (same seed, same images)",
    )


def open_data_for(
    args: argparse.Namespace,
    info: zoo.ModelInfo,
    batch_size: int,
    spec: str | None = None,
    notes: bool = True,
) -> data.Batches:
    """--data streamed in batches of ``batch_size`` the way ``info``'s model needs it
    (:func:`advlab.data.open_for_model`: size, channels, labels mapped onto its classes; --subset, --sample,
    --limit); what the data layer notes (names that did not match the model's classes, an upscale) goes to stderr
    (``notes``: not for a first look whose notes a second open repeats). ``spec``: another data spec than --data
    (classify's inputs). A label the model has no class for is an error."""
    spec = args.data if spec is None else spec
    opened = zoo.open_data(
        spec,
        info,
        batch_size,
        limit=args.limit,
        subset=getattr(args, "subset", None),
        sample=getattr(args, "sample", None),
        seed=getattr(args, "seed", 0) or 0,
    )
    if notes:
        say_notes(opened.info.notes, opened.labels())
    return opened


def require_labels(args: argparse.Namespace, y: torch.Tensor) -> None:
    """Refuse data without a single label unless --labels predicted (every accuracy would be a meaningless 0%)."""
    if args.labels == "given" and len(y) and not bool((y >= 0).any()):
        raise AdvlabError(
            f"data {args.data!r} has no labels (no class folders, or folder names that match none of the model's "
            "class names: give --class-names FILE); give --labels predicted to use the model's own predictions"
        )


LABEL_SOURCES = ("given", "predicted")


def add_label_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--labels",
        choices=LABEL_SOURCES,
        default="given",
        help="given: the data's labels; predicted: the model's clean predictions (for unlabelled images; clean "
        "accuracy is then 100%% by definition and robust accuracy is the share of predictions an attack cannot change)",
    )


def labels_to_use(args: argparse.Namespace, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The labels a command attacks: the data's (refused when there are none at all: every accuracy would be a
    meaningless 0%), or with ``--labels predicted`` the model's clean argmax on ``x`` (N,) on the CPU."""
    if args.labels == "given":
        if len(y) and not bool((y >= 0).any()):
            raise AdvlabError(
                f"data {args.data!r} has no labels (no class folders, or folder names that match none of the "
                "model's class names: give --class-names FILE); give --labels predicted to use the model's own "
                "predictions as labels"
            )
        return y
    from advlab.evaluation.inputs import predicted_labels

    return predicted_labels(model, x, args.batch_size if isinstance(args.batch_size, int) else 256) if len(x) else y


def progress(items: Iterable[T], quiet: bool, **kw: Any) -> Iterable[T]:
    """A tqdm bar on stderr when it is a terminal, else a progress line every few seconds
    (:mod:`advlab.cli.ticker`); nothing with --quiet."""
    from tqdm import tqdm

    if not quiet and not sys.stderr.isatty():
        from advlab.cli.ticker import lines

        return lines(items, desc=str(kw.get("desc", "work")), unit=str(kw.get("unit", "item")), total=kw.get("total"))
    return tqdm(items, disable=quiet or not sys.stderr.isatty(), leave=False, dynamic_ncols=True, **kw)


def command_line(argv: Sequence[str] | None) -> str:
    return "advlab " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))


def run_config(args: argparse.Namespace, **settings: Any) -> dict[str, Any]:
    """A run's config.json: the command line, the model and its weights, the data and its limit, then ``settings``
    (what else the command ran with)."""
    base = {"command": command_line(args.argv), "model": args.model, "weights": args.weights}
    return {**base, "data": args.data, "limit": args.limit, **settings}


def default_out(name: str) -> Path:
    return Path("runs") / name


def say(args: argparse.Namespace, text: str) -> None:
    """Human output on stdout, unless --json (machine output) asked for silence."""
    if not getattr(args, "json", False):
        print(text)


def require(cond: bool, message: str) -> None:
    if not cond:
        raise AdvlabError(message)


# ------------------------------------------------------------------------------------------------ attacks
#: (flag, attack field, type, help) for every attack option the CLI passes through
ATTACK_OPTIONS: list[tuple[str, str, Any, str]] = [
    (
        "--eps",
        "eps",
        None,
        "perturbation budget in [0, 1] pixel units, e.g. 8/255; a comma list (at most 64) gives a robustness curve",
    ),
    ("--norm", "norm", str, "threat model: linf, l2 or l1"),
    ("--alpha", "alpha", number, "step size in pixel units (PGD family; default 2.5 eps / steps; NES: eps / 4)"),
    ("--steps", "steps", steps_int, f"iterations (1..{MAX_STEPS})"),
    ("--restarts", "restarts", bounded_int(1, MAX_RESTARTS), f"random restarts (PGD family; 1..{MAX_RESTARTS})"),
    ("--loss", "loss", str, "objective: ce, margin, dlr, onehot"),
    ("--momentum", "momentum", number, "momentum (MI-FGSM's mu; NES: weight of past gradient estimates)"),
    (
        "--n-targets",
        "n_targets",
        bounded_int(1, MAX_RESTARTS),
        "APGD-T: how many most-likely wrong classes to target (at most the model's classes - 1)",
    ),
    ("--tries", "tries", steps_int, f"noise: random draws per image (1..{MAX_STEPS})"),
    ("--c", "c", number, "C&W: initial weight of the loss against the perturbation size"),
    ("--kappa", "kappa", number, "C&W: confidence margin"),
    ("--lr", "lr", number, "C&W / SPSA: Adam learning rate"),
    ("--binary-search-steps", "binary_search_steps", bounded_int(1, 100), "C&W: rounds of the search over c (1..100)"),
    ("--overshoot", "overshoot", number, "DeepFool: overshoot"),
    ("--lam", "lam", number, "one-hot attack: weight lambda of ||x - x0||^2"),
    (
        "--max-queries",
        "max_queries",
        bounded_int(1, MAX_QUERIES),
        f"black-box attacks (nes, spsa, square): model queries per image (1..{MAX_QUERIES})",
    ),
    (
        "--samples",
        "samples",
        bounded_int(1, 10_000),
        "NES / SPSA: antithetic pairs per gradient estimate (2 queries each; 1..10000)",
    ),
    ("--sigma", "sigma", number, "NES: std of the Gaussian probes, in pixel units"),
    ("--delta", "delta", number, "SPSA: size of the Rademacher probes, in pixel units"),
    ("--p-init", "p_init", number, "Square: fraction of the image the first squares cover"),
]


#: every attack's line in --help: (what it is, the options of :data:`ATTACK_OPTIONS` and --random-start it takes
#: besides --seed and --quantize). Written out so that --help imports no attack (and no torch); a test checks it
#: against the attacks' own fields.
ATTACK_HELP: dict[str, tuple[str, tuple[str, ...]]] = {
    "fgsm": ("fast gradient sign method, one step", ("eps", "norm", "loss")),
    "pgd": (
        "projected gradient descent, random start",
        ("eps", "norm", "alpha", "steps", "restarts", "loss", "random_start"),
    ),
    "mifgsm": (
        "momentum iterative FGSM",
        ("eps", "norm", "alpha", "steps", "restarts", "loss", "random_start", "momentum"),
    ),
    "apgd": ("Auto-PGD, step size adapted per sample", ("eps", "norm", "steps", "restarts", "loss", "random_start")),
    "apgd-t": (
        "targeted Auto-PGD on the DLR loss, against the most likely wrong classes in turn",
        ("eps", "norm", "steps", "restarts", "loss", "random_start", "n_targets"),
    ),
    "nes": (
        "black-box: PGD on gradients estimated by NES from queries",
        ("eps", "norm", "alpha", "loss", "momentum", "max_queries", "samples", "sigma"),
    ),
    "spsa": (
        "black-box: SPSA gradient estimates, Adam steps",
        ("eps", "norm", "lr", "loss", "max_queries", "samples", "delta"),
    ),
    "square": ("black-box: Square Attack, random square updates", ("eps", "norm", "max_queries", "p_init")),
    "cw": ("Carlini-Wagner L2, minimum norm", ("c", "kappa", "steps", "binary_search_steps", "lr")),
    "ddn": ("decoupled direction and norm, minimum norm", ("alpha", "norm", "steps")),
    "deepfool": ("DeepFool, minimum norm by linearization", ("norm", "steps", "overshoot")),
    "fab": (
        "fast adaptive boundary, minimum norm (with --eps: only successes within eps)",
        ("eps", "norm", "steps", "restarts"),
    ),
    "fab-t": (
        "FAB towards the most likely wrong classes in turn (AutoAttack's FAB-T)",
        ("eps", "norm", "steps", "restarts", "n_targets"),
    ),
    "fmn": ("fast minimum-norm", ("alpha", "norm", "steps")),
    "lbfgs": ("Szegedy et al.'s box-constrained L-BFGS, minimum L2 norm", ("steps",)),
    "noise": ("random points on the eps-sphere, a baseline", ("eps", "norm", "tries")),
    "onehot": ("the lecture's targeted one-hot L2 + proximity attack", ("lam", "alpha", "steps")),
}


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def add_attack_args(p: argparse.ArgumentParser) -> None:
    """The options of :data:`ATTACK_OPTIONS`, --random-start, --seed and --quantize, grouped for --help: one group
    of the options several attacks share, then one group per attack (:data:`ATTACK_HELP`) that says what it is,
    lists the options it takes and holds those only it takes. Call it after the command's own options, so that
    they come first in --help."""
    owners: dict[str, list[str]] = {}
    for name, (_, takes) in ATTACK_HELP.items():
        for dest in takes:
            owners.setdefault(dest, []).append(name)
    shared = p.add_argument_group(
        "attack options shared by several attacks (each attack's group below lists those it takes, --seed and "
        "--quantize: all; a given option the attack lacks is an error)"
    )
    groups = {
        name: p.add_argument_group(f"{name}: {what}", f"takes {' '.join(_flag(d) for d in takes)}")
        for name, (what, takes) in ATTACK_HELP.items()
    }
    for flag, dest, typ, help_ in ATTACK_OPTIONS:
        g = groups[owners[dest][0]] if len(owners.get(dest, ())) == 1 else shared
        g.add_argument(flag, dest=dest, type=eps_option if flag == "--eps" else typ, help=help_)
    g = shared
    g.add_argument(
        "--random-start",
        dest="random_start",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="start from a random point in the ball (PGD family)",
    )
    g.add_argument("--seed", type=seed_int, default=0, help=f"seed for random starts and random targets ({SEED_RANGE})")
    g.add_argument(
        "--quantize", action="store_true", help="round adversarial images to 8 bits (saved PNGs stay adversarial)"
    )


def eps_option(text: str) -> float | list[float]:
    """The argparse ``type`` of --eps: one positive eps ("8/255") or a comma list of distinct ones ("0.05,0.1,0.2":
    a robustness curve), at most :data:`MAX_EPS_VALUES` of them (the list in the given order)."""
    values = [number(t) for t in text.split(",") if t.strip()]
    if not values:
        raise argparse.ArgumentTypeError("empty eps")
    if any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"eps must be positive, got {_shown(text, 60)}")
    if len(values) > MAX_EPS_VALUES:
        raise argparse.ArgumentTypeError(f"{len(values)} eps values; a curve takes at most {MAX_EPS_VALUES}")
    if len(set(values)) < len(values):
        raise argparse.ArgumentTypeError(f"an eps is listed twice in {_shown(text, 60)}")
    return values[0] if len(values) == 1 else values


def attack_options(args: argparse.Namespace) -> dict[str, Any]:
    """The attack options the user gave (None = not given, left at the attack's default)."""
    opts = {dest: getattr(args, dest) for _, dest, _, _ in ATTACK_OPTIONS}
    opts["random_start"] = args.random_start
    opts["seed"] = args.seed
    opts["quantize"] = args.quantize or None
    return {k: v for k, v in opts.items() if v is not None}


def make_attack(args: argparse.Namespace, info: zoo.ModelInfo, name: str | None = None) -> Any:
    """The attack ``name`` (default ``args.attack``) with the options the user gave; an eps-bounded attack
    without --eps gets :func:`advlab.evaluation.presets.default_eps` of the model (0.1 on the 8x8 digits, 8/255 on
    photos: the same ball in every command, and the one a preset name alone runs at in the library)."""
    from advlab.attacks.catalog import attack_classes, make, options
    from advlab.evaluation.presets import default_eps

    name = (name or args.attack).strip()
    opts = attack_options(args)
    classes = attack_classes()
    if "eps" not in opts and name in classes and "eps" in options(classes[name]):
        opts["eps"] = default_eps(info)
    atk = make(name, **opts)
    if opts.get("n_targets", 0) > info.num_classes - 1:  # the attack takes the option (make refused it otherwise)
        raise AdvlabError(
            f"--n-targets {opts['n_targets']}: {info.name} has {info.num_classes} classes, so at most "
            f"{info.num_classes - 1} wrong ones to target"
        )
    check_eps_fits(opts.get("eps"), atk.threat_norm, info)
    return atk


def check_eps_fits(eps: float | list[float] | None, norm: str, info: zoo.ModelInfo) -> None:
    """Refuse an eps no two images of the model's input box are apart: above the box's diameter in ``norm``
    (1 in L-inf, sqrt(d) in L2, d in L1 for d = channels x size x size): such a ball is the whole box."""
    d = info.channels * info.input_size**2
    diameter = {"linf": 1.0, "l2": math.sqrt(d), "l1": float(d)}.get(norm)
    largest = max(eps) if isinstance(eps, list) else eps
    if diameter is not None and largest is not None and largest > diameter:
        shape = f"{info.channels}x{info.input_size}x{info.input_size}"
        raise AdvlabError(
            f"--eps {largest:g} is larger than any {norm} distance between two {shape} images in [0, 1] "
            f"(at most {diameter:.4g}): the ball would be the whole box"
        )


def parse_target(text: str | None, info: zoo.ModelInfo) -> Target:
    """A class index, a class name (case-insensitive, as listed by the model), 'random' or 'least-likely'."""
    if text is None or text in ("random", "least-likely"):
        return text
    if text.lstrip("-").isdigit():
        if not text.isascii() or len(text) > 12:
            raise AdvlabError(
                f"target {_shown(text)} is out of range: {info.name} has classes 0..{info.num_classes - 1}"
            )
        t = int(text)
        if not 0 <= t < info.num_classes:
            raise AdvlabError(f"target {t} is out of range: {info.name} has classes 0..{info.num_classes - 1}")
        return t
    lookup = {name.lower(): i for i, name in enumerate(info.class_names)}
    if text.lower() in lookup:
        return lookup[text.lower()]
    raise AdvlabError(
        f"unknown target {text!r}: give a class index 0..{info.num_classes - 1}, a class name of {info.name}, "
        "'random' or 'least-likely'"
    )


# ------------------------------------------------------------------------------------------------ rendering
#: a cell that starts with one of these is a formula to a spreadsheet (OWASP "CSV injection")
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> Any:
    """``value`` safe in a spreadsheet: text that starts like a formula (=, +, -, @, tab, carriage return) gets a
    leading single quote, as OWASP advises ("=HYPERLINK(...)" -> "'=HYPERLINK(...)"); numbers are kept."""
    return "'" + value if isinstance(value, str) and value.startswith(FORMULA_START) else value


def csv_text(rows: list[dict[str, Any]]) -> str:
    """``rows`` as CSV text, the first row's keys as the header (empty text for no rows; a key a row lacks is an
    empty cell); every cell through :func:`csv_cell` (class and file names may be anything)."""
    buf = io.StringIO()
    if rows:
        fields = list(rows[0])
        csv.writer(buf).writerow([csv_cell(k) for k in fields])
        w = csv.DictWriter(buf, fieldnames=fields)
        w.writerows({k: csv_cell(v) for k, v in r.items()} for r in rows)
    return buf.getvalue()


def file_part(name: str, n: int = 24) -> str:
    """``name`` (a class name) as part of a file name: its first ``n`` characters, every one but a letter, digit,
    dot, underscore or hyphen as "-" (no path separators, control characters or shell specials in a file name)."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", name[:n]).lstrip(".") or "-"
