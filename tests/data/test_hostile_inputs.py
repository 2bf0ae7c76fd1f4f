"""Issue 21: every input has a bound. Hostile files given as data: each is refused with one AdvlabError line,
quickly, before it is read whole (or, for a FIFO, before anything blocks), and nothing is written.

Each case builds its hostile file in ``tmp_path``, small on disk: a 1 x 2,000,000 PNG is a few KB, a gzip that
declares ten million MNIST images holds a few KB of zeros.
"""

from __future__ import annotations

import gzip
import io
import os
import socket
import struct
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from advlab import data
from advlab.data import files, images, official, specs
from advlab.data.images import MAX_ASPECT, MAX_IMAGE_PIXELS, read_image, resize_batch
from tests.cli.helpers import run_cli
from tests.hostile import refuses

#: a path component longer than any file system allows (NAME_MAX is 255 on Linux)
LONG = "n" * 300


def _cli_one_line(tmp_path: Path, argv: list[str]) -> str:
    """Run the CLI in-process: exit 2, exactly one non-empty stderr line, no traceback, nothing new in tmp_path."""
    before = sorted(p.name for p in tmp_path.iterdir())
    rc, _, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].strip(), err
    assert lines[0].startswith("advlab ") and "error:" in lines[0], err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return lines[0]


def _png(path: Path, w: int, h: int) -> Path:
    Image.new("L", (w, h), 128).save(path)
    return path


def _png_header(path: Path, w: int, h: int) -> Path:
    """A PNG that claims ``w`` x ``h`` pixels and holds almost no data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
    return path


# ------------------------------------------------------------------------------------ not regular files
def test_a_fifo_given_as_an_image_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "x.png"
    os.mkfifo(fifo)
    refuses(lambda: data.load(str(fifo)), r"'.*x\.png' is a FIFO \(named pipe\), not a regular file")
    refuses(lambda: read_image(fifo, 8, 1), "FIFO")
    refuses(lambda: data.load(f"tensors:{tmp_path / 'x.png'}"), "FIFO")
    line = _cli_one_line(tmp_path, ["classify", str(fifo), "--model", "digits-cnn"])
    assert "FIFO" in line


def test_a_fifo_swapped_in_after_the_check_still_cannot_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The race: the path was a regular file at ``stat`` time and is a FIFO at ``open`` time."""
    fifo = tmp_path / "race.png"
    os.mkfifo(fifo)
    monkeypatch.setattr(files, "require_regular", lambda path, what="file": os.stat(path))
    refuses(lambda: files.open_regular(fifo, "image"), "is a FIFO", within_s=5)


def test_folders_and_globs_skip_fifos_and_devices(tmp_path: Path) -> None:
    d = tmp_path / "imgs"
    d.mkdir()
    _png(d / "a.png", 8, 8)
    os.mkfifo(d / "b.png")
    (d / "c.png").symlink_to("/dev/zero")
    (d / "d.png").symlink_to(d / "missing.png")  # dangling
    x, _ = data.load(str(d), size=8, channels=1)
    assert len(x) == 1
    x, _ = data.load(str(d / "*.png"), size=8, channels=1)
    assert len(x) == 1


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/null"])
def test_devices_are_refused(tmp_path: Path, device: str) -> None:
    refuses(lambda: data.load(device), "is a character device, not a regular file")
    refuses(lambda: data.load(f"tensors:{device}"), "character device")
    link = tmp_path / "zero.npz"
    link.symlink_to(device)
    refuses(lambda: data.load(f"tensors:{link}"), "character device")


def test_a_socket_is_refused(tmp_path: Path) -> None:
    path = Path(f"/tmp/advlab-sock-{os.getpid()}.png")
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(path))
        refuses(lambda: data.load(str(path)), "is a socket")
    finally:
        sock.close()
        path.unlink(missing_ok=True)


