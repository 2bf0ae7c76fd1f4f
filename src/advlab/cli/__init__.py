"""The ``advlab`` command. Each subcommand lives in its own module, imported only when that command runs:
``advlab --help``, ``advlab`` alone and a mistyped command are answered from :data:`COMMANDS` without loading torch."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence
from types import ModuleType

from advlab import __version__
from advlab.cli.parsing import Formatter, OneLineParser, bounded_int, one_line
from advlab.cli.threads import MAX_THREADS
from advlab.errors import AdvlabError

#: every command as (name, its module in advlab.cli, its one-line help), in the order --help lists them; the help
#: is the one the module registers (a test keeps them equal), so that --help needs no module
COMMANDS: tuple[tuple[str, str, str], ...] = (
    ("demo", "demo", "the embedded end-to-end job (offline, minutes on a CPU)"),
    ("models", "info", "list the model zoo"),
    ("data", "info", "list data specs or describe one"),
    ("classify", "classify", "top-k predictions for images or a data set"),
    ("attack", "attack", "attack a model on a data set; write adversarial examples"),
    ("eval", "evaluate", "robust accuracy under an attack ensemble (AutoAttack-style cascade)"),
    ("transfer", "transfer", "craft adversarial examples on surrogates, score them on victims: a transfer matrix"),
    (
        "prototypes",
        "prototypes",
        "evolve a blank image, noise or photos into every class; measure when the model recognizes it",
    ),
    ("study", "study", "studies: does pruning defend? (research note 003)"),
    ("analyze", "analyze", "analyses: where an attack acts, what units mean, linearity"),
    (
        "detect",
        "detect",
        "train a detector of adversarial inputs (SafetyNet) and attack classifier and detector at once",
    ),
    ("train", "train", "train a model from scratch (e.g. digits-cnn), optionally adversarially"),
    ("compare", "compare", "minimum-norm attacks side by side: AttackBench optimality"),
    ("selftest", "selftest", "known-answer tests of the minimum-norm attacks"),
)
#: parser(ALL): every command's real parser (the tests walk it)
ALL = "*"
#: the commands that ``torchrun -m advlab`` shards over its processes (see :mod:`advlab.distributed`)
SHARDED = frozenset({"eval", "attack", "prototypes", "study"})

DESCRIPTION = """advlab: adversarial examples on image classifiers.

Images are [0, 1] tensors; every model carries its own normalization. Results go to run directories
(runs/<name>/) holding config.json, metrics.json, tensors, pictures and report.html.

examples:
  advlab demo                                   # the embedded end-to-end job (offline, CPU, minutes)
  advlab models                                 # what models exist and which are installed
  advlab classify samples --model efficientnet-lite0 --top 3
  advlab attack --model digits-cnn --data digits:test --attack pgd --eps 0.1 --steps 10
  advlab eval --model digits-cnn --data digits:test --eps 0.1            # reliable preset
  advlab prototypes --model digits-cnn --start blank:gray                # a prototype of every class
  advlab study prune --model digits-cnn --data digits:test              # does pruning defend? (research note 003)
  advlab analyze layers --model digits-cnn --data digits:test           # where in the network the attack acts
  advlab analyze units --model digits-cnn --data digits:test            # Szegedy: units vs random directions
  advlab transfer --from efficientnet-lite0 --to efficientnet-lite1,efficientnet-lite2 --data samples --eps 8/255
  advlab detect --model digits-cnn --data-train digits:train --data digits:test --eps 0.1   # SafetyNet-style
  advlab train --model digits-cnn --data digits:train
