"""Opening the files a user names: regular files only, opened so that nothing can block, names shown on one line.

Every file advlab reads on the user's word (an image, a ``tensors:`` file, a checkpoint, an official data file)
is opened here. The rule: the path, with symlinks followed, must be a regular file. A FIFO would block the
open (or the first read) forever, ``/dev/zero`` or ``/dev/stdin`` never ends, a directory or socket is no data;
each is one :class:`~advlab.errors.AdvlabError` naming the path and what it is. The check is made twice: with
``os.stat`` before opening (a clear message), and with ``fstat`` of the opened descriptor, which is opened with
``O_NONBLOCK`` so that a FIFO swapped in between the two cannot hang the open.

File names in messages go through :func:`show`: ``repr``-escaped, so a newline (or any control character) in a
name never makes a second line, and cut in the middle when very long.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path
from typing import BinaryIO

from advlab.errors import AdvlabError

#: file names longer than this many characters are shown cut in the middle
SHOW_CHARS = 120

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),  # seen only by callers that lstat
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def show(path: str | os.PathLike[str]) -> str:
    """``path`` for a one-line message: ``repr`` of its text (quotes, ``\\n`` escaped), the middle of a name
    longer than :data:`SHOW_CHARS` characters replaced by ``...``."""
    text = str(path)
    if len(text) > SHOW_CHARS:
        text = f"{text[: SHOW_CHARS // 3]}...{text[-(2 * SHOW_CHARS) // 3 :]}"
    return repr(text)


def kind(mode: int) -> str:
    """What a non-regular file is, in words ("a directory", "a FIFO (named pipe)", ...)."""
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _os_error(path: str | os.PathLike[str], what: str, e: OSError) -> AdvlabError:
    """One line for an ``OSError`` of ``stat`` / ``open`` on a user's file name."""
    if e.errno == errno.ENAMETOOLONG:
        return AdvlabError(f"{what} name too long for the file system: {show(path)}")
    if e.errno == errno.ELOOP:
        return AdvlabError(f"{what} {show(path)}: too many levels of symbolic links (a symlink loop?)")
    if e.errno in (errno.EACCES, errno.EPERM):
        return AdvlabError(f"{what} {show(path)}: permission denied")
    reason = os.strerror(e.errno) if e.errno else type(e).__name__
    return AdvlabError(f"cannot read {what} {show(path)}: {reason}")


def stat_input(path: str | os.PathLike[str], what: str = "file") -> os.stat_result | None:
    """``os.stat(path)`` (symlinks followed), or None when nothing is there (a dangling symlink included);
    a name the file system refuses (too long, a NUL byte, a symlink loop, no permission) is an AdvlabError."""
    try:
        return os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise _os_error(path, what, e) from None
    except ValueError:  # "embedded null byte"
        raise AdvlabError(f"{what} name {show(path)} holds a NUL byte") from None


def is_regular(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is (a symlink to) a regular file; any error means no (for filtering listings)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def require_regular(path: str | os.PathLike[str], what: str = "file") -> os.stat_result:
    """``os.stat`` of ``path``, which must be (a symlink to) a regular file, else one AdvlabError."""
    st = stat_input(path, what)
    if st is None:
        raise AdvlabError(f"no such {what}: {show(path)}")
    if not stat.S_ISREG(st.st_mode):
        raise AdvlabError(f"{what} {show(path)} is {kind(st.st_mode)}, not a regular file")
    return st


def open_regular(path: str | os.PathLike[str], what: str = "file") -> BinaryIO:
    """Open a regular file for binary reading; never blocks, whatever is at ``path`` now or by the time it opens.

    Checked with ``os.stat`` first (:func:`require_regular`), then opened with ``O_NONBLOCK | O_NOCTTY`` and
    checked again with ``fstat`` of the descriptor (a FIFO put in its place meanwhile opens without blocking
    and is refused); the descriptor is set back to blocking for ordinary reads.
    """
    require_regular(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise _os_error(path, what, e) from None
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise AdvlabError(f"{what} {show(path)} is {kind(mode)}, not a regular file")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def descriptor_path(fh: BinaryIO, path: str | os.PathLike[str]) -> str:
    """A name that reopens exactly the file ``fh`` has open, for libraries that take only a file name
    (safetensors): ``/proc/self/fd/N`` where the system has it, else ``path`` itself (checked already)."""
    proc = Path(f"/proc/self/fd/{fh.fileno()}")
    return str(proc) if Path("/proc/self/fd").is_dir() and proc.exists() else str(path)


def read_at_most(fh: BinaryIO, limit: int, path: str | os.PathLike[str], what: str) -> bytes:
    """All of ``fh`` from where it is, refusing (before reading further) a stream longer than ``limit`` bytes."""
    data = fh.read(limit + 1)
    if len(data) > limit:
        raise AdvlabError(f"{what} {show(path)} holds more than the {limit:,} bytes it may (not the expected file?)")
    return data
