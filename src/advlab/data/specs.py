"""Parsing data specs and producing (x, y) tensors or streamed batches. See :mod:`advlab.data`."""

from __future__ import annotations

import glob as globlib
import math
import os
import stat
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from advlab.data import official, sets
from advlab.data.classes import (
    DIGIT_CLASSES,
    SYNSET_RE,
    imagenet_classes,
    imagenet_synset_index,
    labels_for_model,
)
from advlab.data.files import descriptor_path, is_regular, open_regular, require_regular, show, stat_input
from advlab.data.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    convert_channels,
    read_image,
    resize_batch,
)
from advlab.errors import AdvlabError

#: Photo sets are resized and centre-cropped to this side when no size is given.
DEFAULT_PHOTO_SIZE = 224

_OFFICIAL = {"cifar10": official.read_cifar10, "mnist": official.read_mnist, "svhn": official.read_svhn}


@dataclass(frozen=True)
class DatasetInfo:
    """What a data spec holds. ``dataset`` is the short name used in run names ("digits", "imagenet", ...)."""

    spec: str
    dataset: str
    count: int
    channels: int | None
    size: tuple[int, int] | None  # (H, W) after loading; None when files differ and no size was asked
    num_classes: int | None
    class_names: list[str] | None
    photos: bool = False  # image files of any size: resized/cropped and converted to the channels asked for


def spec_names() -> list[tuple[str, str]]:
    """(spec, description) for ``advlab data``."""
    return [
        (
            "digits[:train|test]",
            "scikit-learn's 1,797 8x8 digits, 1 channel; test = every 3rd image (599), train = the rest (1,198)",
        ),
        ("samples", "scikit-image's colour photos (cat, coffee, rocket, motorcycle) with ImageNet labels"),
        (
            "folder:PATH",
            "class sub-folders of images; ImageNet synset folder names (n01440764...) map to standard indices",
        ),
        ("PATH or 'GLOB'", "image files (png, jpg, ...), unlabelled (-1)"),
        ("tensors:FILE", ".npz or .safetensors with x (N,C,H,W float in [0,1] or uint8) and y (N,) int"),
        ("cifar10[:train|test]", "CIFAR-10 binary version from $ADVLAB_DATA/cifar10 (downloaded when online)"),
        ("mnist[:train|test]", "MNIST IDX files from $ADVLAB_DATA/mnist (downloaded when online)"),
        ("svhn[:train|test]", "SVHN cropped digits .mat from $ADVLAB_DATA/svhn (downloaded when online)"),
    ]


# ----------------------------------------------------------------------------------------------- sources
@dataclass
class _Files:
    """Image files with labels, read lazily."""

    paths: list[Path]
    labels: list[int]
    class_names: list[str] | None
    dataset: str


@dataclass
class _Tensors:
    x: torch.Tensor  # float [0, 1] or uint8
    y: torch.Tensor
    class_names: list[str] | None
    dataset: str


def _resolve(spec: str) -> _Files | _Tensors:
    if not isinstance(spec, str) or not spec:
        raise AdvlabError(f"a data spec must be a non-empty string, got {spec!r}")
    name, _, arg = spec.partition(":")
    if name == "digits":
        x, y = sets.digits(arg or "all")
        return _Tensors(x, y, DIGIT_CLASSES, "digits")
    if name == "samples":
        if arg:
            raise AdvlabError("samples takes no argument")
        return _Files([], [], imagenet_classes(), "samples")  # resolved specially (in-memory photos)
    if name in _OFFICIAL:
        x, y = _OFFICIAL[name](arg or "test")
        return _Tensors(x, y, official.CLASS_NAMES[name], name)
    if name == "folder":
        if not arg:
            raise AdvlabError("folder needs a path: folder:PATH")
        return _folder(Path(arg))
    if name == "tensors":
        if not arg:
            raise AdvlabError("tensors needs a file: tensors:FILE")
        return _tensor_file(Path(arg))
    return _image_files(spec)


