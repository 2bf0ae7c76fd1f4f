"""Sharding a command's work over the processes that ``torchrun`` starts.

    torchrun --nproc_per_node=2 -m advlab eval --model digits-cnn --data digits:test --eps 0.1 --out runs/ev

Every process (rank) parses the same arguments and loads the same model and data. The work is cut into
*units*, numbered 0, 1, ..., each done by one rank and saved on its own in the run directory:

========================  =====================================================================
command                   unit
========================  =====================================================================
``advlab eval``           a batch of ``--batch-size`` samples (``evaluate``'s batch index)
``advlab attack``         a batch of ``--batch-size`` images
``advlab prototypes``     a batch of (start, target) pairs (``generate``'s batch index)
``advlab study prune``    a defense setting (unit 0 is the undefended model)
========================  =====================================================================

Unit ``i`` belongs to rank ``i % world_size`` (round robin: deterministic, and neighbouring units, which
tend to cost alike, go to different ranks). A unit's result does not depend on which rank computes it or
on what ran before it on that rank (attacks are seeded per call; a prototype batch is seeded by its index),
so rank 0's merge of all units equals a single-process run with the same seed. A library loop is sharded the
same way: ``runs.resumable(out, units, dist=distributed.setup())`` or ``runs.run_job(job, dist=...)``
(:mod:`advlab.runs`), in a script that ``torchrun`` starts.

The process group only carries small control messages at the start (rank 0 opens the run directory and
tells the others where it is, or that it could not); it always uses the ``gloo`` backend, also when the
work runs on GPUs, because no tensor ever crosses it. The end is coordinated through the run directory,
which must therefore be on a file system every rank sees (a shared file system across nodes): each rank
writes a status file when its shard is done, and rank 0 waits for them.

``ADVLAB_DIST_TIMEOUT`` (minutes, default 30) bounds every wait: the start-up messages, and rank 0's wait
for the other ranks' status files, which counts from the last unit any rank finished (a long shard is no
time-out as long as units keep arriving). A rank that raises prints its error and exits, and ``torchrun``
then stops the others, as it does when a rank dies; a rank other than 0 also leaves its error in its status
file, so that a rank 0 still waiting (a launcher that does not stop the others) ends with a one-line message
naming it instead of waiting for the time-out. Either way the saved units stay, and ``--resume`` recomputes
only the missing ones.

torchrun's own parser reads the whole command line first and rejects an option it takes for an ambiguous
abbreviation of its own, even after the module name: ``advlab prototypes --start`` (``--start-method`` or
``--start_method``?) must be written ``-s`` under torchrun. No other option of these commands collides.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from advlab.errors import AdvlabError

TIMEOUT_ENV = "ADVLAB_DIST_TIMEOUT"
DEFAULT_TIMEOUT_MINUTES = 30.0


def timeout() -> datetime.timedelta:
    """The time-out of every wait between ranks: ``$ADVLAB_DIST_TIMEOUT`` minutes (default 30)."""
    text = os.environ.get(TIMEOUT_ENV, "").strip()
    if not text:
        return datetime.timedelta(minutes=DEFAULT_TIMEOUT_MINUTES)
    try:
        minutes = float(text)
    except ValueError:
        raise AdvlabError(f"{TIMEOUT_ENV} must be a number of minutes, got {text!r}") from None
    if not minutes > 0:
        raise AdvlabError(f"{TIMEOUT_ENV} must be positive, got {text!r}")
    return datetime.timedelta(minutes=minutes)


def _env_int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        return int(text)
    except ValueError:
        raise AdvlabError(f"environment variable {name} must be an integer, got {text!r}") from None


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks: ``rank`` of ``world_size``, ``local_rank`` on its node, and
    the ``device`` its work runs on. A single process is rank 0 of 1."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def is_main(self) -> bool:
        """Rank 0: it opens the run directory, merges the units and writes the results."""
        return self.rank == 0

    def owner(self, unit: int) -> int:
        """The rank that computes ``unit``: ``unit % world_size``."""
        return unit % self.world_size

    def owns(self, unit: int) -> bool:
        return self.owner(unit) == self.rank

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as td

            td.barrier()

    def share(self, obj: Any, src: int = 0) -> Any:
        """``obj`` as rank ``src`` has it, on every rank (a collective: every rank calls it, in the same order)."""
        if not self.distributed:
            return obj
        import torch.distributed as td

        box = [obj if self.rank == src else None]
        td.broadcast_object_list(box, src=src)
        return box[0]


def setup(device: str | torch.device | None = None) -> Dist:
    """Read torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``)
    and join the process group when there is more than one rank; without torchrun, rank 0 of 1.

    ``device``: where the work runs. ``"cuda"`` under torchrun means ``cuda:LOCAL_RANK`` (one GPU per process);
    an explicit index is kept. Default: the CPU.
    """
    world = _env_int("WORLD_SIZE", 1)
    rank, local = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise AdvlabError(f"RANK={rank} and WORLD_SIZE={world} do not make sense")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise AdvlabError("--device cuda: no CUDA device is available here")
        if dev.index is None:
            dev = torch.device("cuda", local % torch.cuda.device_count() if world > 1 else torch.cuda.current_device())
        torch.cuda.set_device(dev)
    if world > 1:
        import torch.distributed as td

        if not td.is_available():
            raise AdvlabError("this torch build has no torch.distributed; run without torchrun")
        if not td.is_initialized():
            td.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout())
    return Dist(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown() -> None:
    """Leave the process group (a no-op when none was joined)."""
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
