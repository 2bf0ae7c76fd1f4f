"""Reading a data set for a model, batch by batch: the one data path of the library and the CLI.

:func:`open_for_model` answers "these data, for this model": which images (``subset``, ``sample``, ``limit``),
at which size (the model's declared input size, else the images' own shared size; never upscaled without a note),
with which channels, and with labels mapped onto the model's classes (:func:`~advlab.data.classes.map_classes`).
The :class:`Batches` it returns reads a folder batch by batch (at most :data:`PREFETCH` batches decoded ahead, in
worker threads), so memory does not grow with the number of images; ``batch(b)`` reads batch ``b``'s files only
(a torchrun rank reads its own shard). :func:`load_for_model` and :func:`load` stack the same batches.
"""

from __future__ import annotations

import ctypes
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from functools import cache
from pathlib import Path

import torch

from advlab.data import sets
from advlab.data.classes import LabelMapping, map_classes
from advlab.data.files import open_regular, read_at_most, show
from advlab.data.images import image_header, read_image
from advlab.data.specs import (
    DEFAULT_PHOTO_SIZE,
    DatasetInfo,
    Source,
    _Dataset,
    _Files,
    _Tensors,
    dataset_items,
    dataset_labels,
    describe_source,
    finish,
    resolve,
    source_names,
)
from advlab.errors import AdvlabError

#: batches decoded ahead of the one being used (memory: at most PREFETCH + 1 batches of images at once)
PREFETCH = 2
#: image headers read to tell whether a declared input size upscales the images (the first ones selected)
UPSCALE_CHECK = 256
#: the largest subset file read, in bytes (RobustBench's 5,000 ImageNet names take 200 KB)
MAX_SUBSET_BYTES = 64 << 20
#: batches of fewer float32 image bytes are read without :func:`give_back_freed_memory` first: glibc's default mmap
#: threshold (128 KiB), below which no batch block is mmapped and so none raises the threshold; the trim's page
#: faults cost a small model's training steps ~10% of their CPU (digits-cnn, 8x8 batches of 64: 1.35 -> 1.50 s)
TRIM_BYTES = 128 << 10

Batch = tuple[torch.Tensor, torch.Tensor]


