"""Readers for the official distribution formats of CIFAR-10, MNIST and SVHN.

Every reader returns ``(x, y)`` with

* ``x``: a ``torch.uint8`` tensor of shape ``(N, C, H, W)``, raw pixel intensities 0..255
  (CIFAR-10 and SVHN: ``C=3`` in RGB order, ``32x32``; MNIST: ``C=1``, ``28x28``);
* ``y``: a ``torch.int64`` tensor of shape ``(N,)`` with class indices 0..9 (see :data:`CLASS_NAMES`).

Files are looked up in ``root`` (default ``cache_dir() / "<dataset>"``). When they are missing and
downloading is allowed (``download=True`` and the environment variable ``ADVLAB_OFFLINE`` is not
``"1"``) they are fetched from the official locations into ``root``: each file is written to a
temporary name in the same directory, checked against its md5 sum, and only then renamed into
place, so an interrupted download never leaves a half-written file. Any failure to obtain a file
raises :class:`~advlab.errors.NotAvailableError` with a one-line message naming the files to put
where; a file that is present but malformed raises :class:`~advlab.errors.AdvlabError` naming it.

Formats read here:

* CIFAR-10, binary version (``cifar-10-binary.tar.gz``): ``cifar-10-batches-bin/data_batch_{1..5}.bin``
  (train, concatenated in that order) and ``test_batch.bin``. Each file is a sequence of
  3073-byte records: 1 label byte (0..9), then 3072 pixel bytes = 1024 red, 1024 green, 1024 blue,
  each plane 32x32 in row-major order.
* MNIST, IDX format: ``{train,t10k}-images-idx3-ubyte`` and ``{train,t10k}-labels-idx1-ubyte``,
  each optionally gzipped (``.gz``). Header: big-endian uint32 magic (``0x00000803`` images,
  ``0x00000801`` labels), then one big-endian uint32 per dimension; then the uint8 payload,
  row-major.
* SVHN, format 2 (cropped digits): ``{train,test}_32x32.mat``, MATLAB v5 files holding
  ``X`` of shape ``(32, 32, 3, N)`` uint8 (height, width, channel, sample) and ``y`` of shape
  ``(N, 1)`` with labels 1..10, where 10 stands for the digit 0 (mapped to 0 here).
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import math
import os
import stat
import struct
import tarfile
import tempfile
import urllib.request
import zlib
from contextlib import nullcontext
from pathlib import Path
from typing import BinaryIO, Protocol

import numpy as np
import torch

from advlab.data.files import kind, open_regular, show, stat_input
from advlab.errors import AdvlabError, NotAvailableError

__all__ = [
    "CLASS_NAMES",
    "cache_dir",
    "read_cifar10",
    "read_mnist",
    "read_svhn",
]

CLASS_NAMES: dict[str, list[str]] = {
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
    "mnist": [str(d) for d in range(10)],
    "svhn": [str(d) for d in range(10)],
}

SPLITS: tuple[str, ...] = ("train", "test")

# Official locations. Module constants so that they can be pointed elsewhere (tests, mirrors).
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5: str | None = "c32a1d4ab5d03f1284b67883e8d87530"
MNIST_BASE_URL = "https://ossci-datasets.s3.amazonaws.com/mnist/"
MNIST_MD5: dict[str, str] = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
SVHN_BASE_URL = "http://ufldl.stanford.edu/housenumbers/"
SVHN_MD5: dict[str, str] = {
    "train_32x32.mat": "e26dedcc434d2e4c54c9b2d4a06d8373",
    "test_32x32.mat": "eb5a983be6a315427106f1b164d9cef3",
}

DOWNLOAD_TIMEOUT_S = 10.0  # socket timeout (connect and each read), seconds
#: the most bytes one download may bring (the largest official file, SVHN's train_32x32.mat, has 182 MB)
MAX_DOWNLOAD_BYTES = 256 << 20
_CHUNK = 1 << 20

_CIFAR_DIR = "cifar-10-batches-bin"
_CIFAR_TARBALL = "cifar-10-binary.tar.gz"
_CIFAR_RECORD = 1 + 3 * 32 * 32  # bytes per record: label + R, G, B planes
_CIFAR_FILES: dict[str, list[str]] = {
    "train": [f"data_batch_{i}.bin" for i in range(1, 6)],
    "test": ["test_batch.bin"],
}
#: records in one official batch file: the most a batch may hold
_CIFAR_MAX_RECORDS = 10_000
#: bounds on the tarball: the official one inflates to 185 MB in 8 members (6 batches, a readme, the class names)
_CIFAR_TAR_MAX_BYTES = 200 << 20
_CIFAR_TAR_MAX_MEMBERS = 100

_MNIST_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 0x00000803
_IDX_LABELS_MAGIC = 0x00000801
#: the most images (and labels) an MNIST file may declare: train has 60,000, test 10,000
_MNIST_MAX_ITEMS = 70_000

_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}
#: the most images an SVHN file may declare (train has 73,257, test 26,032), and the most bytes its variables
#: may inflate to (X as uint8, y as double, and headers)
_SVHN_MAX_IMAGES = 100_000
_SVHN_MAX_BYTES = _SVHN_MAX_IMAGES * (3 * 32 * 32 + 8) + (1 << 20)


# --------------------------------------------------------------------------------------------- #
# locations and download
# --------------------------------------------------------------------------------------------- #


def cache_dir() -> Path:
    """The directory under which datasets are cached: ``$ADVLAB_DATA`` if set, else
    ``~/.cache/advlab/data``. Each dataset lives in a subdirectory named after it."""
    env = os.environ.get("ADVLAB_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "advlab" / "data"


def _check_split(dataset: str, split: str) -> None:
    if split not in SPLITS:
        raise AdvlabError(f"{dataset}: unknown split {split!r}; valid splits: {', '.join(SPLITS)}")


def _resolve_root(dataset: str, root: str | Path | None) -> tuple[Path, bool]:
    """Return ``(root, is_default)``."""
    if root is None:
        return cache_dir() / dataset, True
    return Path(root).expanduser(), False


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _offline() -> bool:
    return os.environ.get("ADVLAB_OFFLINE", "").strip() == "1"


def _not_available(dataset: str, root: Path, is_default: bool, reason: str, what: str) -> NotAvailableError:
    """Build the one-line error for files that are missing and could not be downloaded.

    ``what`` names the files (relative to ``root``) and where they come from.
    """
    hint = f"put {what} into {show(root)}"
    if is_default:
        hint += f" or set ADVLAB_DATA to a directory holding {dataset}/"
    return NotAvailableError(f"{dataset}: not found in {show(root)} and {_one_line(reason)}; {hint}")


def _no_download_reason(download: bool) -> str | None:
    """Why no network attempt is made, or None if downloading is allowed."""
    if not download:
        return "downloading is disabled (download=False)"
    if _offline():
        return "downloading is disabled (ADVLAB_OFFLINE=1)"
    return None


def _download(url: str, dest: Path, md5: str | None) -> None:
    """Download ``url`` to ``dest`` atomically, verifying ``md5`` if given.

    Streams into a temporary file next to ``dest`` and renames it into place only when complete
    and verified. Raises ``OSError``/``ValueError`` (and subclasses such as ``URLError``) on
    failure; the caller turns them into :class:`NotAvailableError`.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5()
        size = 0
        with os.fdopen(fd, "wb") as out:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    size += len(chunk)
                    if size > MAX_DOWNLOAD_BYTES:
                        raise ValueError(
                            f"{url} sends more than {MAX_DOWNLOAD_BYTES:,} bytes, more than any official file"
                        )
                    digest.update(chunk)
                    out.write(chunk)
        if md5 is not None and digest.hexdigest() != md5.lower():
            raise ValueError(f"md5 mismatch for {url}: got {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def _download_reason(exc: BaseException) -> str:
    return f"could not download ({type(exc).__name__}: {_one_line(exc)})"


# Exceptions a download attempt may raise: everything network-ish derives from OSError
# (URLError, HTTPError, socket.timeout, ConnectionError) or is a ValueError (bad URL, md5
# mismatch); HTTPException covers protocol errors, EOFError/TarError/zlib.error a bad archive.
_DOWNLOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    http.client.HTTPException,
    EOFError,
    tarfile.TarError,
    zlib.error,
)


