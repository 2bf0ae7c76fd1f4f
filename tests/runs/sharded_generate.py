"""``torchrun ... -m tests.runs.sharded_generate OUT``: a library user's script that shards
:func:`advlab.prototypes.generate` over the ranks with :func:`advlab.runs.resumable`; rank 0 then merges every
rank's batches and saves the prototypes as ``OUT.safetensors`` (``tests/test_distributed.py`` compares them with
one process's)."""

from __future__ import annotations

import sys
from typing import Any

from safetensors.torch import save_file

from advlab import distributed, prototypes, runs, zoo

#: tiny settings: 3 starts x 4 targets in batches of 4 pairs (3 units)
SETTINGS: dict[str, Any] = {"start": "digits:test", "targets": "0-3", "batch_size": 4, "limit": 3}


def config() -> prototypes.Config:
    return prototypes.Config(steps=4, seed=5)


def main(out: str) -> None:
    dist = distributed.setup()
    model = zoo.load("digits-cnn")
    saved = {"config": repr(config()), **SETTINGS}
    with runs.resumable(out, runs.units.PROTOTYPES, config=saved, dist=dist) as work:
        prototypes.generate(model, config=config(), work=work, **SETTINGS)  # this rank's batches
    if dist.is_main():  # every rank's batches are in work.done now: generate merges them, evolving none
        merged = prototypes.generate(model, config=config(), work=work, **SETTINGS)
        save_file(merged.evolution.tensors(), f"{out}.safetensors")
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1])
