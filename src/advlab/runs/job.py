"""The one skeleton of work saved unit by unit: open, split into units, shard, save, resume, merge, write.

A :class:`Job` describes the work and :func:`run_job` does the rest:

1. open the run directory (``force``, ``resume``, the settings and inputs check), shared by every rank of a
   distributed run (:mod:`advlab.runs.shards`);
2. the plan: ``job.plan()``, what the run decides before its first unit, is computed once on rank 0, saved as
   plan.json, shared with every rank and read back on every resume (a job without it may still let its loop
   decide one: the loop calls ``work.record_plan``, see :class:`advlab.work.Work`);
3. build an :class:`advlab.work.Work` for this rank: ``done`` = the units saved earlier (a single process resumes
   from them), ``on_done`` = save the unit (``batch_00007.safetensors`` + ``.json``, with the seconds it took),
   ``in_shard`` = the units this rank owns and that are not saved, ``progress`` = the caller's bar (rank 0 only),
   ``plan`` = the run's plan;
4. call ``job.compute(work)``, the library call (``evaluate(..., work=work)``, ``generate``, ``sweep``, or a
   loop of its own over ``work.todo(range(n))``);
5. on rank 0, when the result is not whole yet (a distributed run, or nothing was left to compute):
   ``job.merge(every saved unit, plan)``, which reads the units and computes nothing; then
   ``job.write(run, result, seconds)`` writes the results and returns what the caller shows, the unit files
   are removed, ``job.report(run, shown)`` writes report.html, and the directory is renamed to its final name.

A unit's result depends only on its inputs and the seed, so the merged result equals a single pass however the
units were spread over ranks and launches. Other ranks, and a run that is complete already, return None.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from advlab.distributed import Dist
from advlab.runs.fingerprint import fingerprint
from advlab.runs.rundir import Run
from advlab.runs.shards import FINGERPRINT, Shards, open_shards
from advlab.work import Work

T = TypeVar("T")
R = TypeVar("R")
S = TypeVar("S")

#: the key of a unit's JSON sidecar that holds the seconds it took (added and removed by the runner; a
#: unit's own info may not use it)
SECONDS = "runner_seconds"

Encoded = tuple[Mapping[str, torch.Tensor], Mapping[str, Any]]
#: what a run decided before its first unit (plan.json), or None
Plan = dict[str, Any] | None
#: a progress bar: (the unit indices this process computes, how many there are or None) -> the same indices
Progress = Callable[[Iterable[int], int | None], Iterable[int]]


@dataclass(frozen=True)
class Units(Generic[T]):
    """How work is cut into units (batches, settings; not the network units of :mod:`advlab.experiments.units`):
    ``count`` units (None: as many as the loop makes, e.g. the batches of a DataLoader), each described as
    ``name`` in shards.json ("a batch of 16 samples"); ``encode(result)`` gives a unit's (tensors, JSON info) to
    save, ``decode(tensors, info)`` reads it back. ``bar``: a progress bar's label. :mod:`advlab.runs.units` has
    those of advlab's own loops."""

    count: int | None
    name: str
    encode: Callable[[T], Encoded]
    decode: Callable[[dict[str, torch.Tensor], dict[str, Any]], T]
    bar: str = "work"

    def counted(self, count: int) -> Units[T]:
        """The same units, ``count`` of them."""
        return Units(count, self.name, self.encode, self.decode, self.bar)


def _written(run: Run, result: Any, seconds: float) -> Any:
    return result


