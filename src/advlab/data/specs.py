"""Parsing data specs into sources (image files, tensors, a factory's Dataset) and the facts about them (count,
shape, classes, item names). Reading them for a model is :mod:`advlab.data.stream`. See :mod:`advlab.data`."""

from __future__ import annotations

import glob as globlib
import math
import os
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from advlab.data import official, sets
from advlab.data.classes import (
    DIGIT_CLASSES,
    SYNSET_RE,
    imagenet_classes,
    imagenet_synset_index,
)
from advlab.data.files import descriptor_path, is_regular, open_regular, require_regular, show, stat_input
from advlab.data.images import (
    IMAGE_SUFFIXES,
    MAX_IMAGE_PIXELS,
    convert_channels,
    image_header,
    resize_batch,
)
from advlab.data.pyfile import call_factory, first_line, split_spec
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
    #: how the labels were put onto the model's classes (:data:`~advlab.data.classes.LABEL_SOURCES`): "names",
    #: "synsets", "indices", "folder order" (torchvision ImageFolder's sorted folder index) or "none"
    label_source: str | None = None
    #: one line each for the user: class names that matched none of the model's, images upscaled for the model
    notes: list[str] = field(default_factory=list)


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
    """Image files with labels, read lazily; ``root`` the folder names are relative to (subset lists)."""

    paths: list[Path]
    labels: list[int]
    class_names: list[str] | None
    dataset: str
    root: Path | None = None
    order: str = "folder order"  # the label source when labels stay in the data's own order

    def names(self) -> list[str]:
        """A name per image: its path relative to the folder (``cat/1.png``: the same file name may be in several
        class folders), the file name for files named one by one, the photo's name for the samples."""
        if self.dataset == "samples":
            return [p.name for p in sets.SAMPLE_PHOTOS]
        if self.root is None:
            return [p.name for p in self.paths]
        return [p.relative_to(self.root).as_posix() for p in self.paths]


@dataclass
class _Tensors:
    x: torch.Tensor  # float [0, 1] or uint8
    y: torch.Tensor
    class_names: list[str] | None
    dataset: str
    order: str = "indices"


@dataclass
class _Dataset:
    """A map-style torch Dataset from ``--data file.py:factory``: ``dataset[i]`` = (image tensor in [0, 1], label)."""

    dataset: Any
    count: int
    class_names: list[str] | None
    name: str
    order: str = "indices"


Source = _Files | _Tensors | _Dataset


def resolve(spec: str) -> Source:
    if not isinstance(spec, str) or not spec:
        raise AdvlabError(f"a data spec must be a non-empty string, got {spec!r}")
    name, _, arg = spec.partition(":")
    if name not in ("folder", "tensors") and (file_spec := split_spec(spec)) is not None:
        return _factory_data(*file_spec)
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
        return _Files(paths, [-1] * len(paths), None, root.name, root)
    synsets = imagenet_synset_index()
    if all(SYNSET_RE.match(d.name) for d in subdirs):
        unknown = [d.name for d in subdirs if d.name not in synsets]
        if unknown:
            raise AdvlabError(f"folder {show(root)}: {unknown[0]!r} is not an ImageNet-1k synset")
        index = {d.name: synsets[d.name] for d in subdirs}
        names, dataset, order = imagenet_classes(), "imagenet", "synsets"
    else:
        index = {d.name: i for i, d in enumerate(subdirs)}
        names, dataset, order = [d.name for d in subdirs], root.name, "folder order"
    paths, labels = [], []
    for d in subdirs:
        found = _images_in(d)
        paths += found
        labels += [index[d.name]] * len(found)
    if not paths:
        raise AdvlabError(f"folder {show(root)} has class folders but no images in them")
    return _Files(paths, labels, names, dataset, root, order)


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
    x = _images(arrays["x"], f"tensors file {show(path)}")
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


