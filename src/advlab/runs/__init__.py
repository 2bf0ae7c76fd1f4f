"""Run directories: every command that produces results leaves ``runs/<name>/`` a person can open, and any loop
over units (an evaluation's batches, prototype pairs, a study's settings) can be resumed and sharded through one.

A run is written in ``<name>.partial/`` and renamed to ``<name>/`` only when it finished, so a finished
directory is always whole. A run that raised an error leaves nothing (unless it had saved resumable
state); one stopped by Ctrl-C keeps ``<name>.partial/`` for ``--resume``. An existing run is never
replaced unless ``force=True``, and only a directory advlab recognises as a run (its ``config.json``) ever is:
anything else at ``<name>`` or ``<name>.partial`` is refused, and so is a symbolic link there (never followed).
:func:`atomic_write` writes regular files only: a link, a directory, a device, a FIFO or a socket is refused.

Layout: ``config.json`` (command, arguments, seed, versions: enough to re-run), ``metrics.json``, tensors
(``.safetensors``), pictures (``.png``), tables (``.csv``) and later ``report.html``; while a run is going on,
``batch_00007.safetensors`` + ``.json`` per finished unit and ``plan.json`` (what it decided before its first).

Resume and shard a library call (:mod:`advlab.runs.resumable`)::

    from advlab import evaluate, runs
    from advlab.evaluation import EvalConfig

    with runs.resumable("runs/digits-eval", runs.units.EVALUATE, config={"eps": 0.1}) as work:
        report = evaluate(model, "digits:test", EvalConfig(eps=0.1), work=work)

Interrupted, the same lines continue where it stopped; under ``torchrun`` each rank computes its shard. The
full skeleton (merge on rank 0, result files, report.html) is :func:`run_job` on a :class:`Job`
(:mod:`advlab.runs.job`), which every ``advlab`` command that saves unit by unit uses.
"""

from __future__ import annotations

from advlab.runs import units
from advlab.runs.job import Job, Units, cat_columns, run_job
from advlab.runs.naming import format_number, run_name
from advlab.runs.resumable import resumable
from advlab.runs.rundir import Run, RunExists, atomic_write, attach, check_writable, start

__all__ = [
    "Job",
    "Run",
    "RunExists",
    "Units",
    "atomic_write",
    "attach",
    "cat_columns",
    "check_writable",
    "format_number",
    "resumable",
    "run_job",
    "run_name",
    "start",
    "units",
]