@dataclass(frozen=True)
class Job(Generic[T, R, S]):
    """One run: where it goes (``out``), the settings a resumed run must match (``config``), its ``units``,
    ``compute(work) -> R`` (the result over every unit in ``work.done`` or computed), ``write(run, result,
    seconds) -> S`` (write the results into ``run`` and return what the caller shows; ``seconds``: the compute
    time summed over the units; default: the result itself, nothing written) and ``report(run, shown)``
    (report.html, written once the unit files are gone). ``interrupted(run, done, seconds)``: optional, on Ctrl-C
    in a single process, with the units finished so far, to leave a viewable partial directory."""

    out: str | Path
    config: dict[str, Any]
    units: Units[T]
    compute: Callable[[Work[T]], R]
    write: Callable[[Run, R, float], S] = _written
    report: Callable[[Run, S], None] | None = None
    interrupted: Callable[[Run, dict[int, T], float], None] | None = None
    #: the tensors and models the units are computed from (``{"model": model, "data": (x, y)}``): their content
    #: hashes go into config.json (:data:`~advlab.runs.shards.FINGERPRINT`), and a resume whose inputs changed
    #: is refused
    inputs: Mapping[str, Any] = field(default_factory=dict)
    #: raises :class:`~advlab.errors.AdvlabError` for a setting that cannot work; called before the run
    #: directory is opened, so that a bad option leaves nothing behind
    validate: Callable[[], None] | None = None
    #: ``merge(done, plan) -> R``: the result from every unit (``done``, by index) and the run's plan, reading
    #: the units only (no model call); rank 0 uses it when the result is not whole after its own shard
    merge: Callable[[dict[int, T], Plan], R] | None = None
    #: ``plan() -> dict``: what the run decides before its first unit (JSON); computed once, saved as plan.json,
    #: handed to ``compute`` and ``merge`` as ``work.plan`` / ``plan`` on every rank and every resume
    plan: Callable[[], dict[str, Any]] | None = None


class _Ledger(Generic[T]):
    """Saves each finished unit with the seconds since the previous one, and (``keep``) keeps what is finished in
    memory: only a job that shows partial results on Ctrl-C needs them (the others would hold every unit's
    bulky tensors, adversarial images included, that the unit files hold already)."""

    def __init__(
        self, sh: Shards, units: Units[T], done: dict[int, T], seconds: dict[int, float], keep: bool = True
    ) -> None:
        self.sh, self.units, self.done, self.seconds, self.keep = sh, units, done, seconds, keep
        self.clock = time.perf_counter()

    def save(self, unit: int, result: T) -> None:
        now = time.perf_counter()
        self.seconds[unit], self.clock = now - self.clock, now
        tensors, info = self.units.encode(result)
        assert SECONDS not in info, f"{SECONDS!r} is the runner's key in a unit's JSON sidecar"
        self.sh.save(unit, {k: v.detach().cpu() for k, v in tensors.items()}, {**info, SECONDS: self.seconds[unit]})
        if self.keep:
            self.done[unit] = result


def load_units(sh: Shards, units: Units[T], every: bool) -> tuple[dict[int, T], dict[int, float]]:
    """The saved units (``every``: all of them, a missing one is an error; else those saved before this launch)
    and their seconds, by unit."""

    def read(tensors: dict[str, torch.Tensor], info: dict[str, Any]) -> tuple[T, float]:
        rest = {k: v for k, v in info.items() if k != SECONDS}
        return units.decode(tensors, rest), float(info.get(SECONDS, 0.0))

    got = (sh.load_all if every else sh.saved)(read)
    return {i: r for i, (r, _) in got.items()}, {i: s for i, (_, s) in got.items()}


def shard_work(sh: Shards, units: Units[T], progress: Progress | None, keep: bool = True) -> tuple[Work[T], _Ledger[T]]:
    """This rank's :class:`Work` on the shared run ``sh`` (a single process resumes from the saved units) and the
    ledger that saves each new unit (and, with ``keep``, holds it). ``progress`` is used on rank 0 only."""
    dist = sh.dist
    done, seconds = ({}, {}) if dist.distributed else load_units(sh, units, every=False)
    ledger = _Ledger(sh, units, dict(done), seconds, keep)
    todo = sh.todo()
    total = None if todo is None else len(todo)
    bar = (lambda it: progress(it, total)) if progress is not None and dist.is_main() else None
    work = Work(done=done, on_done=ledger.save, in_shard=sh.computes, progress=bar, plan=sh.plan)
    work.on_plan = sh.save_plan
    return work, ledger