def _images(x: torch.Tensor, what: str) -> torch.Tensor:
    """x as (N, C, H, W), uint8 or float32 in [0, 1], with N, C, H, W >= 1 and at most MAX_IMAGE_PIXELS per
    image; ``what`` names it in messages ("tensors file 't.npz'")."""
    if x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise AdvlabError(f"{what}: x has shape {tuple(x.shape)}, expected (N, C, H, W)")
    if len(x) == 0:
        raise AdvlabError(f"{what} holds no images (x has shape {tuple(x.shape)})")
    if x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC as saved by numpy/PIL code
    if 0 in x.shape:
        raise AdvlabError(f"{what}: x has shape {tuple(x.shape)}; every image needs at least one channel and one pixel")
    if x.shape[2] * x.shape[3] > MAX_IMAGE_PIXELS:
        raise AdvlabError(
            f"{what}: x has shape {tuple(x.shape)}, over advlab's limit of {MAX_IMAGE_PIXELS:,} pixels per image"
        )
    if x.dtype == torch.uint8:
        return x
    if not x.is_floating_point():
        raise AdvlabError(f"{what}: x has dtype {x.dtype}; use float in [0, 1] or uint8")
    x = x.float()
    if not torch.isfinite(x).all():
        raise AdvlabError(f"{what}: x contains NaN or infinite values")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 1:
        raise AdvlabError(f"{what}: x must be in [0, 1] (or uint8), found values in [{lo:.3g}, {hi:.3g}]")
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


def _factory_data(path: Path, factory: str) -> _Dataset:
    """``--data file.py:factory``: the user's file imported as a model file is (:mod:`advlab.data.pyfile`);
    ``factory()`` must return a map-style torch Dataset (``len`` and ``[i]`` -> (image in [0, 1], label));
    a ``classes`` attribute (as torchvision's ImageFolder has) names its classes."""
    ds, _ = call_factory(path, factory, "data file")
    what = f"{show(path)}:{factory}()"
    if not (hasattr(ds, "__getitem__") and hasattr(ds, "__len__")):
        raise AdvlabError(
            f"{what} returned {type(ds).__name__}, not a map-style torch Dataset (one with __len__ and __getitem__)"
        )
    try:
        n = len(ds)
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything
        raise AdvlabError(f"len() of {what} failed: {first_line(e)}") from e
    if n < 1:
        raise AdvlabError(f"{what} holds no items")
    classes = getattr(ds, "classes", None)
    ok = isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes)
    return _Dataset(ds, n, list(classes) if ok and classes else None, f"{path.stem}-{factory}")


