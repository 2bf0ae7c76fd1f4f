"""adversarials.safetensors of ``advlab attack`` and ``advlab eval``, written one batch at a time.

The commands keep only small per-sample columns in memory; each batch's adversarial images are in its unit file
(``batch_00007.safetensors``, until the run is written) and its clean images are read again from the data. So
writing every image and its adversarial example never holds more than one batch of them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import torch

from advlab import runs
from advlab.evaluation.inputs import Indexed
from advlab.runs.tensorfile import tensor_file

FILE = "adversarials.safetensors"


def unit_adversarials(run_dir: runs.Run, b: int) -> torch.Tensor:
    """The adversarial images unit ``b`` of the run saved (its ``x_adv``)."""
    state = run_dir.load_state(f"batch_{b:05d}")
    if state is None or "x_adv" not in state[0]:
        raise FileNotFoundError(f"batch {b} of {run_dir.path} holds no adversarial images")
    return state[0]["x_adv"]


def write(
    run_dir: runs.Run, data: Indexed, columns: Mapping[str, torch.Tensor], metadata: Mapping[str, str]
) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Write adversarials.safetensors: ``x`` (the images of ``data``, in [0, 1]), ``x_adv`` (each unit's saved
    adversarial images) and the per-sample ``columns`` (N rows each), yielding each batch's (first row, x, x_adv)
    as it is written, for the pictures. The file appears when the generator is exhausted."""
    first, _ = data.batch(0)
    n = len(next(iter(columns.values())))
    shape = (n, *first.shape[1:])
    specs = {"x": (shape, torch.float32), "x_adv": (shape, torch.float32)}
    specs.update({k: (tuple(v.shape), v.dtype) for k, v in columns.items()})
    with tensor_file(run_dir.file(FILE), specs, metadata) as out:
        for k, v in columns.items():
            out.write(k, 0, v.contiguous())
        at = 0
        for b in range(len(data)):
            x = data.batch(b)[0] if b else first
            x_adv = unit_adversarials(run_dir, b)
            out.write("x", at, x.float())
            out.write("x_adv", at, x_adv.float())
            yield at, x, x_adv
            at += len(x)