class Batches:
    """Batches ``(x, y)`` of a data set as a model sees them: x (B, C, H, W) float32 in [0, 1], y (B,) int64 in the
    model's classes (-1 = unlabelled). ``len()`` is the number of batches, ``count`` the number of images,
    ``info`` the :class:`~advlab.data.specs.DatasetInfo` (the size and channels the model sees, ``label_source``,
    ``notes``). Built by :func:`open_for_model` or :func:`open`."""

    def __init__(
        self,
        src: Source,
        index: Sequence[int],
        info: DatasetInfo,
        *,
        mapping: LabelMapping,
        batch_size: int,
        shape: tuple[int | None, int | None],
        workers: int = 0,
    ) -> None:
        if batch_size < 1:
            raise AdvlabError(f"batch size must be >= 1, got {batch_size}")
        self._src, self._index, self._mapping = src, list(index), mapping
        self.info, self.batch_size, self.workers = info, batch_size, workers
        self._side, self._channels = shape  # files: resize side / channels; tensors: explicit resize / conversion
        self.count = len(self._index)

    def __len__(self) -> int:
        return (self.count + self.batch_size - 1) // self.batch_size

    def rebatched(self, batch_size: int, *, workers: int | None = None) -> Batches:
        """The same images, labels and sizes in batches of ``batch_size`` (nothing listed or read again), read by
        ``workers`` threads when iterated (None: as this one is; 0: in the caller's thread, no prefetch)."""
        return self._with(self._index, batch_size, self.workers if workers is None else workers)

    def reordered(self, order: Sequence[int] | torch.Tensor) -> Batches:
        """The same data with its images in ``order``: image k of the result is image ``order[k]`` of this one
        (positions 0 <= order[k] < count, in batch order), with the same labels, sizes, batch size and workers;
        nothing is listed or read. A permutation gives one shuffled epoch of training: the batch
        ``reordered(torch.randperm(count, generator=g)).batch(b)`` equals ``(x[p], y[p])`` of the stacked data for
        the rows p of that batch, and is read alone (iteration reads ahead at most :data:`PREFETCH` batches as
        always). A shorter order selects (``order[:n]``: n images)."""
        rows = order.tolist() if isinstance(order, torch.Tensor) else [int(i) for i in order]
        bad = next((i for i in rows if not 0 <= i < self.count), None)
        if bad is not None:
            raise IndexError(f"position {bad} out of range: the data has {self.count} images")
        return self._with([self._index[i] for i in rows], self.batch_size, self.workers)

    def _with(self, index: list[int], batch_size: int, workers: int) -> Batches:
        return Batches(
            self._src,
            index,
            self.info,
            mapping=self._mapping,
            batch_size=batch_size,
            shape=(self._side, self._channels),
            workers=workers,
        )

    def _rows(self, b: int) -> list[int]:
        if not 0 <= b < len(self):
            raise AdvlabError(f"batch {b} out of range: the data has {len(self)} batches of {self.batch_size}")
        return self._index[b * self.batch_size : (b + 1) * self.batch_size]

    def batch(self, b: int) -> Batch:
        """Batch ``b`` alone (0 <= b < len), reading only its own images."""
        return self._collect(self._start(b, None))

    def __iter__(self) -> Iterator[Batch]:
        """Every batch in order; with ``workers`` > 0 images are decoded in that many threads, at most
        :data:`PREFETCH` batches ahead of the one yielded."""
        if self.workers <= 0:
            for b in range(len(self)):
                yield self.batch(b)
            return
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="advlab-data")
        try:
            pending: deque[_Pending] = deque()
            for b in range(len(self)):
                while len(pending) <= PREFETCH and b + len(pending) < len(self):
                    pending.append(self._start(b + len(pending), pool))
                yield self._collect(pending.popleft())
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def _start(self, b: int, pool: ThreadPoolExecutor | None) -> _Pending:
        """Batch ``b``'s reading: one task per image file, one for a batch of tensors; run now without ``pool``."""
        rows, src = self._rows(b), self._src
        c, hw = self.info.channels, self.info.size
        if c is None or hw is None or 4 * len(rows) * c * hw[0] * hw[1] >= TRIM_BYTES:
            give_back_freed_memory()
        y = self._mapping.apply(_labels_of(src, rows)) if not isinstance(src, _Dataset) else None
        if isinstance(src, _Files) and src.dataset != "samples":
            side, ch = self._side or DEFAULT_PHOTO_SIZE, self._channels or 3
            return _Pending([_task(pool, read_image, src.paths[i], side, ch) for i in rows], y, files=True)
        return _Pending([_task(pool, self._tensor_batch, rows)], y, files=False)

    def _tensor_batch(self, rows: list[int]) -> torch.Tensor | Batch:
        src = self._src
        if isinstance(src, _Dataset):
            x, y = dataset_items(src, rows)
            return finish(x, self._side, self._channels), self._mapping.apply(y)
        assert isinstance(src, _Tensors)
        return finish(src.x[rows], self._side, self._channels)

    def _collect(self, pending: _Pending) -> Batch:
        parts = [t.result() if isinstance(t, Future) else t for t in pending.tasks]
        if pending.y is None:  # a Dataset's batch brings its labels
            x, y = parts[0]
            return x, y
        return (torch.stack(parts) if pending.files else parts[0]), pending.y

    def labels(self) -> torch.Tensor:
        """(count,) int64: the labels of every selected image in the model's classes, without decoding an image
        (a factory's Dataset without ``targets`` is the exception: its items are read)."""
        if isinstance(self._src, _Dataset):
            return self._mapping.apply(dataset_labels(self._src)[self._index])
        return self._mapping.apply(_labels_of(self._src, self._index))

    def names(self) -> list[str]:
        """A readable name per selected image (file names; ``spec[i]`` for tensors), in batch order."""
        names = source_names(self._src, self.info.spec)
        return [names[i] for i in self._index]


class _Pending:
    """A batch being read: its tasks (futures, or results already there: one image each for ``files``, else one
    batch) and its labels (None: the task brings them)."""

    def __init__(self, tasks: list, y: torch.Tensor | None, *, files: bool) -> None:
        self.tasks, self.y, self.files = tasks, y, files


