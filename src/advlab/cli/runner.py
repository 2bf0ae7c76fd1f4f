"""The commands' side of the run runner (:mod:`advlab.runs.job`): ``--force``, ``--resume`` and ``--quiet`` read
from the parsed arguments, the progress bar, and the options that name a run. The skeleton itself (open, shard,
save, resume, merge, write) is :func:`advlab.runs.run_job`, which library users call too.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from advlab import runs
from advlab.cli.common import progress, say
from advlab.distributed import Dist
from advlab.runs.job import Job, Progress, Units

R = TypeVar("R")
S = TypeVar("S")
T = TypeVar("T")

#: the name the commands knew the units by (:class:`advlab.runs.Units`)
UnitSpec = Units

__all__ = ["NOT_SETTINGS", "Job", "UnitSpec", "batch_size", "run_job", "run_settings", "saved_batch_size"]


def bar(units: Units[Any], quiet: bool) -> Progress | None:
    """A progress bar (or progress lines, off a terminal) over the units to compute, unless ``quiet``."""
    if quiet:
        return None
    words = units.name.split()  # "a batch of 16 samples" -> batch
    noun = words[1] if len(words) > 1 and words[0] in ("a", "an", "one") else "unit"

    def show(todo: Iterable[int], total: int | None) -> Iterable[int]:
        return progress(todo, False, desc=units.bar, unit=noun, total=total)

    return show


def run_job(job: Job[T, R, S], args: argparse.Namespace, dist: Dist) -> S | None:
    """:func:`advlab.runs.run_job` with ``args.force``, ``args.resume`` and ``args.quiet``; what ``job.write``
    returned on rank 0, else None (other ranks, and a run complete already, which is said on stdout)."""
    return runs.run_job(
        job,
        force=args.force,
        resume=args.resume,
        progress=bar(job.units, args.quiet),
        dist=dist,
        notify=lambda text: say(args, text),
    )


#: options that do not change a run's results (where it goes, how it is shown, how it is cut into batches:
#: each sample's result depends only on the seed and the sample); every other option is part of the run's name
NOT_SETTINGS = frozenset(
    {
        "out",
        "force",
        "resume",
        "quiet",
        "debug",
        "json",
        "batch_size",
        "func",
        "argv",
        "command",
        "device",
        "channels_last",
        "pngs",
        "robustbench",
    }
)


def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options of ``args`` that change the results (the ``settings`` of :func:`advlab.runs.run_name`), sorted."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in NOT_SETTINGS}


def saved_batch_size(out: str | Path) -> int | None:
    """The batch size an interrupted run at ``out`` was started with (its partial directory's config.json, read
    without following a link; None where there is none or it cannot be read)."""
    size = (runs.rundir.partial_config(out) or {}).get("batch_size")
    return size if isinstance(size, int) and size > 0 else None


def batch_size(given: int | None, out: str | Path, resume: bool, dist: Dist, estimate: Callable[[], int]) -> int:
    """The batch size of a command whose default is sized to free memory: ``given`` when the user gave one;
    on ``--resume``, the size the run was started with (free memory changes; the saved units only fit the same
    size); else ``estimate()``. Rank 0's answer, on every rank (free memory differs between processes)."""
    if given is not None:
        return given
    chosen = ((saved_batch_size(out) if resume else None) or estimate()) if dist.is_main() else None
    return int(dist.share(chosen))