def _folder(root: Path) -> _Files:
    st = stat_input(root, "folder")
    if st is None or not stat.S_ISDIR(st.st_mode):
        raise AdvlabError(f"no such folder: {show(root)}")
    subdirs = sorted(p for p in _entries(root) if _is_dir(p) and not p.name.startswith("."))
    if not subdirs:
        paths = _images_in(root)
        if not paths:
            raise AdvlabError(f"folder {show(root)} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        return _Files(paths, [-1] * len(paths), None, root.name)
    synsets = imagenet_synset_index()
    if all(SYNSET_RE.match(d.name) for d in subdirs):
        unknown = [d.name for d in subdirs if d.name not in synsets]
        if unknown:
            raise AdvlabError(f"folder {show(root)}: {unknown[0]!r} is not an ImageNet-1k synset")
        index = {d.name: synsets[d.name] for d in subdirs}
        names, dataset = imagenet_classes(), "imagenet"
    else:
        index = {d.name: i for i, d in enumerate(subdirs)}
        names, dataset = [d.name for d in subdirs], root.name
    paths, labels = [], []
    for d in subdirs:
        found = _images_in(d)
        paths += found
        labels += [index[d.name]] * len(found)
    if not paths:
        raise AdvlabError(f"folder {show(root)} has class folders but no images in them")
    return _Files(paths, labels, names, dataset)


def _entries(d: Path) -> list[Path]:
    """The entries of a folder; a folder that cannot be listed is one :class:`AdvlabError`."""
    try:
        return list(d.iterdir())
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else type(e).__name__
        raise AdvlabError(f"cannot list folder {show(d)}: {reason}") from None


def _is_dir(p: Path) -> bool:
    try:
        return p.is_dir()
    except OSError:
        return False


def _images_in(d: Path) -> list[Path]:
    """The image files of a folder, by suffix; only regular files (or symlinks to them): a FIFO, device or
    dangling link named ``x.png`` is left out, as are hidden files."""
    names = (p for p in _entries(d) if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    return sorted(p for p in names if is_regular(p))


def _image_files(spec: str) -> _Files:
    path = Path(spec)
    st = stat_input(path, "image")
    if st is not None and stat.S_ISDIR(st.st_mode):
        return _folder(path)
    if st is None and any(c in spec for c in "*?["):
        paths = sorted(Path(p) for p in globlib.glob(spec) if is_regular(p))
        if not paths:
            raise AdvlabError(f"no files match {show(spec)}")
        return _Files(paths, [-1] * len(paths), None, "images")
    if path.suffix.lower() in IMAGE_SUFFIXES or st is not None:
        if st is None:
            raise AdvlabError(f"no such file: {show(spec)}")
        require_regular(path, "image")
        return _Files([path], [-1], None, "images")
    known = ", ".join(s for s, _ in spec_names())
    raise AdvlabError(f"unknown data spec {show(spec)}: not a file, and not one of {known}")


#: The most values (in x, y and any other array, together) a ``tensors:`` file may declare; checked from the
#: arrays' headers before any is read. 2**30 values are 4 GiB as float32: 7,000 ImageNet-sized images.
MAX_TENSOR_VALUES = 2**30
#: the largest class index a label may be (the model checks its own range; this keeps the int64 cast exact)
MAX_LABEL = 2**31 - 1


def _tensor_file(path: Path) -> _Tensors:
    """Read a ``tensors:`` file (.npz or .safetensors): x (N, C, H, W) or (N, H, W) or NHWC, uint8 or float in
    [0, 1], and optional y (N,) integer labels (-1 = unlabelled). Anything else is one :class:`AdvlabError`:
    non-regular files, sizes over :data:`MAX_TENSOR_VALUES` (from the headers), empty or zero-size images,
    NaN, Inf or values outside [0, 1]."""
    arrays = _read_arrays(path)
    if "x" not in arrays:
        raise AdvlabError(f"tensors file {show(path)} has no 'x' (found: {', '.join(map(repr, arrays)) or 'nothing'})")
    x = _images(arrays["x"], path)
    return _Tensors(x, _labels(arrays.get("y"), len(x), path), None, path.stem)


def _read_arrays(path: Path) -> dict[str, torch.Tensor]:
    """The arrays of a tensors file, after checking from their headers that they are numbers and not too many."""
    with open_regular(path, "tensors file") as fh:
        if path.suffix not in (".npz", ".safetensors"):
            raise AdvlabError(f"tensors file {show(path)} must be .npz or .safetensors")
        try:
            return _read_safetensors(fh, path) if path.suffix == ".safetensors" else _read_npz(fh, path)
        except AdvlabError:
            raise
        except Exception as e:  # noqa: BLE001 - numpy/zipfile/safetensors raise many types for corrupt files
            lines = str(e).strip().splitlines()
            reason = lines[0] if lines else type(e).__name__
            raise AdvlabError(f"cannot read tensors file {show(path)}: {reason}") from e


def _read_safetensors(fh: BinaryIO, path: Path) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    with safe_open(descriptor_path(fh, path), framework="pt") as f:  # validates the header against the file
        _check_values({k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}, path)
        return {k: f.get_tensor(k) for k in f.keys()}


#: the .npy header readers of the versions numpy writes for numeric arrays
_NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_npz(fh: BinaryIO, path: Path) -> dict[str, torch.Tensor]:
    """An .npz, its members' .npy headers read first: every member must be a numeric array (no pickled objects,
    nothing else: np.load would read any other member whole) and their sizes within the budget."""
    shapes = {}
    with zipfile.ZipFile(fh) as zf:
        for member in zf.infolist():
            with zf.open(member) as f:
                version = np.lib.format.read_magic(f)
                if version not in _NPY_HEADERS:
                    raise AdvlabError(
                        f"cannot read tensors file {show(path)}: {member.filename!r} is .npy version {version}"
                    )
                shape, _, dtype = _NPY_HEADERS[version](f)
            if dtype.hasobject:
                raise AdvlabError(f"cannot read tensors file {show(path)}: {member.filename!r} holds pickled objects")
            shapes[member.filename] = shape
    _check_values(shapes, path)
    fh.seek(0)
    with np.load(fh, allow_pickle=False) as z:
        return {k: torch.from_numpy(np.array(z[k])) for k in z.files}


def _check_values(shapes: dict[str, tuple[int, ...]], path: Path) -> None:
    total = sum(math.prod(s) for s in shapes.values())
    if total > MAX_TENSOR_VALUES:
        big = max(shapes, key=lambda k: math.prod(shapes[k]))
        raise AdvlabError(
            f"tensors file {show(path)} declares {total:,} values ({big!r} has shape "
            f"{tuple(shapes[big])}), over advlab's limit of {MAX_TENSOR_VALUES:,}"
        )


def _images(x: torch.Tensor, path: Path) -> torch.Tensor:
    """x as (N, C, H, W), uint8 or float32 in [0, 1], with N, C, H, W >= 1 and at most MAX_IMAGE_PIXELS per image."""
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise AdvlabError(f"tensors file {show(path)}: x has shape {tuple(x.shape)}, expected (N, C, H, W)")
    if len(x) == 0:
        raise AdvlabError(f"tensors file {show(path)} holds no images (x has shape {tuple(x.shape)})")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC as saved by numpy/PIL code
    if 0 in x.shape:
        raise AdvlabError(
            f"tensors file {show(path)}: x has shape {tuple(x.shape)}; every image needs at least one "
            "channel and one pixel"
        )
    if x.shape[2] * x.shape[3] > MAX_IMAGE_PIXELS:
        raise AdvlabError(
            f"tensors file {show(path)}: x has shape {tuple(x.shape)}, over advlab's limit of "
            f"{MAX_IMAGE_PIXELS:,} pixels per image"
        )
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise AdvlabError(f"tensors file {show(path)}: x has dtype {x.dtype}; use float in [0, 1] or uint8")
    x = x.float()
    if not torch.isfinite(x).all():
        raise AdvlabError(f"tensors file {show(path)}: x contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise AdvlabError(
            f"tensors file {show(path)}: x must be in [0, 1] (or uint8), found values in [{lo:.3g}, {hi:.3g}]"
        )
    return x


def _labels(y: torch.Tensor | None, n: int, path: Path) -> torch.Tensor:
    """y as (n,) int64 class indices, -1 = unlabelled (all -1 when the file has no y)."""
    if y is None:
        return torch.full((n,), -1, dtype=torch.long)
    y = y.reshape(-1)
    if y.dtype == torch.bool or y.is_complex():
        raise AdvlabError(f"tensors file {show(path)}: y has dtype {y.dtype}; y must hold integer class indices")
    if y.is_floating_point() and (not torch.isfinite(y).all() or not torch.equal(y, y.round())):
        raise AdvlabError(f"tensors file {show(path)}: y must hold integer class indices")
    if len(y) != n:
        raise AdvlabError(f"tensors file {show(path)}: {n} images but {len(y)} labels")
    if len(y) and (float(y.min()) < -1 or float(y.max()) > MAX_LABEL):
        raise AdvlabError(
            f"tensors file {show(path)}: y holds labels in [{float(y.min()):g}, {float(y.max()):g}]; "
            f"labels are class indices 0..{MAX_LABEL:,}, or -1 for unlabelled"
        )
    return y.long()


# ----------------------------------------------------------------------------------------------- API
def _finish(x: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    x = convert_channels(x, channels)
    if size is not None:
        x = resize_batch(x, size)
    return x


def load(
    spec: str, size: int | None = None, *, channels: int | None = None, limit: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a (small) data set as ``x`` (N, C, H, W) float32 in [0, 1] and ``y`` (N,) int64 (-1 = unlabelled).

    ``size``: photos are resized (shorter side to size/0.875) and centre-cropped to ``size`` (default 224);
    fixed-size sets keep their own size unless ``size`` is given. ``channels``: convert grey <-> RGB.
    ``limit``: only the first ``limit`` images.
    """
    return _load(_resolve(spec), size, channels, limit)


def load_for_model(
    spec: str,
    input_size: int,
    channels: int,
    *,
    size: int | None = None,
    limit: int | None = None,
    model_classes: Sequence[str] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:
    """Load a data set for a model, reading it once: photos are fitted to the model (resized/cropped to
    ``input_size``, converted to ``channels``); tensor sets keep their own size and channels (resized only to
    an explicit ``size``) so that a mismatch can be reported, not silently converted. With ``model_classes``
    (the model's class names) the labels are mapped onto them by name (:func:`~advlab.data.classes.labels_for_model`:
    a folder of 3/ and 7/ gives labels 3 and 7, not 0 and 1). Returns ``(x, y, info)``; ``info`` describes the
    data set as it is (its own class names)."""
    src = _resolve(spec)
    photos = isinstance(src, _Files)
    s, c = (size or input_size, channels) if photos else (size, None)
    x, y = _load(src, s, c, limit)
    if model_classes is not None:
        y = labels_for_model(y, src.class_names, model_classes)
    return x, y, _describe(src, spec, s, c)


def _load(
    src: _Files | _Tensors, size: int | None, channels: int | None, limit: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    if isinstance(src, _Tensors):
        n = len(src.y) if limit is None else min(limit, len(src.y))
        return _finish(src.x[:n], size, channels), src.y[:n].clone()
    if src.dataset == "samples":
        x, y, _ = sets.samples(size or DEFAULT_PHOTO_SIZE, channels or 3)
        n = len(y) if limit is None else min(limit, len(y))
        return x[:n], y[:n]
    paths = src.paths if limit is None else src.paths[:limit]
    imgs = [read_image(p, size or DEFAULT_PHOTO_SIZE, channels or 3) for p in paths]
    return torch.stack(imgs), torch.tensor(src.labels[: len(paths)], dtype=torch.long)


def describe(spec: str, size: int | None = None, *, channels: int | None = None) -> DatasetInfo:
    """Facts about a data spec (count, channels, size, classes) without reading every image."""
    return _describe(_resolve(spec), spec, size, channels)


def _describe(src: _Files | _Tensors, spec: str, size: int | None, channels: int | None) -> DatasetInfo:
    if isinstance(src, _Tensors):
        c = channels or src.x.shape[1]
        hw = (size, size) if size else (int(src.x.shape[2]), int(src.x.shape[3]))
        num = (
            len(src.class_names)
            if src.class_names
            else (int(src.y.max()) + 1 if len(src.y) and int(src.y.max()) >= 0 else None)
        )
        return DatasetInfo(spec, src.dataset, len(src.y), c, hw, num, src.class_names, photos=False)
    side = size or DEFAULT_PHOTO_SIZE
    count = len(sets.SAMPLE_PHOTOS) if src.dataset == "samples" else len(src.paths)
    dataset = "imagenet" if src.dataset == "samples" else src.dataset
    names = src.class_names
    return DatasetInfo(
        spec, dataset, count, channels or 3, (side, side), len(names) if names else None, names, photos=True
    )


def item_names(spec: str, limit: int | None = None) -> list[str]:
    """A readable name per item: file names for image files, photo names for samples, ``spec[i]`` otherwise."""
    src = _resolve(spec)
    if isinstance(src, _Files) and src.dataset == "samples":
        names = [p.name for p in sets.SAMPLE_PHOTOS]
    elif isinstance(src, _Files):
        names = [p.name for p in src.paths]
    else:
        names = [f"{spec}[{i}]" for i in range(len(src.y))]
    return names if limit is None else names[:limit]


class Batches:
    """Batches ``(x, y)`` of a data spec; a folder is read batch by batch (images decoded in a worker pool).

    ``len(batches)`` is the number of batches; ``batches.info`` describes the set.
    """

    def __init__(
        self,
        spec: str,
        batch_size: int = 64,
        size: int | None = None,
        *,
        channels: int | None = None,
        limit: int | None = None,
        workers: int = 0,
    ) -> None:
        if batch_size < 1:
            raise AdvlabError(f"batch size must be >= 1, got {batch_size}")
        self.spec, self.batch_size, self.size, self.channels, self.workers = spec, batch_size, size, channels, workers
        self._src = _resolve(spec)
        self.info = _describe(self._src, spec, size, channels)
        self.count = self.info.count if limit is None else min(limit, self.info.count)

    def __len__(self) -> int:
        return (self.count + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        src = self._src
        if isinstance(src, _Files) and src.dataset != "samples":
            yield from self._read_files(src)
            return
        if isinstance(src, _Tensors):
            x, y = src.x, src.y
        else:
            x, y, _ = sets.samples(self.size or DEFAULT_PHOTO_SIZE, self.channels or 3)
        x, y = x[: self.count], y[: self.count]
        for i in range(0, self.count, self.batch_size):
            yield _finish(x[i : i + self.batch_size], self.size, self.channels), y[i : i + self.batch_size]

    def _read_files(self, src: _Files) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Decode one batch of files at a time, in a thread pool when ``workers`` > 0."""
        from concurrent.futures import ThreadPoolExecutor
        from contextlib import nullcontext

        side, ch = self.size or DEFAULT_PHOTO_SIZE, self.channels or 3
        paths, labels = src.paths[: self.count], src.labels[: self.count]
        with ThreadPoolExecutor(self.workers) if self.workers > 0 else nullcontext() as pool:
            mapper = pool.map if pool is not None else map
            for i in range(0, self.count, self.batch_size):
                imgs = list(mapper(lambda p: read_image(p, side, ch), paths[i : i + self.batch_size]))
                yield torch.stack(imgs), torch.tensor(labels[i : i + self.batch_size], dtype=torch.long)


#: ``data.open(spec, batch_size=64, size=None, *, channels=None, limit=None, workers=0)``: stream a data set in
#: batches of ``(x, y)`` (see :class:`Batches`); use this for large folders. The data API's verb for the class.
open = Batches  # noqa: A001