"""


def _flags() -> argparse.ArgumentParser:
    """--debug, --quiet and --threads, accepted before or after the subcommand."""
    f = argparse.ArgumentParser(add_help=False)
    f.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks instead of one-line errors"
    )
    f.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="no progress bars or chatter")
    f.add_argument(
        "--threads",
        type=bounded_int(1, MAX_THREADS),
        metavar="N",
        default=argparse.SUPPRESS,
        help="CPU threads for torch (default: the cores the 1-minute load average leaves free, at least 1: on a busy "
        f"machine one thread finishes sooner than threads fighting over the cores; at most {MAX_THREADS}, 4 per core)",
    )
    return f


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"advlab.cli.{name}")


def parser(command: str | None = ALL) -> argparse.ArgumentParser:
    """The ``advlab`` parser with the real parser of ``command`` (every command's with :data:`ALL`); each other
    command is a stub with its name and help (enough for ``--help`` and the nearest name on a typo), so that its
    module, and torch, are not imported."""
    flags = _flags()
    p = OneLineParser(prog="advlab", description=DESCRIPTION, formatter_class=Formatter, parents=[flags])
    p.add_argument("--version", action="version", version=f"advlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    wanted = {module for name, module, _ in COMMANDS if command in (ALL, name)}
    for name, module, help_ in COMMANDS:
        if module not in wanted:
            sub.add_parser(name, help=help_, add_help=False)
        elif name == next(n for n, m, _ in COMMANDS if m == module):  # a module may register several (info)
            _module(module).register(sub, flags)
    return p


def parse(argv: Sequence[str] | None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    """(the parser, the parsed arguments): first with every command a stub (a typo, --help or --version ends
    there, without torch), then again with the real parser of the command named."""
    light = parser(None)
    command = light.parse_known_args(argv)[0].command
    p = light if command is None else parser(command)
    return p, p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    p, args = parse(argv)
    if args.command is None:
        p.print_help()
        return 0
    args.argv = argv
    args.debug = getattr(args, "debug", False)
    args.quiet = getattr(args, "quiet", False)
    threads = vars(args).pop("threads", None)  # how the machine is shared, not a setting of the run
    if args.command not in SHARDED and os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        print(
            f"advlab {args.command}: error: only {', '.join(sorted(SHARDED))} share their work over torchrun's "
            "processes; run this command without torchrun",
            file=sys.stderr,
        )
        return 2
    from advlab.cli.threads import torch_threads

    try:
        with torch_threads(threads):
            return int(args.func(args) or 0)
    except BrokenPipeError:  # `advlab ... | head`: the reader left; stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"advlab {args.command}: interrupted; a partial run (if any) is kept for --resume", file=sys.stderr)
        return 130
    except MemoryError:
        if args.debug:
            raise
        sys.stderr.write(f"advlab {args.command}: error: {OUT_OF_MEMORY}\n")
        return 2
    except Exception as e:
        message = user_error(e)
        if message is None or args.debug:
            raise
        # one write: ranks under torchrun share the stream
        sys.stderr.write(f"advlab {args.command}: error: {one_line(message)}\n")
        return 2
    finally:
        if "advlab.distributed" in sys.modules:  # only its setup joins a process group
            sys.modules["advlab.distributed"].teardown()  # under torchrun: leave the process group


#: the errno values of an OSError that is the user's input (a path too long, missing, forbidden, a full disk), not a bug
USER_ERRNOS = frozenset(
    {
        errno.ENAMETOOLONG,
        errno.ENOENT,
        errno.EACCES,
        errno.EPERM,
        errno.EISDIR,
        errno.ENOTDIR,
        errno.ELOOP,
        errno.EROFS,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EFBIG,
        errno.ENOTEMPTY,
        errno.EEXIST,
    }
)
OUT_OF_MEMORY = "out of memory; give a smaller --batch-size or --limit (or fewer steps, targets, starts)"


def user_error(e: Exception) -> str | None:
    """The one-line message of an exception that is the user's doing: an :class:`AdvlabError`, an OSError on a path
    they gave (:data:`USER_ERRNOS`: ``strerror: 'path'``), a failed allocation (torch's out-of-memory errors);
    None for anything else: a bug, which keeps its traceback."""
    if isinstance(e, AdvlabError):
        return str(e)
    if isinstance(e, OSError) and e.errno in USER_ERRNOS:
        names = [repr(os.fsdecode(f)) for f in (e.filename, e.filename2) if f is not None]
        return ": ".join([e.strerror or str(e), " -> ".join(names)] if names else [e.strerror or str(e)])
    torch = sys.modules.get("torch")  # an allocation torch refused (torch is loaded when a command raised it)
    if (torch is not None and isinstance(e, torch.OutOfMemoryError)) or (
        isinstance(e, RuntimeError) and "can't allocate memory" in str(e)
    ):
        return OUT_OF_MEMORY
    return None
