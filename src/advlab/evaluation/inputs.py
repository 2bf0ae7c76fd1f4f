"""The data an evaluation reads: a data spec, an ``(x, y)`` pair, or an iterable of batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from advlab.errors import AdvlabError

Data = str | tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


def batches(
    model: nn.Module, data: Data, batch_size: int = 256, limit: int | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches from a data spec (read the way the model needs it), an ``(x, y)`` pair, or a DataLoader.

    Images are (N, C, H, W) in [0, 1], labels (N,) class indices (-1 = unlabelled); ``limit``: the first samples only.
    """
    if isinstance(data, str):
        data = _load_spec(model, data, limit)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if limit is not None:
            x, y = x[:limit], y[:limit]
        if len(x) != len(y):
            raise AdvlabError(f"x has {len(x)} images but y has {len(y)} labels")
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    seen = 0
    for item in data:  # type: ignore[union-attr]
        xb, yb = item[0], item[1]
        if limit is not None:
            xb, yb = xb[: limit - seen], yb[: limit - seen]
        if len(xb) == 0:
            break
        seen += len(xb)
        yield xb, yb


def _load_spec(model: nn.Module, spec: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from advlab import data as data_mod
    from advlab import zoo

    info = getattr(model, "info", None)
    if isinstance(info, zoo.ModelInfo):
        x, y, _ = data_mod.load_for_model(spec, info.input_size, info.channels, limit=limit)
        zoo.check_input(info, x, what=f"data {spec!r}")
        zoo.check_labels(info, y, what=f"data {spec!r}")
        return x, y
    return data_mod.load(spec, limit=limit)


def to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """``t`` on ``dev``; a CPU batch bound for a GPU goes through pinned memory (asynchronous copy)."""
    if dev.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)
