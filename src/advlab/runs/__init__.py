"""Run directories: every command that produces results leaves ``runs/<name>/`` a person can open.

A run is written in ``<name>.partial/`` and renamed to ``<name>/`` only when it finished, so a finished
directory is always whole. A run that raised an error leaves nothing (unless it had saved resumable
state); one stopped by Ctrl-C keeps ``<name>.partial/`` for ``--resume``. An existing run is never
replaced unless ``force=True``, and only a directory advlab recognises as a run (its ``config.json``) ever is:
anything else at ``<name>`` or ``<name>.partial`` is refused, and so is a symbolic link there (never followed).
:func:`atomic_write` writes regular files only: a link, a directory, a device, a FIFO or a socket is refused.

Layout: ``config.json`` (command, arguments, seed, versions: enough to re-run), ``metrics.json``, tensors
(``.safetensors``), pictures (``.png``), tables (``.csv``) and later ``report.html``.
"""

from __future__ import annotations

from advlab.runs.naming import format_number, run_name
from advlab.runs.rundir import Run, RunExists, atomic_write, attach, check_writable, start

__all__ = ["Run", "RunExists", "atomic_write", "attach", "check_writable", "format_number", "run_name", "start"]