def _task(pool: ThreadPoolExecutor | None, fn: Callable, *args: object) -> object:
    return pool.submit(fn, *args) if pool is not None else fn(*args)


def _labels_of(src: Source, rows: Sequence[int]) -> torch.Tensor:
    if isinstance(src, _Files):
        return torch.tensor([src.labels[i] for i in rows], dtype=torch.long)
    assert isinstance(src, _Tensors)
    return src.y[list(rows)].clone()


# ---------------------------------------------------------------------------------------------- choosing images
def _select(
    src: Source, spec: str, *, subset: str | Path | None, sample: int | None, seed: int, limit: int | None
) -> list[int]:
    """The images to read, in data order: those named in the ``subset`` file, then a seeded random ``sample`` of
    them (sorted back into data order), then the first ``limit``."""
    n = src.count if isinstance(src, _Dataset) else len(src.paths) if isinstance(src, _Files) else len(src.y)
    if isinstance(src, _Files) and src.dataset == "samples":
        n = len(sets.SAMPLE_PHOTOS)
    index = list(range(n)) if subset is None else _subset(src, spec, Path(subset))
    if sample is not None:
        if not 1 <= sample <= len(index):
            raise AdvlabError(f"a sample of {sample} images: the data {show(spec)} has {len(index)}")
        g = torch.Generator().manual_seed(seed)
        picked = torch.randperm(len(index), generator=g)[:sample].sort().values
        index = [index[i] for i in picked.tolist()]
    return index if limit is None else index[:limit]


def read_subset(path: Path) -> list[str]:
    """The image names of a subset file: one per line (a file name, or a path relative to the data folder as in
    RobustBench's ImageNet list: ``n01440764/ILSVRC2012_val_00000293.JPEG``); empty lines and ``#`` lines skipped."""
    with open_regular(path, "subset file") as fh:
        raw = read_at_most(fh, MAX_SUBSET_BYTES, path, "subset file")
    try:
        lines = raw.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise AdvlabError(f"subset file {show(path)} is not UTF-8 text") from None
    names = [t.strip() for t in lines if t.strip() and not t.lstrip().startswith("#")]
    if not names:
        raise AdvlabError(f"subset file {show(path)} names no image (one name per line)")
    return names


def _subset(src: Source, spec: str, path: Path) -> list[int]:
    """Indices of the images a subset file names (by file name or relative path; for tensors by ``spec[i]`` or
    ``i``), in data order; a name not found is one line naming the first missing one and how many are."""
    keys: dict[str, set[int]] = {}
    for i, name in enumerate(source_names(src, spec)):
        keys.setdefault(name, set()).add(i)
        if not isinstance(src, _Files):
            keys.setdefault(str(i), set()).add(i)
    if isinstance(src, _Files) and src.dataset != "samples":  # the bare file name too
        for i, p in enumerate(src.paths):
            keys.setdefault(p.name, set()).add(i)
    wanted = read_subset(path)
    missing = [w for w in wanted if w not in keys]
    if missing:
        raise AdvlabError(
            f"subset file {show(path)}: {len(missing)} of {len(wanted)} names are not in {show(spec)} "
            f"(first: {show(missing[0])})"
        )
    return sorted({i for w in wanted for i in keys[w]})


# ---------------------------------------------------------------------------------------------- sizes
def _files_side(src: _Files, index: list[int], size: int | None, input_size: int | None) -> tuple[int, list[str]]:
    """The side image files are fitted to, and notes: ``size`` if asked, else the model's declared
    ``input_size`` (a note when it upscales images), else the images' own when they share one square size."""
    if size is not None:
        return size, []
    if input_size is not None:
        return input_size, _upscale_note(src, index[:UPSCALE_CHECK], input_size)
    sizes: dict[tuple[int, int], Path] = {}
    for i in index:
        w, h, _ = image_header(src.paths[i])
        sizes.setdefault((w, h), src.paths[i])
        if len(sizes) > 1 or w != h:
            break
    (w, h), first = next(iter(sizes.items()))
    if len(sizes) == 1 and w == h:
        return w, []
    shown = ", ".join(f"{a}x{b} ({show(p.name)})" for (a, b), p in sizes.items())
    what = "are not square" if len(sizes) == 1 else "have different sizes"
    raise AdvlabError(
        f"the images {what} ({shown}) and the model declares no input size: give one (--input-size N), "
        "to which they are resized and centre-cropped"
    )


