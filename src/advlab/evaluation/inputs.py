"""The data an evaluation reads: a data spec, an ``(x, y)`` pair, or an iterable of batches, read batch by batch.

A spec is streamed (:func:`advlab.data.open_for_model`: only the batches asked for are decoded, the next one in a
background thread while the current one is attacked), so an evaluation's memory does not grow with the number of
images, and a shard of a distributed run reads only its own batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from advlab.errors import AdvlabError

Batch = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class Indexed(Protocol):
    """Batches that can be read one at a time (:class:`advlab.data.Batches`, or an ``(x, y)`` pair cut in slices)."""

    def __len__(self) -> int: ...

    def batch(self, b: int) -> Batch: ...


#: the data forms an evaluation reads: a spec, an ``(x, y)`` pair, indexed batches, or any iterable of batches
Data = str | tuple[torch.Tensor, torch.Tensor] | Indexed | Iterable[tuple[torch.Tensor, torch.Tensor]]


class _Pair:
    """An ``(x, y)`` pair as indexed batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> None:
        if len(x) != len(y):
            raise AdvlabError(f"x has {len(x)} images but y has {len(y)} labels")
        self.x, self.y, self.batch_size = x, y, batch_size

    def __len__(self) -> int:
        return -(-len(self.x) // self.batch_size)

    def batch(self, b: int) -> Batch:
        s = slice(b * self.batch_size, (b + 1) * self.batch_size)
        return self.x[s], self.y[s]


class Source:
    """An evaluation's batches: ``first()`` (batch 0, which the diagnostics look at whether or not this call
    evaluates it; read once) and ``select(wanted)``, the ``(b, x, y)`` of the batches with ``wanted(b)``, in order.
    Indexed data reads only those (the next one decoded in a background thread); any other iterable is read
    through, the batches not wanted skipped."""

    def __init__(self, data: Indexed | Iterable[Batch], limit: int | None = None) -> None:
        self._indexed = data if isinstance(data, Indexed) else None
        self._iter = None if isinstance(data, Indexed) else iter(_limited(data, limit))
        self._first: Batch | None = None
        self._read_first = False

    def __len__(self) -> int:
        """The number of batches (for indexed data; an iterable's is not known before it is read)."""
        if self._indexed is None:
            raise TypeError("the number of batches of an iterable is not known in advance")
        return len(self._indexed)

    def first(self) -> Batch | None:
        if not self._read_first:
            self._read_first = True
            if self._indexed is not None:
                self._first = self._indexed.batch(0) if len(self._indexed) else None
            else:
                assert self._iter is not None
                self._first = next(self._iter, None)
        return self._first

    def select(self, wanted: Callable[[int], bool]) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        first = self.first()
        if first is None:
            return
        if self._indexed is None:
            assert self._iter is not None
            for b, (x, y) in enumerate(_chain(first, self._iter)):
                if wanted(b):
                    yield b, x, y
            return
        todo = [b for b in range(len(self._indexed)) if wanted(b)]
        yield from _prefetched(self._indexed, todo, first)


def _chain(first: Batch, rest: Iterator[Batch]) -> Iterator[Batch]:
    yield first
    yield from rest


def _prefetched(data: Indexed, todo: list[int], first: Batch) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """Batches ``todo`` of ``data``, each read in a background thread while the one before is in use (at most one
    batch ahead, so memory holds two batches)."""

    def read(b: int) -> Batch:
        return first if b == 0 else data.batch(b)

    with ThreadPoolExecutor(1) as pool:
        ahead: Future[Batch] | None = pool.submit(read, todo[0]) if todo else None
        for i, b in enumerate(todo):
            assert ahead is not None
            x, y = ahead.result()
            ahead = pool.submit(read, todo[i + 1]) if i + 1 < len(todo) else None
            yield b, x, y


def _limited(data: Iterable[Any], limit: int | None) -> Iterator[Batch]:
    """The ``(x, y)`` of each item of a DataLoader-like iterable, cut after ``limit`` samples."""
    seen = 0
    for item in data:
        xb, yb = item[0], item[1]
        if limit is not None:
            xb, yb = xb[: limit - seen], yb[: limit - seen]
        if len(xb) == 0:
            break
        seen += len(xb)
        yield xb, yb


def source(model: nn.Module, data: Data, batch_size: int = 256, limit: int | None = None) -> Source:
    """The batches of ``data`` for ``model``: a spec is streamed (read the way the model needs it: fitted to its
    input, labels mapped onto its classes, checked), an ``(x, y)`` pair is cut in slices, indexed batches
    (:class:`advlab.data.Batches`) are read as they are, any other iterable of ``(x, y)`` is read through.
    Images are (N, C, H, W) in [0, 1], labels (N,) class indices (-1 = unlabelled); ``limit``: the first samples."""
    if isinstance(data, str):
        return Source(open_spec(model, data, batch_size, limit))
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if limit is not None:
            x, y = x[:limit], y[:limit]
        return Source(_Pair(x, y, batch_size))
    return Source(data, limit)


def batches(model: nn.Module, data: Data, batch_size: int = 256, limit: int | None = None) -> Iterator[Batch]:
    """``(x, y)`` batches from a data spec (read the way the model needs it), an ``(x, y)`` pair, or a DataLoader.

    Images are (N, C, H, W) in [0, 1], labels (N,) class indices (-1 = unlabelled); ``limit``: the first samples only.
    """
    for _, x, y in source(model, data, batch_size, limit).select(lambda b: True):
        yield x, y


class _Predicted:
    """Indexed batches whose labels are the model's clean predictions (see :func:`predicted_labels`)."""

    def __init__(self, data: Indexed, model: nn.Module) -> None:
        self.data, self.model = data, model

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, b: int) -> Batch:
        x, _ = self.data.batch(b)
        return x, predicted_labels(self.model, x, len(x))


