"""The ``advlab`` command. Each subcommand lives in its own module and registers itself here."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

import torch

from advlab import __version__
from advlab.cli import (
    analyze,
    attack,
    classify,
    compare,
    demo,
    detect,
    evaluate,
    info,
    prototypes,
    selftest,
    study,
    train,
    transfer,
)
from advlab.cli.common import Formatter, OneLineParser, one_line
from advlab.errors import AdvlabError

COMMANDS = (
    demo,
    info,
    classify,
    attack,
    evaluate,
    transfer,
    prototypes,
    study,
    analyze,
    detect,
    train,
    compare,
    selftest,
)
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
    """--debug and --quiet, accepted before or after the subcommand."""
    f = argparse.ArgumentParser(add_help=False)
    f.add_argument(
        "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks instead of one-line errors"
    )
    f.add_argument("--quiet", "-q", action="store_true", default=argparse.SUPPRESS, help="no progress bars or chatter")
    return f


def parser() -> argparse.ArgumentParser:
    flags = _flags()
    p = OneLineParser(prog="advlab", description=DESCRIPTION, formatter_class=Formatter, parents=[flags])
    p.add_argument("--version", action="version", version=f"advlab {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=OneLineParser)
    for module in COMMANDS:
        module.register(sub, flags)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 2 bad input, 130 interrupted)."""
    p = parser()
    args = p.parse_args(argv)
    if args.command is None:
        p.print_help()
        return 0
    args.argv = argv
    args.debug = getattr(args, "debug", False)
    args.quiet = getattr(args, "quiet", False)
    if args.command not in SHARDED and os.environ.get("WORLD_SIZE", "1").strip() not in ("", "1"):
        print(
            f"advlab {args.command}: error: only {', '.join(sorted(SHARDED))} share their work over torchrun's "
            "processes; run this command without torchrun",
            file=sys.stderr,
        )
        return 2
    try:
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
        from advlab import distributed

        distributed.teardown()  # under torchrun: leave the process group (nothing otherwise)


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
    if isinstance(e, torch.OutOfMemoryError) or (isinstance(e, RuntimeError) and "can't allocate memory" in str(e)):
        return OUT_OF_MEMORY
    return None
