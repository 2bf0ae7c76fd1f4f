"""Parsing data specs and producing (x, y) tensors or streamed batches. See :mod:`advlab.data`."""

from __future__ import annotations

import glob as globlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from advlab.data import official, sets
from advlab.data.classes import (
    DIGIT_CLASSES,
    SYNSET_RE,
    imagenet_classes,
    imagenet_synset_index,
)
from advlab.data.images import (
    IMAGE_SUFFIXES,
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
        ("digits[:train|test]", "scikit-learn's 1,797 8x8 digits, 1 channel; test = every 3rd image (599), train = the rest (1,198)"),
        ("samples", "scikit-image's colour photos (cat, coffee, rocket, motorcycle) with ImageNet labels"),
        ("folder:PATH", "class sub-folders of images; ImageNet synset folder names (n01440764...) map to standard indices"),
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
        return _tensor_file(Path(arg))
    return _image_files(spec)


def _folder(root: Path) -> _Files:
    if not root.is_dir():
        raise AdvlabError(f"no such folder: {root}")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subdirs:
        paths = _images_in(root)
        if not paths:
            raise AdvlabError(f"folder {root} holds no images (looked for {', '.join(IMAGE_SUFFIXES)})")
        return _Files(paths, [-1] * len(paths), None, root.name)
    synsets = imagenet_synset_index()
    if all(SYNSET_RE.match(d.name) for d in subdirs):
        unknown = [d.name for d in subdirs if d.name not in synsets]
        if unknown:
            raise AdvlabError(f"folder {root}: {unknown[0]} is not an ImageNet-1k synset")
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
        raise AdvlabError(f"folder {root} has class folders but no images in them")
    return _Files(paths, labels, names, dataset)


def _images_in(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)


def _image_files(spec: str) -> _Files:
    path = Path(spec)
    if path.is_dir():
        return _folder(path)
    if any(c in spec for c in "*?["):
        paths = sorted(Path(p) for p in globlib.glob(spec) if Path(p).is_file())
        if not paths:
            raise AdvlabError(f"no files match {spec!r}")
        return _Files(paths, [-1] * len(paths), None, "images")
    if path.suffix.lower() in IMAGE_SUFFIXES or path.exists():
        if not path.exists():
            raise AdvlabError(f"no such file: {spec}")
        return _Files([path], [-1], None, "images")
    known = ", ".join(s for s, _ in spec_names())
    raise AdvlabError(f"unknown data spec {spec!r}: not a file, and not one of {known}")


def _tensor_file(path: Path) -> _Tensors:
    if not path.is_file():
        raise AdvlabError(f"no such tensors file: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            arrays = {k: v for k, v in load_file(str(path)).items()}
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                arrays = {k: torch.from_numpy(np.array(z[k])) for k in z.files}
        else:
            raise AdvlabError(f"tensors file {path} must be .npz or .safetensors")
    except AdvlabError:
        raise
    except Exception as e:  # noqa: BLE001 - numpy/safetensors raise many types for corrupt files
        raise AdvlabError(f"cannot read tensors file {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from e
    if "x" not in arrays:
        raise AdvlabError(f"tensors file {path} has no 'x' (found: {', '.join(arrays) or 'nothing'})")
    x = arrays["x"]
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise AdvlabError(f"tensors file {path}: x has shape {tuple(x.shape)}, expected (N, C, H, W)")
    if len(x) == 0:
        raise AdvlabError(f"tensors file {path} holds no images (x has shape {tuple(x.shape)})")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC as saved by numpy/PIL code
    if x.dtype == torch.uint8:
        pass
    elif x.is_floating_point():
        x = x.float()
        if not torch.isfinite(x).all():
            raise AdvlabError(f"tensors file {path}: x contains NaN or infinite values")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 1:
            raise AdvlabError(f"tensors file {path}: x must be in [0, 1] (or uint8), found values in [{lo:.3g}, {hi:.3g}]")
    else:
        raise AdvlabError(f"tensors file {path}: x has dtype {x.dtype}; use float in [0, 1] or uint8")
    if "y" in arrays:
        y = arrays["y"].reshape(-1)
        if y.is_floating_point():
            if not torch.isfinite(y).all() or not torch.equal(y, y.round()):
                raise AdvlabError(f"tensors file {path}: y must hold integer class indices")
        y = y.long()
        if len(y) != len(x):
            raise AdvlabError(f"tensors file {path}: {len(x)} images but {len(y)} labels")
    else:
        y = torch.full((len(x),), -1, dtype=torch.long)
    return _Tensors(x, y, None, path.stem)


# ----------------------------------------------------------------------------------------------- API
def _finish(x: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    x = convert_channels(x, channels)
    if size is not None:
        x = resize_batch(x, size)
    return x


def load(spec: str, size: int | None = None, *, channels: int | None = None, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """All of a (small) data set as ``x`` (N, C, H, W) float32 in [0, 1] and ``y`` (N,) int64 (-1 = unlabelled).

    ``size``: photos are resized (shorter side to size/0.875) and centre-cropped to ``size`` (default 224);
    fixed-size sets keep their own size unless ``size`` is given. ``channels``: convert grey <-> RGB.
    ``limit``: only the first ``limit`` images.
    """
    return _load(_resolve(spec), size, channels, limit)


def load_for_model(spec: str, input_size: int, channels: int, *, size: int | None = None,
                   limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, DatasetInfo]:  # fmt: skip
    """Load a data set for a model, reading it once: photos are fitted to the model (resized/cropped to
    ``input_size``, converted to ``channels``); tensor sets keep their own size and channels (resized only to
    an explicit ``size``) so that a mismatch can be reported, not silently converted. Returns ``(x, y, info)``."""
    src = _resolve(spec)
    photos = isinstance(src, _Files)
    s, c = (size or input_size, channels) if photos else (size, None)
    x, y = _load(src, s, c, limit)
    return x, y, _describe(src, spec, s, c)


def _load(src: _Files | _Tensors, size: int | None, channels: int | None, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
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
        num = len(src.class_names) if src.class_names else (int(src.y.max()) + 1 if len(src.y) and int(src.y.max()) >= 0 else None)
        return DatasetInfo(spec, src.dataset, len(src.y), c, hw, num, src.class_names, photos=False)
    side = size or DEFAULT_PHOTO_SIZE
    count = len(sets.SAMPLE_PHOTOS) if src.dataset == "samples" else len(src.paths)
    dataset = "imagenet" if src.dataset == "samples" else src.dataset
    names = src.class_names
    return DatasetInfo(spec, dataset, count, channels or 3, (side, side), len(names) if names else None, names, photos=True)


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

    def __init__(self, spec: str, batch_size: int = 64, size: int | None = None, *, channels: int | None = None,
                 limit: int | None = None, workers: int = 0) -> None:  # fmt: skip
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


def open(spec: str, batch_size: int = 64, size: int | None = None, *, channels: int | None = None,
         limit: int | None = None, workers: int = 0) -> Batches:  # noqa: A001 - the data API's verb  # fmt: skip
    """Stream a data set in batches of ``(x, y)`` (see :class:`Batches`); use this for large folders."""
    return Batches(spec, batch_size, size, channels=channels, limit=limit, workers=workers)