def dataset_items(src: _Dataset, index: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Items ``index`` of a factory's Dataset as (x (B, C, H, W) float32 or uint8, y (B,) int64), checked as a
    ``tensors:`` file is (shape, finite, in [0, 1]); a failing or malformed item is one AdvlabError line."""
    imgs: list[torch.Tensor] = []
    labels: list[int] = []
    for i in index:
        try:
            item = src.dataset[i]
        except Exception as e:  # noqa: BLE001
            raise AdvlabError(f"data {src.name}: item {i} failed: {first_line(e)}") from e
        if not isinstance(item, (tuple, list)) or len(item) < 2 or not isinstance(item[0], torch.Tensor):
            raise AdvlabError(f"data {src.name}: item {i} is not a pair (image tensor in [0, 1], integer label)")
        img = item[0] if item[0].ndim != 2 else item[0][None]
        if imgs and img.shape != imgs[0].shape:
            raise AdvlabError(
                f"data {src.name}: item {i} has shape {tuple(img.shape)}, item {index[0]} {tuple(imgs[0].shape)}; "
                "a batch needs one shape (resize in the Dataset)"
            )
        imgs.append(img)
        labels.append(_item_label(item[1], src.name, i))
    x = _images(torch.stack(imgs), f"data {src.name}") if imgs else torch.empty(0, 3, 1, 1)
    return x, torch.tensor(labels, dtype=torch.long)


def _item_label(label: object, name: str, i: int) -> int:
    value = label.item() if isinstance(label, torch.Tensor) and label.numel() == 1 else label
    if isinstance(value, bool) or not isinstance(value, int) or not -1 <= value <= MAX_LABEL:
        raise AdvlabError(f"data {name}: item {i} has label {value!r:.40}; labels are class indices (or -1)")
    return value


def dataset_labels(src: _Dataset) -> torch.Tensor:
    """All labels of a factory's Dataset: its ``targets`` (as torchvision's data sets have) when they are one per
    item, else read item by item (which decodes the images)."""
    targets = getattr(src.dataset, "targets", None)
    if targets is not None and len(targets) == src.count:
        return torch.tensor([_item_label(t, src.name, i) for i, t in enumerate(targets)], dtype=torch.long)
    return torch.cat([dataset_items(src, [i])[1] for i in range(src.count)])


# ----------------------------------------------------------------------------------------------- facts
def finish(x: torch.Tensor, size: int | None, channels: int | None) -> torch.Tensor:
    """A batch of a tensor source as float32 in [0, 1] (uint8 / 255), ``channels`` converted, resized to ``size``."""
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    x = convert_channels(x, channels)
    if size is not None:
        x = resize_batch(x, size)
    return x


def describe(spec: str, size: int | None = None, *, channels: int | None = None) -> DatasetInfo:
    """Facts about a data spec (count, channels, size, classes) without reading every image: image files of one
    size report it (from their headers), of several sizes None, unless ``size`` is given."""
    return describe_source(resolve(spec), spec, size, channels)


def describe_source(src: Source, spec: str, size: int | None, channels: int | None) -> DatasetInfo:
    if isinstance(src, _Dataset):
        x, _ = dataset_items(src, [0])
        hw = (size, size) if size else (int(x.shape[2]), int(x.shape[3]))
        names = src.class_names
        num = len(names) if names else None
        return DatasetInfo(spec, src.name, src.count, channels or int(x.shape[1]), hw, num, names)
    if isinstance(src, _Tensors):
        c = channels or src.x.shape[1]
        hw = (size, size) if size else (int(src.x.shape[2]), int(src.x.shape[3]))
        num = (
            len(src.class_names)
            if src.class_names
            else (int(src.y.max()) + 1 if len(src.y) and int(src.y.max()) >= 0 else None)
        )
        return DatasetInfo(spec, src.dataset, len(src.y), c, hw, num, src.class_names, photos=False)
    if src.dataset == "samples":
        side = size or DEFAULT_PHOTO_SIZE
        count = len(sets.SAMPLE_PHOTOS)
        return DatasetInfo(spec, "imagenet", count, channels or 3, (side, side), 1000, src.class_names, photos=True)
    shared = None if size else shared_shape(src.paths)
    side_hw = (size, size) if size else (shared[1], shared[2]) if shared else None
    names = src.class_names
    c = channels or (shared[0] if shared else 3)
    return DatasetInfo(spec, src.dataset, len(src.paths), c, side_hw, len(names) if names else None, names, photos=True)


def shared_shape(paths: Sequence[Path]) -> tuple[int, int, int] | None:
    """(channels, height, width) when every image file has the same size (read from the headers, no pixel
    decoded): channels 1 when all are grey, else 3; None when the sizes differ."""
    first: tuple[int, int] | None = None
    grey = True
    for p in paths:
        w, h, c = image_header(p)
        first = first or (h, w)
        grey = grey and c == 1
        if (h, w) != first:
            return None
    return (1 if grey else 3, *first) if first else None


def native_shape(spec: str) -> tuple[int, int] | None:
    """(channels, side) of a data set whose images are all ``side`` x ``side`` (a tensors set's own shape; image
    files' from their headers); None for the sample photos and for sizes that differ or are not square."""
    src = resolve(spec)
    if isinstance(src, _Files) and src.dataset == "samples":
        return None
    info = describe_source(src, spec, None, None)
    if info.size is None or info.channels is None or info.size[0] != info.size[1]:
        return None
    return info.channels, info.size[0]


def item_names(spec: str, limit: int | None = None) -> list[str]:
    """A readable name per item: file names for image files, photo names for samples, ``spec[i]`` otherwise."""
    names = source_names(resolve(spec), spec)
    return names if limit is None else names[:limit]


def source_names(src: Source, spec: str) -> list[str]:
    """A readable name per item of ``src``: file names, the sample photos' names, else ``spec[i]``."""
    if isinstance(src, _Files):
        return src.names()
    if isinstance(src, _Tensors) and src.dataset == "samples":  # the sample photos, decoded already
        return [p.name for p in sets.SAMPLE_PHOTOS]
    n = src.count if isinstance(src, _Dataset) else len(src.y)
    return [f"{spec}[{i}]" for i in range(n)]
