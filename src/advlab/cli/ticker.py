"""Progress as plain lines on stderr, for runs whose stderr is not a terminal (a log file, a batch job, a pipe).

A tqdm bar needs a terminal; elsewhere a long command would be silent for minutes. :func:`lines` wraps the
iterable a loop runs over and, after an item finishes, writes one line when :data:`EVERY` seconds have passed
since the last one (``evaluate: 3/10 batches, 12 s, about 28 s left``), and a last line at the end if it wrote
any: a run shorter than :data:`EVERY` seconds stays silent. ``--quiet`` turns it off with the bars.

:data:`BOARD` is what the progress of one command shares: when the last line was written and which item the loop
is on, so that the lines from inside a batch (:mod:`advlab.cli.heartbeat`) say "batch 2/10" and do not come
between two lines of the loop.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import TextIO, TypeVar

T = TypeVar("T")

#: seconds between two progress lines
EVERY = 10.0


@dataclass
class Board:
    """The progress lines of this process: ``last``, when the last one was written (``time.monotonic()``), and
    ``where`` the running loop is ("batch 2/10"; empty outside a loop)."""

    last: float = -math.inf
    where: str = ""


BOARD = Board()


def write(text: str, stream: TextIO | None = None) -> None:
    """One progress line on ``stream`` (default stderr), flushed, and noted on :data:`BOARD`."""
    out = stream if stream is not None else sys.stderr
    out.write(text + "\n")
    out.flush()
    BOARD.last = time.monotonic()


def plural(noun: str) -> str:
    return noun + ("es" if noun.endswith(("ch", "sh", "s", "x")) else "s")


def _line(desc: str, done: int, total: int | None, unit: str, elapsed: float) -> None:
    of = f"/{total}" if total is not None else ""
    text = f"{desc}: {done}{of} {plural(unit)}, {elapsed:.0f} s"
    if total and 0 < done < total:
        text += f", about {elapsed / done * (total - done):.0f} s left"
    write(text)


def lines(items: Iterable[T], desc: str = "work", unit: str = "item", total: int | None = None) -> Iterator[T]:
    """``items``, with a progress line on stderr every :data:`EVERY` seconds (see the module docstring)."""
    if total is None and isinstance(items, Sized):
        total = len(items)
    start = last = time.monotonic()
    done, wrote = 0, False
    of, outer = (f"/{total}" if total is not None else ""), BOARD.where
    try:
        for item in items:
            BOARD.where = f"{unit} {done + 1}{of}"
            yield item
            done += 1
            now = time.monotonic()
            if now - last >= EVERY:
                _line(desc, done, total, unit, now - start)
                last, wrote = now, True
        if wrote and now != last:
            _line(desc, done, total, unit, time.monotonic() - start)
    finally:
        BOARD.where = outer