def test_directories_and_links(tmp_path: Path) -> None:
    (tmp_path / "dir.npz").mkdir()
    refuses(lambda: data.load(f"tensors:{tmp_path / 'dir.npz'}"), "is a directory")
    refuses(lambda: read_image(tmp_path / "dir.npz"), "is a directory, not an image")
    refuses(lambda: data.load("tensors:"), "tensors needs a file")
    (tmp_path / "loop.png").symlink_to(tmp_path / "loop.png")
    refuses(lambda: data.load(str(tmp_path / "loop.png")), "symbolic links")
    good = _png(tmp_path / "good.png", 8, 8)
    (tmp_path / "link.png").symlink_to(good)  # a symlink to a regular file is read
    assert data.load(str(tmp_path / "link.png"), size=8, channels=1)[0].shape == (1, 1, 8, 8)


# ------------------------------------------------------------------------------------ names
LONG_SPECS = [f"{LONG}.png", f"{LONG}/x.png", f"tensors:{LONG}.npz", f"folder:{LONG}", f"{LONG}/*.png"]


@pytest.mark.parametrize("spec", LONG_SPECS)
def test_names_too_long_for_the_file_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str) -> None:
    monkeypatch.chdir(tmp_path)
    err = refuses(lambda: data.load(spec), "name too long|no such|no files match")
    assert len(str(err)) < 400  # the name is cut in the middle


def test_a_name_too_long_on_the_command_line(tmp_path: Path) -> None:
    line = _cli_one_line(tmp_path, ["classify", str(tmp_path / f"{LONG}.png"), "--model", "digits-cnn"])
    assert "name too long" in line and "..." in line


def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "two\nlines.png"
    bad.write_text("not a picture")
    refuses(lambda: data.load(str(bad)), r"two\\nlines\.png")
    refuses(lambda: data.load(str(tmp_path / "gone\nx.png")), r"no such file: .*gone\\nx\.png")
    missing = tmp_path / "a\nb.npz"
    refuses(lambda: data.load(f"tensors:{missing}"), r"no such tensors file: .*a\\nb\.npz")
    line = _cli_one_line(tmp_path, ["classify", str(bad), "--model", "digits-cnn"])
    assert "two\\nlines.png" in line
    refuses(lambda: data.load(str(tmp_path / "nul\0.png")), "NUL byte")


# ------------------------------------------------------------------------------------ image sizes
@pytest.mark.parametrize(("w", "h"), [(2_000_000, 1), (1, 2_000_000)])
def test_a_thin_strip_is_refused_before_decoding(tmp_path: Path, w: int, h: int) -> None:
    """4 KB on disk; resized for a 224 model (shorter side -> 256, aspect kept) it would be 131 GB."""
    path = _png(tmp_path / "strip.png", w, h)
    assert path.stat().st_size < 50_000
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        expected = rf"strip\.png' is {w}x{h} pixels, an aspect ratio over {MAX_ASPECT}:1"
        refuses(lambda: read_image(path, 224, 3), expected)
        assert time.monotonic() - t0 < 5
        assert tracemalloc.get_traced_memory()[1] < 20_000_000  # the 2 MB of pixels were never decoded
    finally:
        tracemalloc.stop()
    refuses(lambda: data.load(str(path)), "aspect ratio")
    refuses(lambda: data.load(f"folder:{tmp_path}"), "aspect ratio")
    assert read_image(path, None, 1).shape == (1, h, w)  # read as it is, no resize: 2 MP is within the budget


def test_a_strip_on_the_command_line(tmp_path: Path) -> None:
    path = _png(tmp_path / "strip.png", 50_000, 1)
    line = _cli_one_line(tmp_path, ["classify", str(path), "--model", "digits-cnn"])
    assert "50000x1 pixels" in line and "aspect ratio" in line


def test_the_aspect_ratio_bound_is_16_to_1(tmp_path: Path) -> None:
    assert read_image(_png(tmp_path / "ok.png", 2, 2 * MAX_ASPECT), 8, 1).shape == (1, 8, 8)
    refuses(lambda: read_image(_png(tmp_path / "no.png", 2, 2 * MAX_ASPECT + 1), 8, 1), "aspect ratio over 16:1")
    x = read_image(_png(tmp_path / "asis.png", 2, 2 * MAX_ASPECT + 1), None, 1)  # no resize: no ratio bound
    assert x.shape == (1, 33, 2)