# --------------------------------------------------------------------------------------------- #
# helpers for reading
# --------------------------------------------------------------------------------------------- #


def _present(path: Path) -> bool:
    """Whether a data file is there: a regular file (or a symlink to one); nothing there is False, anything else
    there (a directory, FIFO, device) is an :class:`AdvlabError` rather than a download over it."""
    st = stat_input(path, "data file")
    if st is None:
        return False
    if not stat.S_ISREG(st.st_mode):
        raise AdvlabError(
            f"{show(path)} is {kind(st.st_mode)}, not a regular file; remove it or put the data file there"
        )
    return True


def _cannot_read(path: Path, exc: BaseException) -> AdvlabError:
    return AdvlabError(f"{show(path)}: cannot read ({type(exc).__name__}: {_one_line(exc)})")


class _Readable(Protocol):
    """What the bounded readers need of a byte stream: an open file, or a gzip stream over one."""

    def read(self, size: int = -1, /) -> bytes: ...


class _Bounded:
    """A read-only stream over ``raw`` that refuses to deliver more than ``limit`` bytes in all: a decompression
    bomb (or a tar header that declares gigabytes of metadata) stops here, having held at most ``limit`` bytes."""

    def __init__(self, raw: _Readable, limit: int, name: str) -> None:
        self.raw, self.left, self.limit, self.name = raw, limit, limit, name

    def read(self, n: int | None = -1) -> bytes:
        want = self.left + 1 if n is None or n < 0 else min(n, self.left + 1)
        data = self.raw.read(want)
        self.left -= len(data)
        if self.left < 0:
            raise AdvlabError(
                f"{self.name} inflates to more than {self.limit:,} bytes, more than the official file "
                "(a decompression bomb, or not the official file?)"
            )
        return data


