"""Atomic, non-overwriting, resumable run directories."""

from __future__ import annotations

import errno
import json
import os
import platform
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from advlab.data import files
from advlab.errors import AdvlabError
from advlab.runs import lock

PARTIAL_SUFFIX = ".partial"

#: errors of the file system a user can fix (free space, remount) and then continue with --resume
_FIXABLE = {
    errno.ENOSPC: "no space left on the device",
    getattr(errno, "EDQUOT", -1): "disk quota exceeded",
    errno.EROFS: "read-only file system",
}


class RunExists(AdvlabError):
    """The run directory exists already and neither force nor resume was asked for."""


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write a file so that readers see the old content or the new, never half of it (temp file + rename).

    Refuses with an :class:`AdvlabError`, writing nothing, a ``path`` that is a symbolic link (dangling or not) or
    that exists and is not a regular file (a directory, a device, a FIFO, a socket): the rename would replace the
    link or the node itself, not write through it, and neither is what anyone asked for (see
    :func:`check_writable`). Missing parent folders are created (mkdir only: nothing is replaced). The temp file is
    made next to ``path`` by ``mkstemp``, with ``O_EXCL | O_NOFOLLOW``: it never opens an existing file or a link.
    """
    path = Path(path)
    check_writable(path)
    _make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        if e.errno in _FIXABLE:
            raise
        raise AdvlabError(f"cannot write {str(path)!r}: {e.strerror or type(e).__name__}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a run's files get the mode any other tool gives
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        check_writable(path)  # once more, right before the rename: nothing was put there meanwhile
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | Path) -> None:
    """An :class:`AdvlabError` if :func:`atomic_write` would refuse ``path``: a symbolic link, or something that
    exists and is not a regular file, or a path through a file (a file or folders that do not exist yet are fine).
    Commands call it before long work whose result goes to a path the user named."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:  # nothing there yet (missing folders are made on writing)
        return
    except NotADirectoryError:
        raise AdvlabError(f"cannot write {str(path)!r}: a folder on its path is a file") from None
    except OSError as e:
        raise AdvlabError(f"cannot write {str(path)!r}: {e.strerror or type(e).__name__}") from None
    if not stat.S_ISREG(st.st_mode):
        kind = files.kind(st.st_mode)
        raise AdvlabError(f"{str(path)!r} is {kind}; advlab writes regular files only and will not replace it")


def _make_folder(folder: Path) -> None:
    """Create ``folder`` and its missing parents (an existing one is used as it is, nothing is replaced); one that
    cannot be made is an :class:`AdvlabError`, except for a full disk or a read-only file system (an OSError the
    run turns into "rerun with --resume")."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno in _FIXABLE:
            raise
        where = f" ({str(e.filename)!r})" if e.filename and str(e.filename) != str(folder) else ""
        raise AdvlabError(
            f"cannot create the folder {str(folder)!r}: {e.strerror or type(e).__name__}{where}"
        ) from None


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

    return {
        "advlab": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }


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

    def save_tensors(
        self, name: str, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None
    ) -> Path:
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
        out: list[tuple[dict[str, torch.Tensor], dict[str, Any]]] = []
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

    def load_batch_map(
        self, indices: Iterable[int] | None = None
    ) -> dict[int, tuple[dict[str, torch.Tensor], dict[str, Any]]]:
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
    the returned run keeps its state on error (``checkpointed``). A partial that is a symbolic link is refused."""
    final = Path(out)
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    st = _lstat(partial)
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise AdvlabError(f"no run in progress at {str(partial)!r} to attach to")
    return Run(partial, final, resumed=True, checkpointed=True)


#: the longest path a run directory may have: Linux's PATH_MAX less room for the files and folders a run writes
_PATH_MAX = 4096 - 256

#: the longest name of a file or directory (Linux's NAME_MAX): the partial directory's name must fit
_NAME_MAX = 255

#: how much of a config.json is read to tell whether a directory is an advlab run
_CONFIG_MAX = 4 << 20


def _lstat(path: Path) -> os.stat_result | None:
    """``os.lstat(path)``, never following a symbolic link; None when nothing is there. A path the OS cannot use
    (a name too long, a loop, no permission) is an :class:`AdvlabError`."""
    try:
        return os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        shown = str(path) if len(str(path)) <= 100 else str(path)[:100] + "..."
        raise AdvlabError(f"--out: cannot use {shown!r}: {e.strerror or type(e).__name__}") from None


