"""Who is writing a run: a lock file in the ``.partial`` directory, so that two processes never share one.

The lock is ``LOCK``, opened without following symbolic links, and held with an OS file lock
(``flock(LOCK_EX | LOCK_NB)``) on an open descriptor for the whole run: the kernel lets exactly one process hold
it and drops it when that process ends, however it ends (SIGKILL included), so taking over a dead run's lock is
one atomic step and no process ever removes a lock another one holds. Once a process holds the file lock it checks
that the descriptor is still the file at ``LOCK`` (else it was replaced meanwhile: it tries again) and writes its
pid, host and start time into it, for the message "in use by pid N on HOST".

A ``LOCK`` nobody holds the file lock of is stale and taken over, except one whose recorded host is another
machine (its file lock may not reach across a network file system: remove the file by hand once that process is
gone) and one written without a file lock (an older advlab, or by hand) that names a live process on this host.
A lock this very process still holds from an earlier run in it (an in-process call of the CLI) never blocks it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from advlab.errors import AdvlabError

LOCK_FILE = "LOCK"

#: tries of flock on a lock someone holds before it counts as in use (a holder() probe holds it for microseconds)
_BUSY_TRIES = 5

_OPEN = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC  # never through a symlink, never blocking on a FIFO


class RunInUse(AdvlabError):
    """Another live process is writing this run."""


@dataclass(frozen=True)
class Holder:
    """The process a lock names: ``pid`` on ``host`` (None: not written yet); ``flocked``: it held the file lock."""

    pid: int | None
    host: str | None
    flocked: bool = False

    def alive(self) -> bool:
        """Whether the holder still runs (a holder on another host is assumed to; this very process is not a
        holder: its lock is left over from an earlier run in it, e.g. an in-process call of the CLI)."""
        if self.host != socket.gethostname():
            return True
        if self.pid is None or self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by another user
            return True
        except OverflowError:  # not a pid at all
            return False
        return _not_zombie(self.pid)

    def blocks(self) -> bool:
        """Whether this lock counts as held although nobody holds its file lock: it was taken on another host,
        or without a file lock (an older advlab, or by hand) by a process on this host that is still alive."""
        if self.pid is None:
            return False
        return self.host != socket.gethostname() or (not self.flocked and self.alive())

    def describe(self, partial: Path) -> str:
        if self.pid is None:
            return f"{partial} is in use by another process (a run is starting to write it); wait for it to finish"
        text = f"{partial} is in use by pid {self.pid} on {self.host} (a run is writing it); wait for it to finish"
        if self.host != socket.gethostname():
            text += f" (if that process is gone, remove {partial / LOCK_FILE})"
        return text


@dataclass
class Lock:
    """A lock this process holds: the file (``path``, where it was taken) and the descriptor holding it."""

    path: Path
    fd: int


#: the locks this process holds, by (st_dev, st_ino) of their LOCK file
_HELD: dict[tuple[int, int], Lock] = {}


def _not_zombie(pid: int) -> bool:
    """False for a process that has exited but was not reaped yet (Linux /proc; True where it cannot be read)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[:1] != ["Z"]


def _refuse(path: Path, what: str) -> AdvlabError:
    return AdvlabError(f"{str(path)!r} is {what}, not advlab's lock file; advlab will not use it (remove it by hand)")


def _open(path: Path, create: bool) -> int | None:
    """A descriptor of the regular file ``path`` (created if ``create``), never through a symbolic link; None if
    it does not exist. Anything else at ``path`` is an :class:`AdvlabError`."""
    try:
        st = os.lstat(path)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file")
    except FileNotFoundError:
        if not create:
            return None
    try:
        fd = os.open(path, (os.O_RDWR | os.O_CREAT if create else os.O_RDONLY) | _OPEN, 0o666)
    except FileNotFoundError:
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:  # became a symlink since the lstat
            raise _refuse(path, "a symbolic link") from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (create and st.st_nlink > 1):  # a hard link's other names would be written
        os.close(fd)
        raise _refuse(path, "not a regular file" if not stat.S_ISREG(st.st_mode) else "a file with other hard links")
    return fd


