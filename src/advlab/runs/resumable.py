"""Resume and sharding for a library call: a run directory that keeps each unit of a loop as it ends.

    from advlab import evaluate, runs

    with runs.resumable("runs/digits-eval", runs.units.EVALUATE, config={"eps": 0.1}) as work:
        report = evaluate(model, "digits:test", EvalConfig(eps=0.1), work=work)

The first call opens ``runs/digits-eval.partial/``, writes config.json, and saves each batch as it ends; an
interrupted call (Ctrl-C, a crash, a lost node) keeps them, and the same lines run again compute only the missing
batches and give the same report as one uninterrupted call. When the block ends the directory is renamed to
``runs/digits-eval/`` and keeps its units: running the lines once more computes nothing (a unit the finished run
lacks is an error: its settings differ; ``force=True`` starts over).

Under ``torchrun`` every rank runs the same lines (:func:`advlab.distributed.setup` gives ``dist``): each computes
the units it owns and its call covers only those; after the block rank 0's ``work.done`` holds every unit and
``work.plan`` the run's plan, to merge (``advlab.evaluation.merge``, or the same call again: it computes nothing).
:func:`advlab.runs.run_job` does that merge itself and writes result files too.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from advlab.distributed import Dist
from advlab.errors import AdvlabError
from advlab.runs.fingerprint import fingerprint
from advlab.runs.job import Progress, Units, load_units, shard_work
from advlab.runs.rundir import Run
from advlab.runs.shards import FINGERPRINT, Shards, check_inputs, check_settings, open_shards, read_plan
from advlab.work import Work

T = TypeVar("T")


def _finished(final: Path, units: Units[T], config: Mapping[str, Any], plan: dict[str, Any] | None) -> Work[T]:
    """The work of a finished run whose settings and inputs match ``config``: every saved unit, nothing to compute."""
    run = Run(final, final, resumed=True)
    check_inputs(run, config.get(FINGERPRINT))
    check_settings(run, {k: v for k, v in config.items() if k != FINGERPRINT})
    sh = Shards(Dist(), run, units.count, run.batch_indices())
    done, _ = load_units(sh, units, every=True)

    def refuse(unit: int) -> bool:
        raise AdvlabError(
            f"{final} is finished and holds no unit {unit}: this call's settings differ from the run's; "
            "use force=True to start over"
        )

    return Work(done=done, in_shard=refuse, plan=plan if plan is not None else read_plan(run))


@contextmanager
def resumable(
    out: str | Path,
    units: Units[T],
    *,
    config: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    force: bool = False,
    progress: Progress | None = None,
    dist: Dist | None = None,
) -> Iterator[Work[T]]:
    """A :class:`~advlab.work.Work` backed by the run directory ``out`` (see the module docstring): its units
    saved there as they end, those saved earlier given back as ``done``. ``units``: how a unit is saved and read
    (:mod:`advlab.runs.units` for advlab's loops). ``config``: the settings (JSON) a resumed run must match;
    ``inputs``: tensors and models whose content must not change between launches (``{"model": model}``; their
    hashes go into config.json). ``force``: start over. ``progress``: a bar around the units computed (rank 0).
    ``dist``: this process's rank (default: a single process)."""
    dist = dist or Dist()
    saved = dict(config or {})
    if inputs and dist.is_main():
        saved[FINGERPRINT] = fingerprint(inputs)
    with open_shards(dist, out, saved, units.count, force=force, resume=True, unit_name=units.name) as opened:
        sh = opened.shards
        if sh is None:
            yield _finished(opened.final, units, saved, opened.plan)
            return
        work, _ = shard_work(sh, units, progress)
        with sh.working():
            yield work
        if dist.is_main():
            sh.finish()
            work.done, _ = load_units(sh, units, every=True)
            work.plan = sh.plan