def with_predicted_labels(data: Indexed, model: nn.Module) -> Indexed:
    """``data`` with each batch's labels replaced by ``model``'s clean argmax on it (unlabelled images: clean accuracy
    is then 1 by definition and robust accuracy the share of predictions an attack cannot change)."""
    return _Predicted(data, model)


def open_spec(model: nn.Module, spec: str, batch_size: int, limit: int | None = None) -> Indexed:
    """``spec`` streamed in batches for ``model``: for a zoo model :func:`advlab.zoo.open_data` (the CLI's path: fitted
    to its input, labels mapped onto its classes), each batch checked as it is read; as it is for any other model."""
    from advlab import data as data_mod
    from advlab import zoo

    info = getattr(model, "info", None)
    if not isinstance(info, zoo.ModelInfo):
        return data_mod.open(spec, batch_size, limit=limit)
    return _Checked(zoo.open_data(spec, info, batch_size, limit=limit), info, f"data {spec!r}")


class _Checked:
    """Indexed batches whose images are checked against the model's input as they are read."""

    def __init__(self, data: Indexed, info: Any, what: str) -> None:
        self.data, self.info, self.what = data, info, what

    def __len__(self) -> int:
        return len(self.data)

    def batch(self, b: int) -> Batch:
        from advlab import zoo

        x, y = self.data.batch(b)
        zoo.check_input(self.info, x, what=self.what)
        return x, y


def predicted_labels(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(N,) int64 on the CPU: ``argmax f(x)``, the model's clean predictions on ``x`` (N, C, H, W) in [0, 1],
    batch by batch on the model's device, without gradients. As labels (``advlab eval --labels predicted``) they
    make clean accuracy 1 by definition and robust accuracy the fraction of predictions an attack cannot change.
    Outputs of the wrong shape or NaN / infinite logits are an :class:`AdvlabError`."""
    from advlab import zoo
    from advlab.device import device_of
    from advlab.evaluation.probes import require_finite

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