def _paths(out: str | Path) -> tuple[Path, Path]:
    """(final, partial) for ``out``; an ``out`` that cannot name a new directory is an :class:`AdvlabError`, and so
    is a final or partial directory that is a symbolic link (never followed) or exists as something else."""
    text, final = str(out), Path(out)
    if text.strip() == "" or final.name in ("", ".", ".."):
        raise AdvlabError(f"--out {text!r} is not a run directory's path: name a new directory, e.g. runs/my-run")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise AdvlabError(f"--out {text!r}: a run directory's path cannot hold control characters (newline, tab, ...)")
    partial = final.with_name(final.name + PARTIAL_SUFFIX)
    if len(os.fsencode(str(partial))) > _PATH_MAX or len(os.fsencode(partial.name)) > _NAME_MAX:
        too_long = "path" if len(os.fsencode(str(partial))) > _PATH_MAX else "directory name"
        raise AdvlabError(
            f"--out {text[:60]!r}...: the {too_long} is too long for the file system (at most "
            f"{(_PATH_MAX if too_long == 'path' else _NAME_MAX) - len(PARTIAL_SUFFIX)} bytes)"
        )
    for path, st in ((final, _lstat(final)), (partial, _lstat(partial))):
        if st is not None and stat.S_ISLNK(st.st_mode):
            raise AdvlabError(
                f"{str(path)!r} is a symbolic link; advlab does not follow it: name a directory itself "
                "as --out (or remove the link)"
            )
    if final.exists() and not final.is_dir():
        raise RunExists(f"{final} exists and is not a directory")
    if partial.exists() and not partial.is_dir():
        raise RunExists(f"{str(partial)!r} exists and is not a directory; advlab will not remove it")
    if final.parent.exists() and not final.parent.is_dir():
        raise AdvlabError(f"--out {text!r}: {final.parent} is not a directory")
    return final, partial


def _os_error(e: OSError, what: str) -> AdvlabError:
    reason = _FIXABLE.get(e.errno or 0) or e.strerror or type(e).__name__
    where = f" ({e.filename})" if e.filename and str(e.filename) not in what else ""
    return AdvlabError(f"cannot {what}: {reason}{where}")