def _upscale_note(src: _Files, index: list[int], side: int) -> list[str]:
    small = []
    for i in index:
        w, h, _ = image_header(src.paths[i])
        if min(w, h) < side and (w, h) != (side, side):
            small.append((w, h, src.paths[i].name))
    if not small:
        return []
    w, h, name = small[0]
    return [
        f"{len(small)} of the first {len(index)} images are smaller than the model's {side}x{side} input and are "
        f"upscaled (e.g. {show(name)}, {w}x{h})"
    ]


# ---------------------------------------------------------------------------------------------- API
def open_for_model(
    spec: str,
    *,
    input_size: int | None,
    channels: int,
    class_names: Sequence[str] | None = None,
    size: int | None = None,
    batch_size: int = 64,
    limit: int | None = None,
    subset: str | Path | None = None,
    sample: int | None = None,
    seed: int = 0,
    workers: int = 0,
) -> Batches:
    """Batches of ``spec`` as a model sees them.

    ``input_size``: the side the model declares (``ModelInfo.data_size``), or None for a model that declares none:
    image files then keep their own size when they share one square size (read from their headers), and differing
    sizes are one :class:`AdvlabError` asking for an input size; image files are resized (shorter side to
    size / 0.875, bicubic) and centre-cropped, an image already ``input_size`` square goes in unchanged, an
    upscale is told in ``info.notes``. ``channels``: image files are converted to it; tensor sets and a factory's
    Dataset keep their own size and channels (resized only to an explicit ``size``), so that a mismatch is
    reported by the model's checks, not converted silently. ``class_names``: the model's classes
    (``ModelInfo.data_classes``), None for a model without names; labels are mapped onto them
    (:func:`~advlab.data.classes.map_classes`: by name, integer names as indices, else the sorted folder index),
    ``info.label_source`` says how. ``subset``: a file of image names to keep; ``sample``: a random ``sample`` of
    them, the same for the same ``seed``, in data order; ``limit``: the first ``limit`` after both. ``workers``:
    threads that decode images (0: in the caller's thread, no prefetch).
    """
    return _for_model(
        spec,
        (input_size, channels, size),
        class_names,
        select={"subset": subset, "sample": sample, "seed": seed, "limit": limit},
        batch_size=batch_size,
        workers=workers,
    )


def _for_model(
    spec: str,
    sizes: tuple[int | None, int, int | None],
    class_names: Sequence[str] | None,
    *,
    select: dict,
    own_labels: bool = False,
    **kw: int,
) -> Batches:
    """:func:`open_for_model` with ``sizes`` = (input_size, channels, size); ``own_labels`` keeps the data's."""
    input_size, channels, size = sizes
    src = resolve(spec)
    index = _select(src, spec, **select)
    notes: list[str] = []
    shape: tuple[int | None, int | None]
    if isinstance(src, _Files) and src.dataset == "samples":
        side = size or input_size or DEFAULT_PHOTO_SIZE
        info = describe_source(src, spec, side, channels)
        src, shape = _samples(src, side, channels), (None, None)
    elif isinstance(src, _Files):
        side, notes = _files_side(src, index, size, input_size) if index else (size or input_size or 1, [])
        info, shape = describe_source(src, spec, side, channels), (side, channels)
    else:
        info, shape = describe_source(src, spec, size, None), (size, None)
    return _batches(src, index, info, class_names, notes, own_labels=own_labels, shape=shape, **kw)


def _samples(src: _Files, side: int, channels: int) -> _Tensors:
    """The sample photos, decoded at ``side`` (four images: read at once)."""
    x, y, _ = sets.samples(side, channels)
    return _Tensors(x, y, src.class_names, "samples", "names")


@cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (AttributeError, OSError):  # not glibc (macOS, musl): nothing to do
        return None


