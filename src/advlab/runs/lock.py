"""Who is writing a run: a lock file in the ``.partial`` directory, so that two processes never share one.

The lock is ``LOCK`` (JSON: pid, host, when), created with ``O_CREAT | O_EXCL``, so of two processes that try
at once exactly one gets it. It is stale, and taken over, when it names a process on this host that is no
longer alive (a run killed with SIGKILL); a lock held on another host is never taken over (its pid means
nothing here): remove the file by hand once that process is gone.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from advlab.errors import AdvlabError

LOCK_FILE = "LOCK"


class RunInUse(AdvlabError):
    """Another live process is writing this run."""


@dataclass(frozen=True)
class Holder:
    """The process that holds a lock: ``pid`` on ``host``."""

    pid: int
    host: str

    def alive(self) -> bool:
        """Whether the holder still runs (a holder on another host is assumed to; this very process is not a
        holder: its lock is left over from an earlier run in it, e.g. an in-process call of the CLI)."""
        if self.host != socket.gethostname():
            return True
        if self.pid == os.getpid():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # alive, owned by another user
            return True
        return _not_zombie(self.pid)

    def describe(self, partial: Path) -> str:
        text = f"{partial} is in use by pid {self.pid} on {self.host} (a run is writing it); wait for it to finish"
        if self.host != socket.gethostname():
            text += f" (if that process is gone, remove {partial / LOCK_FILE})"
        return text


def _not_zombie(pid: int) -> bool:
    """False for a process that has exited but was not reaped yet (Linux /proc; True where it cannot be read)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]


def holder(partial: Path) -> Holder | None:
    """The live holder of ``partial``'s lock, or None (no lock, a stale one, or one that cannot be read)."""
    try:
        info = json.loads((partial / LOCK_FILE).read_text())
        h = Holder(int(info["pid"]), str(info["host"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return h if h.alive() else None


def acquire(partial: Path) -> Path:
    """Take ``partial``'s lock for this process (a stale one is taken over); :class:`RunInUse` if a live
    process holds it. Returns the lock file."""
    path = partial / LOCK_FILE
    body = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for _ in range(3):
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            live = holder(partial)
            if live is not None:
                raise RunInUse(live.describe(partial)) from None
            path.unlink(missing_ok=True)  # stale: take it over
            continue
        with os.fdopen(fd, "w") as f:
            f.write(body + "\n")
        return path
    raise RunInUse(f"{partial} is being locked by another process; try again")


def release(lock: Path) -> None:
    """Drop the lock if it is still this process's (best effort: on a file system that turned read-only it
    stays, and is stale once this process ends)."""
    try:
        if int(json.loads(lock.read_text())["pid"]) == os.getpid():
            lock.unlink()
    except (OSError, ValueError, KeyError, TypeError):
        pass