def _flock(fd: int) -> bool:
    """Take the file lock on ``fd`` without waiting: whether it was free."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _read(fd: int) -> Holder | None:
    """The holder written in the lock file open at ``fd`` (None: empty or unreadable, e.g. being written)."""
    try:
        info = json.loads(os.pread(fd, 4096, 0))
        written = Holder(int(info["pid"]), str(info["host"]), bool(info.get("flock", False)))
    except (OSError, ValueError, KeyError, TypeError, OverflowError):
        return None
    return written if written.pid is not None and written.pid > 0 else None  # kill(0 or -n) means process groups


def _key(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _is_at(fd: int, path: Path) -> bool:
    """Whether the file open at ``fd`` is still the one at ``path`` (not unlinked or replaced since it was opened)."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == _key(fd)


def holder(partial: Path) -> Holder | None:
    """The live holder of ``partial``'s lock, or None (no lock, a stale one, or this process's own).

    A process that holds the file lock holds the run; a lock nobody holds counts only where :meth:`Holder.blocks`
    says so. A ``LOCK`` that is a symbolic link or not a regular file is an :class:`AdvlabError`."""
    fd = _open(partial / LOCK_FILE, create=False)
    if fd is None:
        return None
    try:
        written = _read(fd)
        if _key(fd) in _HELD:
            return None
        if not _flock(fd):
            return written or Holder(None, None)
        return written if written is not None and written.blocks() else None
    finally:
        os.close(fd)  # drops the probe's file lock


def acquire(partial: Path) -> Lock:
    """Take ``partial``'s lock for this process (a stale one is taken over atomically); :class:`RunInUse` if a
    live process holds it. Release it with :func:`release`."""
    path = partial / LOCK_FILE
    busy = 0
    for _ in range(50):
        fd = _open(path, create=True)
        if fd is None:  # the directory went away meanwhile
            raise AdvlabError(f"{str(partial)!r} was removed while advlab was opening it")
        try:
            held = _take(fd, path)
        except BaseException:
            os.close(fd)
            raise
        if isinstance(held, Lock):
            return held
        os.close(fd)
        if held is not None:  # someone holds the file lock: a run, or a holder() probe for a moment
            busy += 1
            if busy >= _BUSY_TRIES:
                raise RunInUse(held.describe(partial))
            time.sleep(0.02)
    raise RunInUse(f"{partial} is being locked by another process; try again")


def _take(fd: int, path: Path) -> Lock | Holder | None:
    """One try of :func:`acquire` on ``fd``, open at ``path``: the lock, the holder that has it, or None (the file
    was replaced meanwhile: try again)."""
    key = _key(fd)
    if not _flock(fd):
        if key in _HELD:  # this process's own, left over from an earlier in-process run: let go of it and retry
            _let_go(_HELD[key])
            return None
        return _read(fd) or Holder(None, None)
    if not _is_at(fd, path):
        return None
    written = _read(fd)
    if written is not None and written.blocks():
        raise RunInUse(written.describe(path.parent))
    since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since, "flock": True})
    os.ftruncate(fd, 0)
    os.pwrite(fd, (body + "\n").encode(), 0)
    held = _HELD[key] = Lock(path, fd)
    return held


def release(lock: Lock, where: Path | None = None) -> None:
    """Drop ``lock``: remove its file (at ``where`` if its directory was renamed since) if that is still the very
    file this process locked, then let go of the file lock. Never removes a lock another process has taken since;
    best effort (on a file system that turned read-only the file stays, and is stale once the lock is let go).
    Releasing twice does nothing."""
    if lock.fd < 0:
        return
    try:
        path = where if where is not None else lock.path
        if _is_at(lock.fd, path):
            os.unlink(path)
    except OSError:
        pass
    finally:
        _let_go(lock)


def _let_go(lock: Lock) -> None:
    """Close ``lock``'s descriptor (which lets go of its file lock) and forget it."""
    _HELD.pop(_key(lock.fd), None)
    os.close(lock.fd)
    lock.fd = -1