def _read_config(d: Path) -> dict[str, Any] | None:
    """``d/config.json`` as a JSON object, read without following a link in ``d`` or at the file; None when it is
    missing, not a regular file, or not a JSON object."""
    try:
        fd = os.open(d / "config.json", os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        try:
            info = json.loads(f.read(_CONFIG_MAX)) if stat.S_ISREG(os.fstat(f.fileno()).st_mode) else None
        except (OSError, ValueError):
            return None
    return info if isinstance(info, dict) else None


def partial_config(out: str | Path) -> dict[str, Any] | None:
    """The config.json of the interrupted run at ``out`` (its ``.partial`` directory, a real one: a link is not
    followed), or None: no such run, or a config that cannot be read. For settings a resume must reuse."""
    partial = Path(f"{out}{PARTIAL_SUFFIX}")
    try:
        st = os.lstat(partial)
    except OSError:
        return None
    return _read_config(partial) if stat.S_ISDIR(st.st_mode) else None


def _is_run(d: Path, partial: bool = False) -> bool:
    """Whether the real directory ``d`` is recognisably advlab's, so that ``--force`` may remove it: its
    ``config.json`` (a regular file, not a link) is advlab's, a JSON object with "versions" (which every run writes
    first, older advlab's too); or it is empty; or, for a partial directory, it holds nothing but a lock and temp
    files (a run stopped before it wrote its config)."""
    info = _read_config(d)
    if info is not None and isinstance(info.get("versions"), dict):
        return True
    try:
        names = [p.name for p in d.iterdir()]
    except OSError:
        return False
    return all(partial and (n == lock.LOCK_FILE or (n.startswith(".") and n.endswith(".tmp"))) for n in names)


def _not_a_run(d: Path) -> RunExists:
    """The one-line refusal to replace, continue or remove ``d``, which is not an advlab run: what is in it."""
    try:
        names = sorted(p.name for p in d.iterdir())
        shown = ", ".join(repr(n) for n in names[:3]) + (", ..." if len(names) > 3 else "")
        held = f"it holds {len(names)} {'entry' if len(names) == 1 else 'entries'}: {shown}"
    except OSError as e:
        held = f"it cannot be listed: {e.strerror}"
    return RunExists(
        f"{str(d)!r} is not an advlab run (no config.json written by advlab; {held}); advlab will not "
        "remove it or write into it: choose another --out"
    )


def _open_partial(final: Path, partial: Path, force: bool, resume: bool) -> tuple[bool, lock.Lock]:
    """Create or reuse ``partial`` and take its lock: (whether earlier work was found, the lock).
    A live run is never touched: :class:`RunInUse` names it, even with ``force``; nor is a directory that is not
    an advlab run. With ``force`` an interrupted run's files are removed only once its lock is held."""
    try:
        resumed = partial.is_dir()  # a real directory or nothing: _paths refused a link
        if resumed:
            live = lock.holder(partial)
            if live is not None:
                raise lock.RunInUse(live.describe(partial))
            if not _is_run(partial, partial=True):
                raise _not_a_run(partial)
            if not resume and not force:
                raise RunExists(
                    f"an interrupted run is in {partial}; use --resume to continue it or --force to start over"
                )
        partial.mkdir(parents=True, exist_ok=True)
        if (st := _lstat(partial)) is None or not stat.S_ISDIR(st.st_mode):  # replaced by a link meanwhile
            raise AdvlabError(f"{str(partial)!r} changed while advlab was opening it (a symbolic link?); not used")
        held = lock.acquire(partial)
    except OSError as e:
        raise _os_error(e, f"create the run directory {partial}") from None
    if force and resumed:
        try:
            _clear(partial)
        except OSError as e:
            lock.release(held)
            raise _os_error(e, f"clear the interrupted run in {partial}") from None
    return resumed and not force, held


def _clear(partial: Path) -> None:
    """Remove everything in ``partial`` but its lock (which this process holds), never following a link."""
    for p in partial.iterdir():
        if p.name == lock.LOCK_FILE:
            continue
        if stat.S_ISDIR(os.lstat(p).st_mode):
            shutil.rmtree(p)
        else:
            p.unlink()


def _land(partial: Path, final: Path, force: bool) -> None:
    """Rename the finished ``partial`` to ``final``. An existing ``final`` is swapped out only now, with ``force``,
    and only if it still is a real directory holding an advlab run: it is renamed onto a fresh empty directory of
    this process (nothing else is touched) and removed without following links."""
    st = _lstat(final)
    if st is None:
        os.replace(partial, final)
        return
    if not force or not stat.S_ISDIR(st.st_mode) or not _is_run(final):
        raise RunExists(
            f"{str(final)!r} appeared or changed while this run was written and is not a run advlab may "
            f"replace; the finished run is kept in {str(partial)!r}"
        )
    trash = Path(tempfile.mkdtemp(dir=final.parent, prefix=".advlab-old-"))
    os.replace(final, trash)
    try:
        os.replace(partial, final)
    except OSError:
        os.replace(trash, final)
        raise
    shutil.rmtree(trash, ignore_errors=True)


@contextmanager
def start(out: str | Path, config: Mapping[str, Any], *, force: bool = False, resume: bool = False) -> Iterator[Run]:
    """Open the run directory ``out`` for writing; on success it appears whole at ``out``.

    - ``out`` exists: :class:`RunExists` unless ``force`` (replaced at the end, atomically) or ``resume``
      (a finished run is left as it is: the body sees ``run.resumed`` and ``run.path == run.final``). Only a
      directory advlab recognises as a run (its ``config.json``) is replaced or resumed; anything else there is a
      :class:`RunExists` that says what it holds, with or without ``force``.
    - ``out.partial`` exists (an interrupted run): continued with ``resume``, else :class:`RunExists`;
      one a live process is writing (its lock, :mod:`advlab.runs.lock`): :class:`~advlab.runs.lock.RunInUse`,
      whatever ``force`` and ``resume`` say.
    - ``out`` or ``out.partial`` is a symbolic link: an :class:`AdvlabError` whatever the flags; links are never
      followed, and neither is ``LOCK``.
    - the body raises: the partial directory is removed unless it holds saved state (``run.save_state``)
      or the user pressed Ctrl-C; either way ``out`` is untouched. A full disk, an exceeded quota or a read-only
      file system keeps it and becomes an :class:`AdvlabError` that says to continue with ``--resume``.
    """
    final, partial = _paths(out)
    if final.is_dir():  # a real directory: _paths refused a link
        if not _is_run(final):
            raise _not_a_run(final)
        if not force:
            if not resume:
                raise RunExists(
                    f"run directory {final} exists already; use --force to replace it or --resume to continue it"
                )
            yield Run(final, final, resumed=True, config=dict(config))
            return
    resumed, held = _open_partial(final, partial, force, resume)
    run = Run(partial, final, resumed=resumed, config=dict(config))
    with _held(run, held):
        if not (partial / "config.json").exists():
            started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            run.save_json("config.json", {**_jsonable(dict(config)), "versions": versions(), "started": started})
        yield run
        (partial / "INTERRUPTED.json").unlink(missing_ok=True)
    landed = False
    try:
        _land(partial, final, force)  # with the lock held: no other process takes the directory before the rename
        landed = True
    except OSError as e:
        raise _os_error(e, f"rename the finished run {partial} to {final} (it is kept there)") from None
    finally:
        lock.release(held, final / lock.LOCK_FILE if landed else None)
    run.path = final


@contextmanager
def _held(run: Run, held: lock.Lock) -> Iterator[None]:
    """The body of :func:`start` with ``held`` (the run's lock) kept: on an error the lock is released and the
    partial directory kept (Ctrl-C, saved state, a full disk) or removed (see :func:`start`)."""
    try:
        yield
    except KeyboardInterrupt:
        try:
            run.save_json("INTERRUPTED.json", {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "resume_with": "--resume"})
        finally:
            lock.release(held)
        raise
    except OSError as e:
        lock.release(held)
        if e.errno in _FIXABLE:
            raise AdvlabError(
                f"{_FIXABLE[e.errno]} while writing {e.filename or run.path}; the work so far is kept in "
                f"{run.path}: make room and rerun the same command with --resume"
            ) from None
        _drop(run, run.path, run.resumed)
        raise
    except BaseException:
        lock.release(held)
        _drop(run, run.path, run.resumed)
        raise


def _drop(run: Run, partial: Path, resumed: bool) -> None:
    """After an error: remove a new partial directory that holds no saved state."""
    if not run.checkpointed and not resumed:
        shutil.rmtree(partial, ignore_errors=True)