@pytest.mark.parametrize("size", [None, 224])
def test_too_many_pixels_is_refused_from_the_header(tmp_path: Path, size: int | None) -> None:
    """10,000 x 10,000 = 100 MP: under PIL's own bomb limit (179 MP), over advlab's (64 MP); a few bytes on disk."""
    path = _png_header(tmp_path / "big.png", 10_000, 10_000)
    refuses(lambda: read_image(path, size, 3), r"is 10000x10000 pixels, over advlab's limit of 64,000,000")
    refuses(lambda: read_image(_png_header(tmp_path / "huge.png", 20_000, 20_000), size, 3), "limit")


def test_too_many_pixels_on_the_command_line_is_one_line(tmp_path: Path) -> None:
    """No DecompressionBombWarning from PIL beside advlab's line."""
    path = _png_header(tmp_path / "big.png", 10_000, 10_000)
    assert "64,000,000" in _cli_one_line(tmp_path, ["classify", str(path), "--model", "digits-cnn"])


def test_resizes_are_bounded() -> None:
    img = Image.new("L", (10, 10))
    refuses(lambda: images.resize_center_crop(img, 100_000), "cannot resize images to 100000x100000")
    refuses(lambda: resize_batch(torch.zeros(1, 1, 4, 4), 100_000), "cannot resize")
    assert resize_batch(torch.zeros(1, 1, 4, 4), 16).shape == (1, 1, 16, 16)
    assert MAX_IMAGE_PIXELS == 64_000_000 and MAX_ASPECT == 16


def test_the_image_file_size_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "padded.png"
    with open(path, "wb") as f:
        f.truncate(images.MAX_IMAGE_FILE_BYTES + 1)  # sparse: no disk used
    refuses(lambda: read_image(path, 8, 1), "has 1,073,741,825 bytes, over advlab's limit of 1,073,741,824")


def test_only_the_listed_formats_are_opened(tmp_path: Path) -> None:
    path = tmp_path / "icon.png"
    Image.new("RGB", (16, 16)).save(path, format="ICO")
    refuses(lambda: read_image(path, 8, 1), "not an image file advlab reads")


# ------------------------------------------------------------------------------------ tensors:
def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)
    return f"tensors:{path}"


@pytest.mark.parametrize("shape", [(2, 1, 0, 0), (2, 0, 8, 8), (2, 1, 8, 0), (2, 8, 8, 0), (2, 0, 8)])
def test_tensors_with_a_zero_size_dimension(tmp_path: Path, shape: tuple[int, ...]) -> None:
    spec = _npz(tmp_path / "z.npz", x=np.zeros(shape, np.float32))
    refuses(lambda: data.load(spec), r"x has shape .*0.*every image needs at least one channel and one pixel")
    refuses(lambda: data.describe(spec), "at least one channel")


