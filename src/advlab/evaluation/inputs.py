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
    for item in data:
        xb, yb = item[0], item[1]
        if limit is not None:
            xb, yb = xb[: limit - seen], yb[: limit - seen]
        if len(xb) == 0:
            break
        seen += len(xb)
        yield xb, yb


def _load_spec(model: nn.Module, spec: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``spec`` read for a zoo model (fitted to its input, labels mapped onto its classes by name, checked: the
    same as the CLI's ``load_data_for``), or as it is for any other model."""
    from advlab import data as data_mod
    from advlab import zoo

    info = getattr(model, "info", None)
    if isinstance(info, zoo.ModelInfo):
        x, y, _ = data_mod.load_for_model(
            spec, info.input_size, info.channels, limit=limit, model_classes=info.class_names
        )
        zoo.check_input(info, x, what=f"data {spec!r}")
        zoo.check_labels(info, y, what=f"data {spec!r}")
        return x, y
    return data_mod.load(spec, limit=limit)


def predicted_labels(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N,) int64 on the CPU: ``argmax f(x)``, the model's clean predictions on ``x`` (N, C, H, W) in [0, 1],
    batch by batch on the model's device, without gradients. As labels (``advlab eval --labels predicted``) they
    make clean accuracy 1 by definition and robust accuracy the fraction of predictions an attack cannot change.
    Outputs of the wrong shape or NaN / infinite logits are an :class:`AdvlabError`."""
    from advlab import zoo
    from advlab.device import device_of
    from advlab.evaluation.diagnostics import require_finite

    dev, out = device_of(model), []
    with torch.inference_mode():
        for i in range(0, len(x), batch_size):
            logits = model(x[i : i + batch_size].to(dev))
            zoo.check_output(logits, len(x[i : i + batch_size]))
            require_finite(logits, "clean inputs")
            out.append(logits.argmax(1).cpu())
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long)


def to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """``t`` on ``dev``; a CPU batch bound for a GPU goes through pinned memory (asynchronous copy)."""
    if dev.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)