def _planned(job: Job[T, R, S], sh: Shards) -> None:
    """The run's plan on every rank: read from plan.json, or computed by ``job.plan()`` on rank 0 and saved
    (a collective when the job has a plan)."""
    if job.plan is None:
        return
    if sh.dist.is_main() and sh.plan is None:
        sh.save_plan(job.plan())
    sh.plan = sh.dist.share(sh.plan)


def _compute_shard(job: Job[T, R, S], sh: Shards, progress: Progress | None) -> tuple[R | None, dict[int, float]]:
    """This rank's units (resuming from the saved ones in a single process); the result when it is whole."""
    dist = sh.dist
    work, ledger = shard_work(sh, job.units, progress, keep=job.interrupted is not None)
    todo = sh.todo()
    try:
        with sh.working():
            result = job.compute(work) if todo is None or todo else None
    except KeyboardInterrupt:
        if job.interrupted is not None and ledger.done and not dist.distributed:
            job.interrupted(sh.run, ledger.done, sum(ledger.seconds.values()))
        raise
    return (None if dist.distributed else result), ledger.seconds


def merge_units(job: Job[T, R, S], sh: Shards) -> tuple[R, dict[int, float]]:
    """Rank 0: the result from every saved unit, exactly as one process would have returned it."""
    done, seconds = load_units(sh, job.units, every=True)
    if job.merge is None:
        raise TypeError("a job whose units are computed apart (torchrun, --resume) needs a merge")
    return job.merge(done, sh.plan), seconds


def _whole(job: Job[T, R, S], sh: Shards, computed: tuple[R | None, dict[int, float]]) -> tuple[R, dict[int, float]]:
    """Rank 0: the result of this launch when it is whole, else every saved unit merged as one process would."""
    result, seconds = computed
    if result is None:
        return merge_units(job, sh)
    return result, seconds


def run_job(
    job: Job[T, R, S],
    *,
    force: bool = False,
    resume: bool = False,
    progress: Progress | None = None,
    dist: Dist | None = None,
    notify: Callable[[str], None] | None = None,
) -> S | None:
    """Run ``job`` (see the module docstring); what ``job.write`` returned on rank 0, else None (other ranks, and
    a run complete already). ``force``: start over (an existing run of ``job.out`` is replaced when this one
    ends); ``resume``: continue an interrupted run (and leave a complete one as it is). ``progress``: a bar
    around the units rank 0 computes. ``dist``: this process's rank (:func:`advlab.distributed.setup`; default a
    single process). ``notify``: one-line messages for the user ("runs/x is complete already")."""
    dist = dist or Dist()
    if job.validate is not None:
        job.validate()
    config = {**job.config, FINGERPRINT: fingerprint(job.inputs)} if job.inputs and dist.is_main() else job.config
    with open_shards(
        dist, job.out, config, job.units.count, force=force, resume=resume, unit_name=job.units.name
    ) as opened:
        sh = opened.shards
        if sh is None:
            if dist.is_main() and notify is not None:
                notify(f"{job.out} is complete already")
            return None
        _planned(job, sh)
        computed = _compute_shard(job, sh, progress)
        if not dist.is_main():
            return None
        result, seconds = _whole(job, sh, computed)
        sh.finish()
        shown = job.write(sh.run, result, round(sum(seconds.values()), 4))
        sh.run.clear_batches()  # the results are written: the state goes
        if job.report is not None:
            job.report(sh.run, shown)
    return shown


def cat_columns(done: Mapping[int, Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Units whose results are named per-sample columns, joined in unit order (a merge: reads, computes nothing)."""
    order = sorted(done)
    return {k: torch.cat([done[u][k] for u in order]) for k in done[order[0]]}
