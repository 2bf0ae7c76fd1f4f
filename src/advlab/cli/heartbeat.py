"""Progress inside a batch: the model calls a command makes, shown while one long batch runs.

A batch of an attack, a set of prototype steps or a training epoch can run for minutes without a batch ending, so
the batch bar (:func:`advlab.cli.common.progress`) stands still. :func:`heartbeat` counts the calls of the model
(a forward pre-hook, removed at the end; a defended copy made by ``copy.deepcopy`` inside the block counts too) and
shows them: a tqdm counter on a terminal; elsewhere a first line on stderr :data:`FIRST` seconds into the block
(a newcomer sees early that the work is going on), then one every :data:`~advlab.cli.ticker.EVERY` seconds in
which no other progress line was written (``attack: batch 1/1, 1,234 model calls, 40 s``), written by
a background thread so that a line comes even while one call is slow. Nothing with ``--quiet`` nor on a torchrun
rank other than 0.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

import torch

from advlab.cli import ticker

#: seconds into the block before the first line (off a terminal); then one every ``every`` seconds
FIRST = 5.0


@dataclass
class Calls:
    """The model calls counted so far (``n``) since ``start`` (``time.monotonic()`` seconds)."""

    n: int = 0
    start: float = 0.0

    def line(self, desc: str, now: float) -> str:
        """``attack: batch 1/3, 1,234 model calls, 40 s`` (the batch as the running progress loop has it)."""
        where = f"{ticker.BOARD.where}, " if ticker.BOARD.where else ""
        return f"{desc}: {where}{self.n:,} model call{'s' if self.n != 1 else ''}, {now - self.start:.0f} s"


def _is_main_rank() -> bool:
    """Rank 0 of torchrun's processes (or no torchrun at all): the one that shows progress."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


@contextmanager
def heartbeat(
    model: torch.nn.Module,
    desc: str,
    quiet: bool = False,
    every: float = ticker.EVERY,
    stream: TextIO | None = None,
    first: float | None = None,
) -> Iterator[Calls]:
    """Count ``model``'s calls inside the block and show them on ``stream`` (default: stderr), as the module
    docstring says; ``every``: seconds between two lines off a terminal, ``first``: before the first one (default
    :data:`FIRST`, or ``every`` when that is shorter). Yields the :class:`Calls`."""
    out = stream if stream is not None else sys.stderr
    calls = Calls(start=time.monotonic())
    show = not quiet and _is_main_rank()
    bar = _bar(desc, out) if show and out.isatty() else None

    def count(_module: torch.nn.Module, _inputs: Any) -> None:
        calls.n += 1
        if bar is not None:
            bar.update(1)

    handle = model.register_forward_pre_hook(count)
    stop = threading.Event()
    beat = threading.Thread(
        target=_beat, args=(calls, desc, (min(FIRST, every) if first is None else first, every), out, stop), daemon=True
    )
    if show and bar is None:
        beat.start()
    try:
        yield calls
    finally:
        handle.remove()
        stop.set()
        if beat.is_alive():
            beat.join()
        if bar is not None:
            bar.close()


def _bar(desc: str, out: TextIO) -> Any:
    from tqdm import tqdm

    return tqdm(desc=f"{desc}: model calls", unit="call", leave=False, dynamic_ncols=True, file=out)


def _beat(calls: Calls, desc: str, gaps: tuple[float, float], out: TextIO, stop: threading.Event) -> None:
    """Until ``stop``: a line when it is due (``gaps``: (first, every), see :func:`_due`)."""
    while not stop.wait(max(0.0, _due(calls, *gaps) - time.monotonic())):
        now = time.monotonic()
        if now >= _due(calls, *gaps):
            ticker.write(calls.line(desc, now), out)


def _due(calls: Calls, first: float, every: float) -> float:
    """When the next line is due: ``first`` seconds after the start while no progress line was written since,
    else ``every`` seconds after the last one."""
    last = ticker.BOARD.last
    return calls.start + first if last < calls.start else last + every