def test_tensors_without_images(tmp_path: Path) -> None:
    spec = _npz(tmp_path / "none.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    refuses(lambda: data.load(spec), r"holds no images \(x has shape \(0, 1, 8, 8\)\)")


ZERO_SIZE_COMMANDS = [
    ["classify", "{spec}", "--model", "digits-cnn"],
    ["attack", "--model", "digits-cnn", "--data", "{spec}", "--attack", "fgsm", "--eps", "0.1"],
    ["data", "{spec}"],
]


@pytest.mark.parametrize("command", ZERO_SIZE_COMMANDS)
def test_zero_size_tensors_on_the_command_line(tmp_path: Path, command: list[str]) -> None:
    spec = _npz(tmp_path / "z.npz", x=np.zeros((3, 1, 0, 0), np.float32), y=np.zeros(3, np.int64))
    line = _cli_one_line(tmp_path, [a.replace("{spec}", spec) for a in command])
    assert "(3, 1, 0, 0)" in line


def _npz_declaring(path: Path, shape: tuple[int, ...]) -> str:
    """An .npz whose x.npy header declares ``shape`` (float32) but holds no data: a few hundred bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", header.getvalue())  # the magic string, then the header
    return f"tensors:{path}"


def test_a_tensors_file_declaring_too_many_values_is_refused_from_its_header(tmp_path: Path) -> None:
    spec = _npz_declaring(tmp_path / "bomb.npz", (1_000_000, 3, 224, 224))
    tracemalloc.start()
    try:
        refuses(lambda: data.load(spec), r"declares 150,528,000,000 values .*over advlab's limit of 1,073,741,824")
        assert tracemalloc.get_traced_memory()[1] < 20_000_000
    finally:
        tracemalloc.stop()
    refuses(lambda: data.load(_npz_declaring(tmp_path / "lie.npz", (2, 1, 8, 8))), "cannot read tensors file")


def test_a_compressed_npz_bomb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """4 MB of zeros deflate to 4 KB; with the budget lowered to 100,000 values it is refused from the header."""
    monkeypatch.setattr(specs, "MAX_TENSOR_VALUES", 100_000)
    path = tmp_path / "zeros.npz"
    np.savez_compressed(path, x=np.zeros((1000, 1, 32, 32), np.float32))
    assert path.stat().st_size < 100_000
    refuses(lambda: data.load(f"tensors:{path}"), "declares 1,024,000 values")
    st = tmp_path / "zeros.safetensors"
    from safetensors.numpy import save_file

    save_file({"x": np.zeros((200, 1, 32, 32), np.uint8)}, str(st))
    refuses(lambda: data.load(f"tensors:{st}"), "declares 204,800 values")


def test_npz_members_that_are_not_numeric_arrays(tmp_path: Path) -> None:
    path = tmp_path / "odd.npz"
    np.savez(path, x=np.zeros((2, 1, 8, 8), np.float32))
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("notes.txt", b"\0" * 1_000_000)  # np.load would read it whole, as bytes
    refuses(lambda: data.load(f"tensors:{path}"), "cannot read tensors file .*magic")
    spec = _npz(tmp_path / "obj.npz", x=np.array([{"a": 1}], dtype=object))
    refuses(lambda: data.load(spec), "x.npy. holds pickled objects")


BAD_VALUES = [
    (np.full((2, 1, 4, 4), np.nan, np.float32), None, "NaN or infinite"),
    (np.full((2, 1, 4, 4), -np.inf, np.float64), None, "NaN or infinite"),
    (np.full((2, 1, 4, 4), 1.5, np.float16), None, r"must be in \[0, 1\]"),
    (np.full((2, 1, 4, 4), 0.5 + 0.5j, np.complex64), None, "dtype torch.complex64"),
    (np.ones((2, 1, 4, 4), bool), None, "dtype torch.bool"),
    (np.zeros((2, 1, 4, 4), np.float32), np.array([True, False]), "y has dtype torch.bool"),
    (np.zeros((2, 1, 4, 4), np.float32), np.array([0, -2]), r"labels in \[-2, 0\]"),
    (np.zeros((2, 1, 4, 4), np.float32), np.array([0.0, 1e30]), "labels in"),
    (np.zeros((2, 1, 4, 4), np.float32), np.array([0.0, np.nan]), "integer class indices"),
    (np.zeros((1, 1, 9000, 9000), np.uint8), None, "over advlab's limit of 64,000,000 pixels per image"),
]


@pytest.mark.parametrize(("x", "y", "match"), BAD_VALUES)
def test_tensor_values_and_labels(tmp_path: Path, x: np.ndarray, y: np.ndarray | None, match: str) -> None:
    spec = _npz(tmp_path / "t.npz", x=x) if y is None else _npz(tmp_path / "t.npz", x=x, y=y)
    refuses(lambda: data.load(spec), match)


# ------------------------------------------------------------------------------------ official files
def _idx_gz(path: Path, magic: int, dims: tuple[int, ...], zeros: int) -> None:
    """A gzipped IDX file: a valid header declaring ``dims`` and ``zeros`` zero bytes streamed after it."""
    with gzip.open(path, "wb") as out:
        out.write(struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims))
        block = bytes(1 << 16)
        for _ in range(zeros // len(block)):
            out.write(block)


def test_an_mnist_gzip_bomb_is_refused_from_its_header(tmp_path: Path) -> None:
    """The header declares 10^7 images (7.8 GB); the reader stops at the header, never inflating the payload."""
    _idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (10_000_000, 28, 28), 4 << 20)
    _idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (10,), 0)
    tracemalloc.start()
    try:
        t0 = time.monotonic()
        expected = r"images-idx3-ubyte\.gz': the header declares 10,000,000 items; an MNIST file has at most 70,000"
        refuses(lambda: official.read_mnist(root=tmp_path, download=False), expected)
        assert time.monotonic() - t0 < 2
        assert tracemalloc.get_traced_memory()[1] < 20_000_000
    finally:
        tracemalloc.stop()


def test_mnist_labels_bomb_odd_sizes_and_trailing_data(tmp_path: Path) -> None:
    _idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (1, 28, 28), 0)
    with gzip.open(tmp_path / "t10k-images-idx3-ubyte.gz", "ab") as f:
        f.write(bytes(28 * 28))
    _idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (2**32 - 1,), 1 << 16)
    expected = "labels-idx1-ubyte.gz': the header declares 4,294,967,295"
    refuses(lambda: official.read_mnist(root=tmp_path, download=False), expected)
    _idx_gz(tmp_path / "t10k-labels-idx1-ubyte.gz", 0x801, (1,), 1 << 16)  # 1 label, then 64 KB more
    refuses(lambda: official.read_mnist(root=tmp_path, download=False), r"need 1 data bytes but the file has more")
    _idx_gz(tmp_path / "t10k-images-idx3-ubyte.gz", 0x803, (1, 28, 4000), 0)
    refuses(lambda: official.read_mnist(root=tmp_path, download=False), "images are 28x4000, expected 28x28")


def test_official_files_that_are_not_regular(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "t10k-images-idx3-ubyte")
    refuses(lambda: official.read_mnist(root=tmp_path, download=False), "is a FIFO")
    (tmp_path / "svhn").mkdir()
    (tmp_path / "svhn" / "test_32x32.mat").mkdir()
    refuses(lambda: official.read_svhn(root=tmp_path / "svhn", download=False), "is a directory")
    batches = tmp_path / "cifar" / "cifar-10-batches-bin"
    batches.mkdir(parents=True)
    (batches / "test_batch.bin").symlink_to("/dev/zero")
    refuses(lambda: official.read_cifar10(root=tmp_path / "cifar", download=False), "character device")


def test_a_cifar_batch_longer_than_10000_records(tmp_path: Path) -> None:
    batches = tmp_path / "cifar-10-batches-bin"
    batches.mkdir()
    with open(batches / "test_batch.bin", "wb") as f:
        f.truncate(10_001 * 3073)  # sparse: no disk used
    refuses(lambda: official.read_cifar10(root=tmp_path, download=False), "more than 30,730,000 bytes")


def _tarball(root: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, payload in members:
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    (root / "cifar-10-binary.tar.gz").write_bytes(buf.getvalue())


def _member(
    name: str, kind: bytes = tarfile.REGTYPE, payload: bytes | None = None, link: str = ""
) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    info.size = len(payload) if payload is not None else 0
    return info, payload


def test_a_hostile_cifar_tarball_writes_nothing_outside(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    record = bytes([3]) + bytes(3072)
    members = [
        _member("cifar-10-batches-bin/test_batch.bin", tarfile.SYMTYPE, link="/etc/passwd"),
        _member("cifar-10-batches-bin/../../escaped.bin", payload=record),
        _member("/tmp/absolute.bin", payload=record),
        _member("cifar-10-batches-bin/data_batch_1.bin", tarfile.CHRTYPE),
        _member("cifar-10-batches-bin/data_batch_2.bin", tarfile.LNKTYPE, link="cifar-10-batches-bin/test_batch.bin"),
        _member("cifar-10-batches-bin/evil.sh", payload=b"#!/bin/sh\n"),
    ]
    _tarball(root, members)
    with pytest.raises(official.NotAvailableError, match="lacks"):
        official.read_cifar10(root=root, download=False)
    assert not (tmp_path / "escaped.bin").exists() and not Path("/tmp/absolute.bin").exists()
    batches = root / "cifar-10-batches-bin"
    assert not batches.exists() or not any(batches.iterdir())  # no link, device or unlisted file was extracted


def test_a_cifar_tarball_member_declaring_gigabytes(tmp_path: Path) -> None:
    info = tarfile.TarInfo("cifar-10-batches-bin/test_batch.bin")
    info.size = 10**10
    raw = info.tobuf(tarfile.GNU_FORMAT) + bytes(1 << 16)  # the header, and far less data than declared
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(gzip.compress(raw))
    refuses(lambda: official.read_cifar10(root=tmp_path, download=False), "declares 10,000,000,000 bytes")


def test_a_cifar_tarball_that_inflates_past_its_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pax header declaring 2 MB of metadata (tarfile would read it whole) against a budget lowered to 1 MB."""
    monkeypatch.setattr(official, "_CIFAR_TAR_MAX_BYTES", 1 << 20)
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, 2 << 20
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(gzip.compress(info.tobuf(tarfile.USTAR_FORMAT) + bytes(2 << 20)))
    refuses(lambda: official.read_cifar10(root=tmp_path, download=False), "inflates to more than 1,048,576 bytes")
    monkeypatch.setattr(official, "_CIFAR_TAR_MAX_MEMBERS", 3)
    _tarball(tmp_path, [_member(f"junk{i}", payload=b"x") for i in range(5)])
    refuses(lambda: official.read_cifar10(root=tmp_path, download=False), "holds more than 3 members")


def test_svhn_bounds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(str(path), {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((4, 1))})
    monkeypatch.setattr(official, "_SVHN_MAX_IMAGES", 3)
    expected = "X declares 4 images; an SVHN file has at most 3"
    refuses(lambda: official.read_svhn(root=tmp_path, download=False), expected)
    monkeypatch.setattr(official, "_SVHN_MAX_IMAGES", 100_000)
    monkeypatch.setattr(official, "_SVHN_MAX_BYTES", 1 << 20)
    junk = np.zeros(4 << 20, np.uint8)  # 4 MB of zeros, a few KB compressed
    variables = {"X": np.zeros((32, 32, 3, 1), np.uint8), "y": np.ones((1, 1)), "junk": junk}
    scipy.io.savemat(str(path), variables, do_compression=True)
    assert path.stat().st_size < 100_000
    refuses(lambda: official.read_svhn(root=tmp_path, download=False), "variables hold more than 1,048,576 bytes")


def test_a_download_is_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "big.gz"
    src.write_bytes(bytes(3 << 20))
    monkeypatch.setattr(official, "MAX_DOWNLOAD_BYTES", 1 << 20)
    with pytest.raises(ValueError, match="sends more than 1,048,576 bytes"):
        official._download(src.as_uri(), tmp_path / "dest.gz", None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.gz"]


def test_compressed_files_within_the_bounds_still_load(tmp_path: Path) -> None:
    """Controls: the bounds refuse bombs, not compression."""
    x = np.random.default_rng(0).integers(0, 256, (4, 3, 32, 32), dtype=np.uint8)
    variables = {"X": np.ascontiguousarray(x.transpose(2, 3, 1, 0)), "y": np.array([[1], [2], [10], [4]])}
    scipy.io.savemat(str(tmp_path / "test_32x32.mat"), variables, do_compression=True)
    xs, ys = official.read_svhn(root=tmp_path, download=False)
    assert torch.equal(xs, torch.from_numpy(x)) and ys.tolist() == [1, 2, 0, 4]
    np.savez_compressed(tmp_path / "c.npz", x=x, y=np.arange(4))
    xt, yt = data.load(f"tensors:{tmp_path / 'c.npz'}")
    assert torch.equal(xt, torch.from_numpy(x).float() / 255) and yt.tolist() == [0, 1, 2, 3]