def give_back_freed_memory() -> None:
    """Give the memory freed since the last batch back to the OS (glibc's ``malloc_trim``), before a batch is read
    (one of at least :data:`TRIM_BYTES`).

    glibc's malloc raises its mmap threshold (up to 32 MiB) every time a large mmapped block is freed; blocks the
    size of a batch are then carved from the heap, and the freed ones mostly stay with the process: streaming
    batches grew the resident memory of ``advlab eval`` by about two batches per batch (+300 MiB over 3,000 64x64
    images) with only four batch tensors alive. Trimming once per batch keeps the peak flat (+2% from 300 to 3,000
    images) at the cost of a few page faults per batch; a fixed mmap threshold did too but slowed efficientnet-lite0's
    forward+backward by 35% (every activation mmapped afresh)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _batches(
    src: Source,
    index: list[int],
    info: DatasetInfo,
    class_names: Sequence[str] | None,
    notes: list[str],
    *,
    own_labels: bool = False,
    **kw: object,
) -> Batches:
    mapping = (
        LabelMapping(None, src.order) if own_labels else map_classes(src.class_names, class_names, order=src.order)
    )
    all_notes = notes + ([mapping.note] if mapping.note else [])
    info = replace(info, label_source=_source(src, mapping, index), notes=all_notes)
    return Batches(src, index, info, mapping=mapping, **kw)  # type: ignore[arg-type]


def _source(src: Source, mapping: LabelMapping, index: list[int]) -> str:
    """The label source, "none" for data without any label."""
    if isinstance(src, _Files) and src.class_names is None:
        return "none"
    if isinstance(src, _Tensors) and src.class_names is None and not bool((src.y >= 0).any()):
        return "none"
    return mapping.source


def open(  # noqa: A001 - the data API's verb, as the built-in open is for files
    spec: str,
    batch_size: int = 64,
    size: int | None = None,
    *,
    channels: int | None = None,
    limit: int | None = None,
    workers: int = 0,
) -> Batches:
    """Batches ``(x, y)`` of a data set as it is (its own labels): image files resized and centre-cropped to
    ``size`` (default 224) with ``channels`` (default 3), fixed-size sets at their own size unless ``size`` is
    given, converted to ``channels`` if given. See :func:`open_for_model` for reading for a model."""
    src = resolve(spec)
    index = _select(src, spec, subset=None, sample=None, seed=0, limit=limit)
    side = (size or DEFAULT_PHOTO_SIZE) if isinstance(src, _Files) else size
    info = describe_source(src, spec, side, channels)
    if isinstance(src, _Files) and src.dataset == "samples":
        src, side = _samples(src, side or DEFAULT_PHOTO_SIZE, channels or 3), None
    return _batches(
        src, index, info, None, [], own_labels=True, batch_size=batch_size, shape=(side, channels), workers=workers
    )


def stack(batches: Batches) -> Batch:
    """All batches as one ``(x, y)`` pair (for small sets)."""
    parts = list(batches)
    if not parts:
        return torch.empty(0, batches.info.channels or 3, 1, 1), torch.empty(0, dtype=torch.long)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def load(
    spec: str, size: int | None = None, *, channels: int | None = None, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a (small) data set as ``x`` (N, C, H, W) float32 in [0, 1] and ``y`` (N,) int64 (-1 = unlabelled).

    ``size``: photos are resized (shorter side to size/0.875) and centre-cropped to ``size`` (default 224);
    fixed-size sets keep their own size unless ``size`` is given. ``channels``: convert grey <-> RGB.
    ``limit``: only the first ``limit`` images.
    """
    b = open(spec, 256, size, channels=channels, limit=limit)
    return stack(b)


def load_for_model(
    spec: str,
    input_size: int | None,
    channels: int,
    *,
    size: int | None = None,
    limit: int | None = None,
    model_classes: Sequence[str] | None = None,
    subset: str | Path | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """All of a (small) data set read for a model, as ``(x, y, info)``: the batches of :func:`open_for_model`
    (the same sizes, labels and notes) stacked. ``model_classes``: the model's class names (labels mapped onto
    them: a folder of 3/ and 7/ gives labels 3 and 7); None keeps the data's own labels, as :func:`load` does."""
    b = _for_model(
        spec,
        (input_size, channels, size),
        model_classes,
        select={"subset": subset, "sample": sample, "seed": seed, "limit": limit},
        own_labels=model_classes is None,
        batch_size=256,
    )
    x, y = stack(b)
    return x, y, b.info