def _to_tensors(x: np.ndarray, y: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    x = np.ascontiguousarray(x, dtype=np.uint8)
    if not x.flags.writeable:
        x = x.copy()
    y = np.ascontiguousarray(y, dtype=np.int64)
    if not y.flags.writeable:
        y = y.copy()
    return torch.from_numpy(x), torch.from_numpy(y)


def _check_labels(path: Path, labels: np.ndarray, high: int) -> None:
    if labels.size and int(labels.max()) > high:
        bad = int(labels.max())
        raise AdvlabError(f"{show(path)}: label {bad} out of range 0..{high} (corrupt file?)")


# --------------------------------------------------------------------------------------------- #
# CIFAR-10
# --------------------------------------------------------------------------------------------- #


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary batch: ``(x uint8 (N, 3, 32, 32), y uint8 (N,))``; at most 10,000 records (an
    official batch) are read: a longer file is refused without reading the rest."""
    limit = _CIFAR_MAX_RECORDS * _CIFAR_RECORD
    try:
        with open_regular(path, "data file") as fh:
            raw = fh.read(limit + 1)
    except OSError as exc:
        raise _cannot_read(path, exc) from None
    if len(raw) == 0:
        raise AdvlabError(f"{show(path)}: empty file; not a CIFAR-10 binary batch")
    if len(raw) > limit:
        raise AdvlabError(
            f"{show(path)}: more than {limit:,} bytes, the size of a CIFAR-10 batch of "
            f"{_CIFAR_MAX_RECORDS:,} records (not a CIFAR-10 binary batch?)"
        )
    if len(raw) % _CIFAR_RECORD:
        raise AdvlabError(
            f"{show(path)}: size {len(raw)} bytes is not a whole number of {_CIFAR_RECORD}-byte "
            "CIFAR-10 records (truncated or not a CIFAR-10 binary batch)"
        )
    records = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    labels = records[:, 0]
    _check_labels(path, labels, 9)
    images = records[:, 1:].reshape(-1, 3, 32, 32)
    return images, labels


def _extract_cifar(tarball: Path, root: Path) -> None:
    """Extract the six ``cifar-10-batches-bin/*.bin`` batches of the tarball into ``root``.

    Only regular-file members with exactly those names are written (a symlink, device, hard link or ``../`` name
    is never extracted), one by one through temporary files. The archive is read as a stream, bounded: at most
    :data:`_CIFAR_TAR_MAX_BYTES` inflated, :data:`_CIFAR_TAR_MAX_MEMBERS` members, and no member may declare more
    than a batch's bytes; a hostile archive is refused before it can fill memory or disk.
    """
    wanted = {f"{_CIFAR_DIR}/{n}": n for names in _CIFAR_FILES.values() for n in names}
    limit = _CIFAR_MAX_RECORDS * _CIFAR_RECORD
    with open_regular(tarball, "data file") as fh, gzip.GzipFile(fileobj=fh, mode="rb") as gz:
        stream = _Bounded(gz, _CIFAR_TAR_MAX_BYTES, show(tarball))
        # the stub asks for a whole file object; stream mode ("r|") only calls read()
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for count, member in enumerate(tar, 1):
                if count > _CIFAR_TAR_MAX_MEMBERS:
                    raise AdvlabError(
                        f"{show(tarball)} holds more than {_CIFAR_TAR_MAX_MEMBERS} members (not the CIFAR-10 tarball?)"
                    )
                if member.size > limit:
                    raise AdvlabError(
                        f"{show(tarball)}: member {member.name!r} declares {member.size:,} bytes; "
                        f"a CIFAR-10 batch has at most {limit:,}"
                    )
                if member.isfile() and member.name in wanted:
                    _write_member(tar, member, root / _CIFAR_DIR / wanted[member.name])


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path) -> None:
    """Write one tar member to ``dest`` through a temporary file in the same folder (renamed when complete)."""
    src = tar.extractfile(member)
    if src is None:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, src:
            while chunk := src.read(_CHUNK):
                out.write(chunk)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            tmp.unlink()


def _ensure_cifar10(split: str, root: Path, is_default: bool, download: bool) -> list[Path]:
    paths = [root / _CIFAR_DIR / name for name in _CIFAR_FILES[split]]
    if all([_present(p) for p in paths]):
        return paths
    tarball = root / _CIFAR_TARBALL
    if _present(tarball):
        # The user placed the official tarball itself: extract it (and leave it where it is).
        try:
            _extract_cifar(tarball, root)
        except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
            raise AdvlabError(f"{show(tarball)}: cannot extract ({type(exc).__name__}: {_one_line(exc)})") from None
        if all(p.is_file() for p in paths):
            return paths
    missing = [p for p in paths if not p.is_file()]
    names = ", ".join(f"{_CIFAR_DIR}/{p.name}" for p in missing)
    what = f"{names} (from {_CIFAR_TARBALL}, {CIFAR10_URL}; or that tarball itself)"
    if tarball.is_file():
        lacks = f"{_CIFAR_TARBALL} there lacks {', '.join(p.name for p in missing)}"
        raise _not_available("cifar10", root, is_default, lacks, what)
    reason = _no_download_reason(download)
    if reason is not None:
        raise _not_available("cifar10", root, is_default, reason, what)
    try:
        _download(CIFAR10_URL, tarball, CIFAR10_MD5)
        _extract_cifar(tarball, root)
    except _DOWNLOAD_ERRORS as exc:
        raise _not_available("cifar10", root, is_default, _download_reason(exc), what) from None
    finally:
        if tarball.exists():
            tarball.unlink()  # the extracted batches are what we read; do not keep 160 MB twice
    still = [p for p in paths if not p.is_file()]
    if still:
        reason = f"the downloaded {_CIFAR_TARBALL} lacked {', '.join(p.name for p in still)}"
        raise _not_available("cifar10", root, is_default, reason, what)
    return paths


def read_cifar10(
    split: str = "test", root: str | Path | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read CIFAR-10 (binary version) from ``root/cifar-10-batches-bin/``.

    ``split="train"`` concatenates ``data_batch_1.bin`` .. ``data_batch_5.bin`` in that order
    (50000 images); ``split="test"`` reads ``test_batch.bin`` (10000 images).

    Returns ``x`` uint8 ``(N, 3, 32, 32)`` (RGB, values 0..255) and ``y`` int64 ``(N,)`` with
    class indices into ``CLASS_NAMES["cifar10"]``. ``root`` defaults to ``cache_dir()/"cifar10"``;
    missing files are downloaded (the binary tarball, md5-checked, then extracted) unless
    ``download=False`` or ``ADVLAB_OFFLINE=1``.
    """
    _check_split("cifar10", split)
    root_path, is_default = _resolve_root("cifar10", root)
    paths = _ensure_cifar10(split, root_path, is_default, download)
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    for path in paths:
        images, labels = _read_cifar_batch(path)
        xs.append(images)
        ys.append(labels)
    return _to_tensors(np.concatenate(xs), np.concatenate(ys))


# --------------------------------------------------------------------------------------------- #
# MNIST
# --------------------------------------------------------------------------------------------- #


def _read_idx(path: Path, magic: int, item_shape: tuple[int, ...]) -> np.ndarray:
    """Read an IDX file of unsigned bytes with the given magic number, holding at most :data:`_MNIST_MAX_ITEMS`
    items of ``item_shape`` (``(28, 28)`` images, ``()`` labels). The header is read and checked first; then
    exactly the bytes it declares, plus one to detect trailing data: a ``.gz`` that inflates to gigabytes is
    refused from its header, never inflated."""
    ndim = 1 + len(item_shape)
    try:
        with open_regular(path, "data file") as raw:
            with gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else nullcontext(raw) as fh:
                dims = _idx_header(fh, path, magic, ndim)
                _check_idx_dims(path, dims, item_shape)
                need = math.prod(dims)
                payload = fh.read(need + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise _cannot_read(path, exc) from None
    if len(payload) != need:
        more = "more" if len(payload) > need else f"{len(payload)} (truncated or corrupt)"
        shape = "x".join(map(str, dims))
        raise AdvlabError(f"{show(path)}: IDX dims {shape} need {need} data bytes but the file has {more}")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def _idx_header(fh: _Readable, path: Path, magic: int, ndim: int) -> tuple[int, ...]:
    """The dimensions in an IDX header, after its magic number is checked."""
    head = fh.read(4)
    if len(head) < 4:
        raise AdvlabError(f"{show(path)}: file of {len(head)} bytes is too short for an IDX header")
    found = int.from_bytes(head, "big")
    if found != magic:
        raise AdvlabError(
            f"{show(path)}: bad IDX magic 0x{found:08x}, expected 0x{magic:08x} "
            f"({'images' if magic == _IDX_IMAGES_MAGIC else 'labels'} file)"
        )
    raw_dims = fh.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise AdvlabError(f"{show(path)}: truncated IDX header ({4 + len(raw_dims)} bytes, need {4 + 4 * ndim})")
    return struct.unpack(f">{ndim}I", raw_dims)


def _check_idx_dims(path: Path, dims: tuple[int, ...], item_shape: tuple[int, ...]) -> None:
    if dims[1:] != item_shape:
        raise AdvlabError(f"{show(path)}: images are {'x'.join(map(str, dims[1:]))}, expected 28x28 for MNIST")
    if dims[0] > _MNIST_MAX_ITEMS:
        raise AdvlabError(
            f"{show(path)}: the header declares {dims[0]:,} items; an MNIST file has at most "
            f"{_MNIST_MAX_ITEMS:,} (not an MNIST file?)"
        )


def _mnist_names(split: str) -> tuple[str, str]:
    prefix = _MNIST_PREFIX[split]
    return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"


def _find_plain_or_gz(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if _present(candidate):
            return candidate
    return None


def _ensure_mnist(split: str, root: Path, is_default: bool, download: bool) -> tuple[Path, Path]:
    names = _mnist_names(split)
    images, labels = (_find_plain_or_gz(root, n) for n in names)
    if images is not None and labels is not None:
        return images, labels
    missing = [n for n, f in zip(names, (images, labels), strict=True) if f is None]
    what = " and ".join(f"{n}.gz" for n in missing) + f" (or the gunzipped files, from {MNIST_BASE_URL})"
    reason = _no_download_reason(download)
    if reason is not None:
        raise _not_available("mnist", root, is_default, reason, what)
    for name in missing:
        gz = f"{name}.gz"
        try:
            _download(MNIST_BASE_URL + gz, root / gz, MNIST_MD5.get(gz))
        except _DOWNLOAD_ERRORS as exc:
            raise _not_available("mnist", root, is_default, _download_reason(exc), what) from None
    images, labels = (_find_plain_or_gz(root, n) for n in names)
    assert images is not None and labels is not None
    return images, labels


def read_mnist(
    split: str = "test", root: str | Path | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read MNIST from its IDX files in ``root``.

    ``split="train"`` reads ``train-images-idx3-ubyte`` / ``train-labels-idx1-ubyte`` (60000
    images), ``split="test"`` the ``t10k-*`` pair (10000 images); each file may be plain or
    gzipped (``.gz``; the plain one is preferred when both exist).

    Returns ``x`` uint8 ``(N, 1, 28, 28)`` (grey levels 0..255, 0 = background) and ``y`` int64
    ``(N,)`` with the digit 0..9. ``root`` defaults to ``cache_dir()/"mnist"``; missing files are
    downloaded (the ``.gz`` files, md5-checked) unless ``download=False`` or ``ADVLAB_OFFLINE=1``.
    """
    _check_split("mnist", split)
    root_path, is_default = _resolve_root("mnist", root)
    images_path, labels_path = _ensure_mnist(split, root_path, is_default, download)
    images = _read_idx(images_path, _IDX_IMAGES_MAGIC, (28, 28))
    labels = _read_idx(labels_path, _IDX_LABELS_MAGIC, ())
    if images.shape[0] != labels.shape[0]:
        raise AdvlabError(
            f"{show(images_path)}: {images.shape[0]} images but {labels_path.name!r} has {labels.shape[0]} labels"
        )
    _check_labels(labels_path, labels, 9)
    return _to_tensors(images[:, None, :, :], labels)


# --------------------------------------------------------------------------------------------- #
# SVHN
# --------------------------------------------------------------------------------------------- #


def _ensure_svhn(split: str, root: Path, is_default: bool, download: bool) -> Path:
    name = _SVHN_FILES[split]
    path = root / name
    if _present(path):
        return path
    what = f"{name} (SVHN format 2, cropped digits, from {SVHN_BASE_URL})"
    reason = _no_download_reason(download)
    if reason is not None:
        raise _not_available("svhn", root, is_default, reason, what)
    try:
        _download(SVHN_BASE_URL + name, path, SVHN_MD5.get(name))
    except _DOWNLOAD_ERRORS as exc:
        raise _not_available("svhn", root, is_default, _download_reason(exc), what) from None
    return path


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an SVHN format-2 ``.mat``: ``(x uint8 (N, 3, 32, 32), y int64 (N,))``, 10 -> 0.

    Bounded before scipy reads it: the variables' headers must declare at most :data:`_SVHN_MAX_IMAGES` images,
    and all its data elements together may inflate to at most :data:`_SVHN_MAX_BYTES` (checked by inflating the
    compressed ones without keeping them)."""
    import scipy.io

    with open_regular(path, "data file") as fh:
        try:
            _check_svhn_headers(path, scipy.io.whosmat(fh))
            fh.seek(0)
            _check_mat_size(fh, path, _SVHN_MAX_BYTES)
            fh.seek(0)
            mat = scipy.io.loadmat(fh, variable_names=("X", "y"))
        except AdvlabError:
            raise
        except Exception as exc:  # scipy raises many types on corrupt input; all mean "bad file"
            raise AdvlabError(
                f"{show(path)}: not a readable MATLAB v5 file ({type(exc).__name__}: {_one_line(exc)})"
            ) from None
    return _svhn_arrays(path, mat)


def _check_svhn_headers(path: Path, variables: list[tuple[str, tuple[int, ...], str]]) -> None:
    """X must be declared (32, 32, 3, N) with N <= _SVHN_MAX_IMAGES, y at most that many labels."""
    shapes = {name: tuple(shape) for name, shape, _ in variables}
    x_shape = shapes.get("X")
    if x_shape is not None and (len(x_shape) != 4 or x_shape[:3] != (32, 32, 3)):
        raise AdvlabError(f"{show(path)}: X has shape {x_shape}, expected (32, 32, 3, N)")
    if x_shape is not None and x_shape[3] > _SVHN_MAX_IMAGES:
        raise AdvlabError(
            f"{show(path)}: X declares {x_shape[3]:,} images; an SVHN file has at most "
            f"{_SVHN_MAX_IMAGES:,} (the extra set is not read)"
        )
    if "y" in shapes and math.prod(shapes["y"]) > _SVHN_MAX_IMAGES:
        raise AdvlabError(f"{show(path)}: y declares shape {shapes['y']}, more labels than an SVHN file has")


def _check_mat_size(fh: BinaryIO, path: Path, limit: int) -> None:
    """Walk the top-level data elements of a MATLAB v5 file and refuse one whose elements hold (compressed
    ones: inflate to) more than ``limit`` bytes in all; compressed data is inflated in chunks and dropped."""
    header = fh.read(128)
    order = "<" if header[126:128] == b"IM" else ">"
    total = 0
    while len(tag := fh.read(8)) == 8:
        mdtype, nbytes = struct.unpack(f"{order}II", tag)
        if mdtype == 15:  # miCOMPRESSED: a zlib stream of nbytes
            total += _inflated_size(fh, nbytes, limit - total)
        else:
            total += nbytes
            fh.seek(nbytes, os.SEEK_CUR)
        if total > limit:
            raise AdvlabError(
                f"{show(path)}: its variables hold more than {limit:,} bytes, more than an SVHN file "
                "(a decompression bomb, or not an SVHN file?)"
            )


def _inflated_size(fh: BinaryIO, nbytes: int, cap: int) -> int:
    """How many bytes the next ``nbytes`` of zlib data inflate to, counting no further than just past ``cap``."""
    inflate, left, count = zlib.decompressobj(), nbytes, 0
    while left > 0 and count <= cap:
        chunk = fh.read(min(left, _CHUNK))
        if not chunk:
            break
        left -= len(chunk)
        while chunk and count <= cap:
            count += len(inflate.decompress(chunk, _CHUNK))
            chunk = inflate.unconsumed_tail
    return count


def _svhn_arrays(path: Path, mat: dict) -> tuple[np.ndarray, np.ndarray]:
    """X and y of a loaded SVHN .mat, checked, as (N, 3, 32, 32) uint8 images and 0..9 labels."""
    if "X" not in mat or "y" not in mat:
        absent = [k for k in ("X", "y") if k not in mat]
        raise AdvlabError(f"{show(path)}: missing variable(s) {', '.join(absent)}; not an SVHN .mat file")
    X, y = mat["X"], mat["y"]
    if not isinstance(X, np.ndarray) or X.ndim != 4 or X.shape[:3] != (32, 32, 3):
        shape = getattr(X, "shape", None)
        raise AdvlabError(f"{show(path)}: X has shape {shape}, expected (32, 32, 3, N)")
    if X.dtype != np.uint8:
        if not np.issubdtype(X.dtype, np.integer) or (X.size and (X.min() < 0 or X.max() > 255)):
            raise AdvlabError(f"{show(path)}: X has dtype {X.dtype}, expected uint8 pixels 0..255")
    if not isinstance(y, np.ndarray) or y.ndim not in (1, 2) or (y.ndim == 2 and y.shape[1] != 1):
        raise AdvlabError(f"{show(path)}: y has shape {getattr(y, 'shape', None)}, expected (N, 1)")
    y = y.reshape(-1)
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.floating)):
        raise AdvlabError(f"{show(path)}: y has dtype {y.dtype}, expected integer labels 1..10")
    if y.shape[0] != X.shape[3]:
        raise AdvlabError(f"{show(path)}: X holds {X.shape[3]} images but y has {y.shape[0]} labels")
    if np.issubdtype(y.dtype, np.floating) and np.any(y != np.round(y)):
        raise AdvlabError(f"{show(path)}: y holds non-integer labels")
    labels = y.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise AdvlabError(f"{show(path)}: labels span {labels.min()}..{labels.max()}, expected 1..10 (10 = digit 0)")
    labels[labels == 10] = 0
    images = X.astype(np.uint8, copy=False).transpose(3, 2, 0, 1)  # (H, W, C, N) -> (N, C, H, W)
    return images, labels


def read_svhn(
    split: str = "test", root: str | Path | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Read SVHN format 2 (cropped 32x32 digits) from ``root/{train,test}_32x32.mat``.

    Returns ``x`` uint8 ``(N, 3, 32, 32)`` (RGB, values 0..255) and ``y`` int64 ``(N,)`` with the
    digit 0..9 (the file's label 10 means digit 0 and is mapped to 0). ``train`` has 73257
    images, ``test`` 26032 (the ``extra`` set is not read). ``root`` defaults to
    ``cache_dir()/"svhn"``; a missing file is downloaded (md5-checked) unless ``download=False``
    or ``ADVLAB_OFFLINE=1``.
    """
    _check_split("svhn", split)
    root_path, is_default = _resolve_root("svhn", root)
    path = _ensure_svhn(split, root_path, is_default, download)
    images, labels = _read_svhn_mat(path)
    return _to_tensors(images, labels)
