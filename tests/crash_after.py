"""``python -m tests.crash_after RANK N ARGV...``: the ``advlab ARGV`` command in which rank RANK ends its process
right after saving its N-th unit (``os._exit(3)``: no clean-up, like a killed process).

The fault is injected here, by wrapping :meth:`advlab.runs.shards.Shards.save` in this process before the command
runs; advlab itself has no test hook. ``tests/test_distributed.py`` launches it under torchrun.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

import torch

from advlab.cli import main
from advlab.runs import shards


def crash_after(rank: int, units: int) -> None:
    """From now on, rank ``rank`` ends its process right after saving its ``units``-th unit."""
    save = shards.Shards.save

    def save_then_die(
        self: shards.Shards, unit: int, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]
    ) -> None:
        save(self, unit, tensors, info)
        if self.dist.rank == rank and len(self.saved_here) >= units:
            os._exit(3)

    shards.Shards.save = save_then_die  # type: ignore[method-assign]  # the fault this module exists to inject


if __name__ == "__main__":
    crash_after(int(sys.argv[1]), int(sys.argv[2]))
    sys.argv = ["advlab", *sys.argv[3:]]  # the command line advlab records, as under ``-m advlab``
    raise SystemExit(main())
