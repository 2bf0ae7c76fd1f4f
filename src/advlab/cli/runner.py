"""The one skeleton of the commands that save their work unit by unit (eval, attack, prototypes, study prune).

A command describes its work as a :class:`Job` and :func:`run_job` does the rest:

1. open the run directory (``--force``, ``--resume``, the settings check), shared by every rank under torchrun
   (:mod:`advlab.cli.shards`);
2. build an :class:`advlab.work.Work` for this rank: ``done`` = the units saved earlier (a single process
   resumes from them), ``on_done`` = save the unit (``batch_00007.safetensors`` + ``.json``, with the seconds
   it took), ``in_shard`` = the units this rank owns and that are not saved, ``progress`` = a tqdm bar on a
   terminal (rank 0, unless ``--quiet``);
3. call ``job.compute(work)``, the command's library call (``evaluate(..., work=work)``, ``generate``,
   ``sweep``, or a loop of its own over ``work.todo(range(n))``);
4. on rank 0: when the result is not whole yet (a distributed run, or nothing was left to compute), call
   ``compute`` again with every saved unit as ``done``, which computes nothing and merges them as a single
   process would; then ``job.write(run, result, seconds)`` writes the results and returns what the command
   prints, the unit files are removed, ``job.report(run, shown)`` writes report.html, and the directory is
   renamed to its final name.

A unit's result depends only on its inputs and the seed, so the merged result equals a single pass however the
units were spread over ranks and launches. Other ranks, and a run that is complete already, return None.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from advlab import runs
from advlab.cli.common import progress, say
from advlab.cli.shards import FINGERPRINT, Shards, open_shards
from advlab.distributed import Dist
from advlab.runs.fingerprint import fingerprint
from advlab.work import Work

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

#: the key of a unit's JSON sidecar that holds the seconds it took (added and removed by the runner; a
#: unit's own info may not use it)
SECONDS = "runner_seconds"

Encoded = tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]


@dataclass(frozen=True)
class UnitSpec(Generic[T]):
    """How a command's work is cut into units of work (batches, settings; not the network units of
    :mod:`advlab.experiments.units`): ``count`` units, each described as ``name`` in shards.json ("a batch of 16
    samples"); ``encode(result)`` gives a unit's (tensors, JSON info) to save, ``decode(tensors, info)`` reads it
    back. ``bar``: the progress bar's label."""

    count: int
    name: str
    encode: Callable[[T], Encoded]
    decode: Callable[[dict[str, torch.Tensor], dict[str, Any]], T]
    bar: str = "work"


@dataclass(frozen=True)
class Job(Generic[T, R, S]):
    """One run of a command: where it goes (``out``), the settings a resumed run must match (``config``), its
    ``units``, ``compute(work) -> R`` (the result over every unit in ``work.done`` or computed),
    ``write(run, result, seconds) -> S`` (write the results into ``run`` and return what the command prints;
    ``seconds``: the compute time summed over the units) and ``report(run, shown)`` (report.html, written once
    the unit files are gone, so that it lists the results only). ``interrupted(run, done, seconds)``: optional,
    on Ctrl-C in a single process, with the units finished so far, to leave a viewable partial directory."""

    out: str | Path
    config: dict[str, Any]
    units: UnitSpec[T]
    compute: Callable[[Work[T]], R]
    write: Callable[[runs.Run, R, float], S]
    report: Callable[[runs.Run, S], None]
    interrupted: Callable[[runs.Run, dict[int, T], float], None] | None = None
    #: the tensors and models the units are computed from (``{"model": model, "data": (x, y)}``): their content
    #: hashes go into config.json (:data:`FINGERPRINT`), and a resumed run whose inputs changed is refused
    inputs: Mapping[str, Any] = field(default_factory=dict)
    #: raises :class:`~advlab.errors.AdvlabError` for a setting that cannot work; called before the run
    #: directory is opened, so that a bad option leaves nothing behind
    validate: Callable[[], None] | None = None


class _Ledger(Generic[T]):
    """Saves each finished unit with the seconds since the previous one, and keeps what is finished."""

    def __init__(self, sh: Shards, units: UnitSpec[T], done: dict[int, T], seconds: dict[int, float]) -> None:
        self.sh, self.units, self.done, self.seconds = sh, units, done, seconds
        self.clock = time.perf_counter()

    def save(self, unit: int, result: T) -> None:
        now = time.perf_counter()
        self.seconds[unit], self.clock = now - self.clock, now
        tensors, info = self.units.encode(result)
        assert SECONDS not in info, f"{SECONDS!r} is the runner's key in a unit's JSON sidecar"
        self.sh.save(unit, {k: v.detach().cpu() for k, v in tensors.items()}, {**info, SECONDS: self.seconds[unit]})
        self.done[unit] = result


def _load(sh: Shards, units: UnitSpec[T], every: bool) -> tuple[dict[int, T], dict[int, float]]:
    """The saved units (``every``: all of them, a missing one is an error) and their seconds, by unit."""

    def read(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> tuple[T, float]:
        rest = {k: v for k, v in info.items() if k != SECONDS}
        return units.decode(tensors, rest), float(info.get(SECONDS, 0.0))

    got = (sh.load_all if every else sh.saved)(read)
    return {i: r for i, (r, _) in got.items()}, {i: s for i, (_, s) in got.items()}


def _bar(
    args: argparse.Namespace, dist: Dist, units: UnitSpec[Any], total: int
) -> Callable[[Iterable[int]], Iterable[int]]:
    """A progress bar (or progress lines, off a terminal) over the ``total`` units to compute, on rank 0 only,
    unless --quiet."""
    quiet = args.quiet or not dist.is_main()
    words = units.name.split()  # "a batch of 16 samples" -> batch
    noun = words[1] if len(words) > 1 and words[0] in ("a", "an", "one") else "unit"
    return lambda todo: progress(todo, quiet, desc=units.bar, unit=noun, total=total)


def _compute_shard(
    job: Job[T, R, S], sh: Shards, args: argparse.Namespace, dist: Dist
) -> tuple[R | None, dict[int, float]]:
    """This rank's units (resuming from the saved ones in a single process); the result when it is whole."""
    done, seconds = ({}, {}) if dist.distributed else _load(sh, job.units, every=False)
    ledger = _Ledger(sh, job.units, dict(done), seconds)
    work = Work(
        done=done, on_done=ledger.save, in_shard=sh.computes, progress=_bar(args, dist, job.units, len(sh.todo()))
    )
    try:
        with sh.working():
            result = job.compute(work) if sh.todo() else None
    except KeyboardInterrupt:
        if job.interrupted is not None and ledger.done and not dist.distributed:
            job.interrupted(sh.run, ledger.done, sum(seconds.values()))
        raise
    return (None if dist.distributed else result), seconds


def run_job(job: Job[T, R, S], args: argparse.Namespace, dist: Dist) -> S | None:
    """Run ``job`` (see the module docstring); what ``job.write`` returned on rank 0, else None.
    ``args``: ``force``, ``resume`` and ``quiet`` are read."""
    if job.validate is not None:
        job.validate()
    config = {**job.config, FINGERPRINT: fingerprint(job.inputs)} if job.inputs and dist.is_main() else job.config
    with open_shards(
        dist, job.out, config, job.units.count, force=args.force, resume=args.resume, unit_name=job.units.name
    ) as opened:
        sh = opened.shards
        if sh is None:
            if dist.is_main():
                say(args, f"{job.out} is complete already")
            return None
        computed = _compute_shard(job, sh, args, dist)  # not unpacked here: mypy would infer R | None for R
        if not dist.is_main():
            return None
        result, seconds = computed
        if result is None:  # merge every saved unit exactly as one process would
            done, seconds = _load(sh, job.units, every=True)
            result = job.compute(Work(done=done))
        sh.finish()
        shown = job.write(sh.run, result, round(sum(seconds.values()), 4))
        sh.run.clear_batches()  # the results are written: the state goes
        job.report(sh.run, shown)
    return shown


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
