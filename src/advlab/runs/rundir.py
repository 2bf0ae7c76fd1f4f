"""Atomic, non-overwriting, resumable run directories."""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlab.errors import AdvlabError
from advlab.runs import lock

PARTIAL_SUFFIX = ".partial"


class RunExists(AdvlabError):
    """The run directory exists already and neither force nor resume was asked for."""


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write a file so that readers see the old content or the new, never half of it (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files get the mode any other tool gives
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's umask (read by setting and restoring it: there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return str(obj)
    return obj


def versions() -> dict[str, str]:
    """advlab, torch, numpy and Python versions, and the platform, for config.json."""
    import numpy

    from advlab import __version__

    return {"advlab": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "python": sys.version.split()[0], "platform": platform.platform()}  # fmt: skip


@dataclass
class Run:
    """An open run directory. Write into ``run.path`` (the ``.partial`` directory while the run is going on).

    ``final`` is where it lands when it finishes; ``resumed`` says whether earlier partial work was found.
    """

    path: Path
    final: Path
    resumed: bool = False
    checkpointed: bool = False  # set by save_state: keep the partial directory even if the run errors
    config: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str) -> Path:
        return self.path / name

    def save_json(self, name: str, obj: Any) -> Path:
        p = self.path / name
        atomic_write(p, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")
        return p

    def load_json(self, name: str) -> Any:
        return json.loads((self.path / name).read_text())

    def save_tensors(self, name: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> Path:
        from safetensors.torch import save

        data = save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, metadata=dict(metadata or {}))
        p = self.path / name
        atomic_write(p, data)
        return p

    def save_text(self, name: str, text: str) -> Path:
        p = self.path / name
        atomic_write(p, text)
        return p

    def save_figure(self, name: str, fig: Any, dpi: int = 110) -> Path:
        """Save a matplotlib figure as PNG atomically and close it."""
        import io

        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
        plt.close(fig)
        p = self.path / name
        atomic_write(p, buf.getvalue())
        return p

    def save_state(self, name: str, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        """Save resumable progress (tensors + a JSON sidecar); a later ``--resume`` finds it with :meth:`load_state`."""
        self.save_tensors(f"{name}.safetensors", tensors)
        self.save_json(f"{name}.json", info)
        self.checkpointed = True

    def clear_state(self, name: str) -> None:
        """Remove saved progress once the results it led to are written (a finished run holds results, not state)."""
        for suffix in (".safetensors", ".json"):
            (self.path / f"{name}{suffix}").unlink(missing_ok=True)

    def load_state(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]] | None:
        t, j = self.path / f"{name}.safetensors", self.path / f"{name}.json"
        if not (t.exists() and j.exists()):
            return None
        from safetensors.torch import load_file

        return load_file(str(t)), json.loads(j.read_text())

    # Work done batch by batch is saved as one state per batch (``batch_00000``, ``batch_00001``, ...):
    # each save writes only its own batch, so saving stays linear in the run's length.
    def save_batch(self, index: int, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        self.save_state(f"batch_{index:05d}", tensors, info)

    def load_batches(self) -> list[tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """The saved batches 0, 1, ... up to the first one missing (a batch cut off mid-save is simply redone)."""
        out = []
        while (state := self.load_state(f"batch_{len(out):05d}")) is not None:
            out.append(state)
        return out

    def batch_indices(self) -> list[int]:
        """The indices of every saved batch, in order, gaps allowed (ranks of a distributed run save theirs
        independently; a batch cut off mid-save, tensors without their JSON sidecar, does not count)."""
        out = []
        for p in self.path.glob("batch_[0-9]*.json"):
            stem = p.name[len("batch_") : -len(".json")]
            if stem.isdigit() and (self.path / f"batch_{stem}.safetensors").exists():
                out.append(int(stem))
        return sorted(out)

    def load_batch_map(self, indices: Iterable[int] | None = None) -> dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]]:
        """The saved batches (all of them, or those of ``indices`` that exist) by index, gaps allowed."""
        out = {}
        for i in self.batch_indices() if indices is None else indices:
            state = self.load_state(f"batch_{i:05d}")
            if state is not None:
                out[i] = state
        return out

    def clear_batches(self) -> None:
        for p in self.path.glob("batch_[0-9]*.*"):
            if p.suffix in (".safetensors", ".json"):
                p.unlink(missing_ok=True)


def attach(out: str | Path) -> Run:
    """The partial directory of a run that another process opened with :func:`start` (the other ranks of a
    distributed run write their units into rank 0's directory). Nothing is created, renamed or removed here;
    the returned run keeps its state on error (``checkpointed``)."""
    final = Path(out)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    if not partial.is_dir():
        raise AdvlabError(f"no run in progress at {partial} to attach to")
    return Run(partial, final, resumed=True, checkpointed=True)


#: errors of the file system a user can fix (free space, remount) and then continue with --resume
_FIXABLE = {errno.ENOSPC: "no space left on the device", getattr(errno, "EDQUOT", -1): "disk quota exceeded",
            errno.EROFS: "read-only file system"}  # fmt: skip


def _paths(out: str | Path) -> tuple[Path, Path]:
    """(final, partial) for ``out``; an ``out`` that cannot name a new directory is an :class:`AdvlabError`."""
    final = Path(out)
    if str(out).strip() == "" or final.name in ("", ".", ".."):
        raise AdvlabError(f"--out {str(out)!r} is not a run directory's path: name a new directory, e.g. runs/my-run")
    if final.exists() and not final.is_dir():
        raise RunExists(f"{final} exists and is not a directory")
    if final.parent.exists() and not final.parent.is_dir():
        raise AdvlabError(f"--out {str(out)!r}: {final.parent} is not a directory")
    return final, final.with_name(final.name + PARTIAL_SUFFIX)


def _os_error(e: OSError, what: str) -> AdvlabError:
    reason = _FIXABLE.get(e.errno or 0) or e.strerror or type(e).__name__
    where = f" ({e.filename})" if e.filename and str(e.filename) not in what else ""
    return AdvlabError(f"cannot {what}: {reason}{where}")


def _open_partial(final: Path, partial: Path, force: bool, resume: bool) -> tuple[bool, Path]:
    """Create or reuse ``partial`` and take its lock: (whether earlier work was found, the lock file).
    A live run is never touched: :class:`RunInUse` names it, even with ``force``."""
    if partial.exists():
        live = lock.holder(partial)
        if live is not None:
            raise lock.RunInUse(live.describe(partial))
        if not resume and not force:
            raise RunExists(f"an interrupted run is in {partial}; use --resume to continue it or --force to start over")
        if force:
            shutil.rmtree(partial)
    resumed = partial.exists()
    try:
        partial.mkdir(parents=True, exist_ok=True)
        return resumed, lock.acquire(partial)
    except OSError as e:
        raise _os_error(e, f"create the run directory {partial}") from None


def _land(partial: Path, final: Path) -> None:
    """Rename the finished ``partial`` to ``final`` (force: swap the old run out only now)."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, trash)
        os.replace(partial, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(partial, final)


@contextmanager
def start(out: str | Path, config: Mapping[str, Any], *, force: bool = False, resume: bool = False) -> Iterator[Run]:
    """Open the run directory ``out`` for writing; on success it appears whole at ``out``.

    - ``out`` exists: :class:`RunExists` unless ``force`` (replaced at the end, atomically) or ``resume``
      (a finished run is left as it is: the body sees ``run.resumed`` and ``run.path == run.final``).
    - ``out.partial`` exists (an interrupted run): continued with ``resume``, else :class:`RunExists`;
      one a live process is writing (its lock, :mod:`advlab.runs.lock`): :class:`~advlab.runs.lock.RunInUse`,
      whatever ``force`` and ``resume`` say.
    - the body raises: the partial directory is removed unless it holds saved state (``run.save_state``)
      or the user pressed Ctrl-C; either way ``out`` is untouched. A full disk, an exceeded quota or a read-only
      file system keeps it and becomes an :class:`AdvlabError` that says to continue with ``--resume``.
    """
    final, partial = _paths(out)
    if final.exists() and not force:
        if not resume:
            raise RunExists(f"run directory {final} exists already; use --force to replace it or --resume to continue it")
        yield Run(final, final, resumed=True, config=dict(config))
        return
    resumed, held = _open_partial(final, partial, force, resume)
    run = Run(partial, final, resumed=resumed, config=dict(config))
    try:
        if not (partial / "config.json").exists():
            run.save_json("config.json", {**_jsonable(dict(config)), "versions": versions(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        yield run
        (partial / "INTERRUPTED.json").unlink(missing_ok=True)
    except KeyboardInterrupt:
        try:
            run.save_json("INTERRUPTED.json", {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume_with": "--resume"})
        finally:
            lock.release(held)
        raise
    except OSError as e:
        lock.release(held)
        if e.errno in _FIXABLE:
            raise AdvlabError(f"{_FIXABLE[e.errno]} while writing {e.filename or partial}; the work so far is kept in "
                              f"{partial}: make room and rerun the same command with --resume") from None  # fmt: skip
        _drop(run, partial, resumed)
        raise
    except BaseException:
        lock.release(held)
        _drop(run, partial, resumed)
        raise
    try:
        _land(partial, final)  # with the lock inside: no other process takes the directory between release and rename
    except OSError as e:
        lock.release(held)
        raise _os_error(e, f"rename the finished run {partial} to {final} (it is kept there)") from None
    lock.release(final / lock.LOCK_FILE)
    run.path = final


def _drop(run: Run, partial: Path, resumed: bool) -> None:
    """After an error: remove a new partial directory that holds no saved state."""
    if not run.checkpointed and not resumed:
        shutil.rmtree(partial, ignore_errors=True)
