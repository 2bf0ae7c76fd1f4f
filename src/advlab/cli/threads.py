"""How many CPU threads a command's torch takes: the cores the machine's load leaves free, or ``--threads N``.

On a busy 2-core machine, torch's default (one thread per core) made ``attack`` use 1.9x the CPU of one thread and
``train`` 15x per step, for no gain in wall time: the threads fight over cores that other processes hold. Every
command therefore runs at :func:`free_threads` unless ``--threads`` says otherwise; the number is a property of the
machine, not of the run (it is no run setting: the results do not depend on it beyond the last bits).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

#: the most torch threads --threads asks for: 4 per core (more only fight over the cores)
MAX_THREADS = 4 * (os.cpu_count() or 1)


def free_threads(most: int) -> int:
    """The cores the 1-minute load average leaves free, ``round(cpus - load)``, shared by the processes torchrun
    started on this node (``LOCAL_WORLD_SIZE``), at least 1 and at most ``most``; ``most`` where the system has no
    load average (Windows)."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        return most
    try:
        local_ranks = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local_ranks = 1
    return max(1, min(most, round(((os.cpu_count() or 1) - load) / local_ranks)))


@contextmanager
def torch_threads(requested: int | None) -> Iterator[int]:
    """Run the block at ``requested`` torch threads, else at :func:`free_threads` (at most torch's current
    number); yields the number and restores the previous one afterwards (a command run in-process, as the tests
    do, leaves its caller's setting alone)."""
    import torch

    before = torch.get_num_threads()
    n = requested or free_threads(before)
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)
