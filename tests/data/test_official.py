"""Tests for advlab.data.official: readers of the official CIFAR-10 / MNIST / SVHN files.

All fixtures are tiny files written here in the official formats; no test touches the network
except a few that talk to a throw-away HTTP server on 127.0.0.1 or to a closed local port.
"""

from __future__ import annotations

import gzip
import hashlib
import http.server
import io
import struct
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from advlab.data import official
from advlab.data.official import (
    CLASS_NAMES,
    cache_dir,
    read_cifar10,
    read_mnist,
    read_svhn,
)
from advlab.errors import AdvlabError, NotAvailableError

UNREACHABLE = "http://127.0.0.1:9/x"  # discard port: nothing listens, connection refused


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never use the real cache, never go through a proxy, start online unless a test says so."""
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path / "cache"))
    monkeypatch.delenv("ADVLAB_OFFLINE", raising=False)
    for var in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


# --------------------------------------------------------------------------------------------- #
# writers of the official formats
# --------------------------------------------------------------------------------------------- #


def cifar_record(label: int, r: np.ndarray, g: np.ndarray, b: np.ndarray) -> bytes:
    """One CIFAR-10 binary record: label byte, then R, G, B planes (32x32, row-major)."""
    return bytes([label]) + b"".join(np.asarray(p, dtype=np.uint8).tobytes() for p in (r, g, b))


def plane(value: int) -> np.ndarray:
    return np.full((32, 32), value, dtype=np.uint8)


def write_cifar_batch(path: Path, labels: list[int], base: int) -> tuple[np.ndarray, np.ndarray]:
    """Write a batch whose record i has R=base+i, G=base+i+1, B=base+i+2 plus a unique marker
    pixel; return the expected (x (N,3,32,32), y)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    xs = []
    blob = b""
    for i, label in enumerate(labels):
        r, g, b = plane(base + i), plane(base + i + 1), plane(base + i + 2)
        r[1, 2] = 250  # row 1, column 2 of the red plane: checks row-major layout
        xs.append(np.stack([r, g, b]))
        blob += cifar_record(label, r, g, b)
    path.write_bytes(blob)
    return np.stack(xs), np.array(labels, dtype=np.int64)


def make_cifar(root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    d = root / "cifar-10-batches-bin"
    train_x, train_y = [], []
    for k in range(1, 6):
        x, y = write_cifar_batch(d / f"data_batch_{k}.bin", [k % 10, (k + 3) % 10], base=10 * k)
        train_x.append(x)
        train_y.append(y)
    tx, ty = write_cifar_batch(d / "test_batch.bin", [3, 9, 0], base=100)
    return {"train": (np.concatenate(train_x), np.concatenate(train_y)), "test": (tx, ty)}


def idx_bytes(magic: int, dims: tuple[int, ...], data: np.ndarray) -> bytes:
    return struct.pack(">I", magic) + struct.pack(f">{len(dims)}I", *dims) + data.tobytes()


def write_mnist(
    root: Path, split: str, n: int, gz_images: bool, gz_labels: bool, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n, dtype=np.uint8)
    root.mkdir(parents=True, exist_ok=True)
    for name, magic, dims, data, gz in (
        (f"{prefix}-images-idx3-ubyte", 0x803, (n, 28, 28), images, gz_images),
        (f"{prefix}-labels-idx1-ubyte", 0x801, (n,), labels, gz_labels),
    ):
        blob = idx_bytes(magic, dims, data)
        if gz:
            (root / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (root / name).write_bytes(blob)
    return images[:, None], labels.astype(np.int64)


def write_svhn(path: Path, images_nchw: np.ndarray, labels: list[int]) -> None:
    """Write SVHN format 2: X (32, 32, 3, N) uint8, y (N, 1)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    X = np.ascontiguousarray(images_nchw.transpose(2, 3, 1, 0))  # (N,C,H,W) -> (H,W,C,N)
    y = np.array(labels, dtype=np.uint8).reshape(-1, 1)
    scipy.io.savemat(str(path), {"X": X, "y": y})


# --------------------------------------------------------------------------------------------- #
# basics
# --------------------------------------------------------------------------------------------- #


def test_class_names() -> None:
    assert CLASS_NAMES["cifar10"] == [
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
    ]
    assert CLASS_NAMES["mnist"] == [str(i) for i in range(10)]
    assert CLASS_NAMES["svhn"] == [str(i) for i in range(10)]


def test_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path / "d"))
    assert cache_dir() == tmp_path / "d"
    monkeypatch.delenv("ADVLAB_DATA")
    assert cache_dir() == Path.home() / ".cache" / "advlab" / "data"


@pytest.mark.parametrize("reader", [read_cifar10, read_mnist, read_svhn])
def test_bad_split(reader, tmp_path: Path) -> None:
    with pytest.raises(AdvlabError, match=r"valid splits: train, test"):
        reader("validation", root=tmp_path, download=False)


# --------------------------------------------------------------------------------------------- #
# CIFAR-10
# --------------------------------------------------------------------------------------------- #


def test_cifar_test_split_exact(tmp_path: Path) -> None:
    expected = make_cifar(tmp_path)
    x, y = read_cifar10("test", root=tmp_path, download=False)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (3, 3, 32, 32) and y.shape == (3,)
    assert torch.equal(x, torch.from_numpy(expected["test"][0]))
    assert y.tolist() == [3, 9, 0]
    # row-major: the marker is at row 1, column 2 of the red channel only
    assert int(x[0, 0, 1, 2]) == 250 and int(x[0, 0, 2, 1]) == 100
    assert int(x[0, 1, 1, 2]) == 101 and int(x[0, 2, 1, 2]) == 102


def test_cifar_red_record_is_red(tmp_path: Path) -> None:
    d = tmp_path / "cifar-10-batches-bin"
    d.mkdir()
    (d / "test_batch.bin").write_bytes(
        cifar_record(7, plane(255), plane(0), plane(0)) + cifar_record(1, plane(0), plane(0), plane(255))
    )
    x, y = read_cifar10(root=tmp_path, download=False)
    assert y.tolist() == [7, 1]
    assert bool((x[0, 0] == 255).all()) and bool((x[0, 1:] == 0).all())  # red
    assert bool((x[1, 2] == 255).all()) and bool((x[1, :2] == 0).all())  # blue


def test_cifar_train_concatenates_batches_in_order(tmp_path: Path) -> None:
    expected = make_cifar(tmp_path)
    x, y = read_cifar10("train", root=tmp_path, download=False)
    assert x.shape == (10, 3, 32, 32)
    assert torch.equal(x, torch.from_numpy(expected["train"][0]))
    assert torch.equal(y, torch.from_numpy(expected["train"][1]))
    # batch k contributes records with red value 10k, 10k+1 at positions 2(k-1), 2(k-1)+1
    assert [int(v) for v in x[:, 0, 0, 0]] == [10, 11, 20, 21, 30, 31, 40, 41, 50, 51]


def test_cifar_default_root_is_cache(tmp_path: Path) -> None:
    make_cifar(tmp_path / "cache" / "cifar10")
    x, _ = read_cifar10(download=False)
    assert x.shape == (3, 3, 32, 32)


def test_cifar_truncated_record(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(AdvlabError, match=r"test_batch\.bin'.*whole number of 3073-byte") as info:
        read_cifar10(root=tmp_path, download=False)
    assert "\n" not in str(info.value)


def test_cifar_empty_and_bad_label(tmp_path: Path) -> None:
    make_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    path.write_bytes(b"")
    with pytest.raises(AdvlabError, match=r"data_batch_3\.bin': empty"):
        read_cifar10("train", root=tmp_path, download=False)
    path.write_bytes(cifar_record(12, plane(0), plane(0), plane(0)))
    with pytest.raises(AdvlabError, match=r"data_batch_3\.bin': label 12 out of range"):
        read_cifar10("train", root=tmp_path, download=False)


def test_cifar_missing_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVLAB_OFFLINE", "1")

    def boom(*a, **k):  # pragma: no cover - must not be called
        raise AssertionError("network attempted while offline")

    monkeypatch.setattr(official.urllib.request, "urlopen", boom)
    with pytest.raises(NotAvailableError) as info:
        read_cifar10("test")
    msg = str(info.value)
    root = tmp_path / "cache" / "cifar10"
    assert msg.startswith(f"cifar10: not found in {str(root)!r}")
    assert "cifar-10-batches-bin/test_batch.bin" in msg and "cifar-10-binary.tar.gz" in msg
    assert "ADVLAB_OFFLINE=1" in msg and "ADVLAB_DATA" in msg and "\n" not in msg
    # an explicit root: no ADVLAB_DATA hint, all five train batches named
    with pytest.raises(NotAvailableError) as info:
        read_cifar10("train", root=tmp_path / "mine", download=True)
    msg = str(info.value)
    assert str(tmp_path / "mine") in msg and "ADVLAB_DATA" not in msg
    assert all(f"data_batch_{k}.bin" in msg for k in range(1, 6))


def test_cifar_download_false_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*a, **k):  # pragma: no cover
        raise AssertionError("network attempted with download=False")

    monkeypatch.setattr(official.urllib.request, "urlopen", boom)
    with pytest.raises(NotAvailableError, match=r"download=False"):
        read_cifar10(root=tmp_path, download=False)


def test_cifar_download_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(official, "CIFAR10_URL", UNREACHABLE)
    t0 = time.monotonic()
    with pytest.raises(NotAvailableError) as info:
        read_cifar10(root=tmp_path)
    assert time.monotonic() - t0 < 5
    msg = str(info.value)
    assert "could not download" in msg and "test_batch.bin" in msg and str(tmp_path) in msg
    assert "\n" not in msg
    assert [p.name for p in tmp_path.iterdir()] == []  # no half-written files left behind


def _cifar_tarball(src_root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src_root / "cifar-10-batches-bin", arcname="cifar-10-batches-bin")
    return buf.getvalue()


def test_cifar_user_supplied_tarball(tmp_path: Path) -> None:
    expected = make_cifar(tmp_path / "src")
    root = tmp_path / "root"
    root.mkdir()
    (root / "cifar-10-binary.tar.gz").write_bytes(_cifar_tarball(tmp_path / "src"))
    x, y = read_cifar10("train", root=root, download=False)
    assert torch.equal(x, torch.from_numpy(expected["train"][0]))
    assert torch.equal(y, torch.from_numpy(expected["train"][1]))


# --------------------------------------------------------------------------------------------- #
# MNIST
# --------------------------------------------------------------------------------------------- #


@pytest.mark.parametrize("gz_images,gz_labels", [(False, False), (True, True), (True, False)])
def test_mnist_exact(tmp_path: Path, gz_images: bool, gz_labels: bool) -> None:
    ex, ey = write_mnist(tmp_path, "test", 5, gz_images, gz_labels)
    x, y = read_mnist("test", root=tmp_path, download=False)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (5, 1, 28, 28) and y.shape == (5,)
    assert torch.equal(x, torch.from_numpy(ex))
    assert torch.equal(y, torch.from_numpy(ey))


def test_mnist_row_major_and_train_split(tmp_path: Path) -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    images[0, 3, 5] = 200  # row 3, column 5
    images[1, 27, 0] = 9
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(0x803, (2, 28, 28), images))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(
        gzip.compress(idx_bytes(0x801, (2,), np.array([4, 0], dtype=np.uint8)))
    )
    x, y = read_mnist("train", root=tmp_path, download=False)
    assert int(x[0, 0, 3, 5]) == 200 and int(x[0, 0, 5, 3]) == 0
    assert int(x[1, 0, 27, 0]) == 9
    assert int(x.sum()) == 209
    assert y.tolist() == [4, 0]


def test_mnist_bad_magic(tmp_path: Path) -> None:
    write_mnist(tmp_path, "test", 3, False, False)
    path = tmp_path / "t10k-images-idx3-ubyte"
    blob = bytearray(path.read_bytes())
    blob[3] = 0x01  # labels magic in an images file
    path.write_bytes(bytes(blob))
    with pytest.raises(AdvlabError, match=r"t10k-images-idx3-ubyte': bad IDX magic 0x00000801"):
        read_mnist(root=tmp_path, download=False)


def test_mnist_truncated_and_count_mismatch(tmp_path: Path) -> None:
    write_mnist(tmp_path, "test", 3, True, False)
    gz = tmp_path / "t10k-images-idx3-ubyte.gz"
    blob = gzip.decompress(gz.read_bytes())
    gz.write_bytes(gzip.compress(blob[:-10]))
    with pytest.raises(AdvlabError, match=r"t10k-images-idx3-ubyte\.gz': .*truncated"):
        read_mnist(root=tmp_path, download=False)
    # a broken gzip stream
    gz.write_bytes(gzip.compress(blob)[:-20])
    with pytest.raises(AdvlabError, match=r"t10k-images-idx3-ubyte\.gz': cannot read"):
        read_mnist(root=tmp_path, download=False)
    # 3 images, 4 labels
    gz.write_bytes(gzip.compress(blob))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(0x801, (4,), np.zeros(4, dtype=np.uint8)))
    with pytest.raises(AdvlabError, match=r"3 images but 't10k-labels-idx1-ubyte' has 4 labels"):
        read_mnist(root=tmp_path, download=False)


def test_mnist_short_file(tmp_path: Path) -> None:
    write_mnist(tmp_path, "test", 2, False, False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00")
    with pytest.raises(AdvlabError, match=r"t10k-labels-idx1-ubyte': .*too short"):
        read_mnist(root=tmp_path, download=False)


def test_mnist_missing_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVLAB_OFFLINE", "1")
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(0x801, (1,), np.zeros(1, dtype=np.uint8)))
    with pytest.raises(NotAvailableError) as info:
        read_mnist(root=tmp_path)
    msg = str(info.value)
    assert msg.startswith(f"mnist: not found in {str(tmp_path)!r}")
    assert "t10k-images-idx3-ubyte.gz" in msg
    assert "t10k-labels" not in msg  # only what is actually missing
    assert "\n" not in msg


def test_mnist_download_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(official, "MNIST_BASE_URL", UNREACHABLE + "/")
    t0 = time.monotonic()
    with pytest.raises(NotAvailableError, match=r"could not download") as info:
        read_mnist("train", root=tmp_path / "m")
    assert time.monotonic() - t0 < 5
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert not any((tmp_path / "m").iterdir())


# --------------------------------------------------------------------------------------------- #
# downloads from a local HTTP server
# --------------------------------------------------------------------------------------------- #


@pytest.fixture
def http_server(tmp_path: Path):
    """Serve tmp_path/'www' on 127.0.0.1; yields (base_url, served_dir)."""
    www = tmp_path / "www"
    www.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **k):
            super().__init__(*a, directory=str(www), **k)

        def log_message(self, *a):  # keep pytest output clean
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", www
    finally:
        server.shutdown()
        server.server_close()


def test_mnist_download_from_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server) -> None:
    base, www = http_server
    ex, ey = write_mnist(www, "test", 4, True, True)
    md5 = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in www.iterdir()}
    monkeypatch.setattr(official, "MNIST_BASE_URL", base)
    monkeypatch.setattr(official, "MNIST_MD5", md5)
    root = tmp_path / "dl"
    x, y = read_mnist("test", root=root)
    assert torch.equal(x, torch.from_numpy(ex)) and torch.equal(y, torch.from_numpy(ey))
    assert sorted(p.name for p in root.iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ]


def test_download_md5_mismatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server) -> None:
    base, www = http_server
    write_mnist(www, "test", 2, True, True)
    monkeypatch.setattr(official, "MNIST_BASE_URL", base)
    monkeypatch.setattr(official, "MNIST_MD5", {"t10k-images-idx3-ubyte.gz": "0" * 32})
    root = tmp_path / "dl"
    with pytest.raises(NotAvailableError, match=r"md5 mismatch"):
        read_mnist("test", root=root)
    assert list(root.iterdir()) == []  # the bad file was not kept


def test_download_http_404(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server) -> None:
    base, _ = http_server
    monkeypatch.setattr(official, "SVHN_BASE_URL", base)
    with pytest.raises(NotAvailableError, match=r"could not download \(HTTPError.*test_32x32\.mat"):
        read_svhn("test", root=tmp_path / "s")


def test_cifar_download_from_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, http_server) -> None:
    base, www = http_server
    expected = make_cifar(tmp_path / "src")
    tarball = _cifar_tarball(tmp_path / "src")
    (www / "cifar-10-binary.tar.gz").write_bytes(tarball)
    monkeypatch.setattr(official, "CIFAR10_URL", base + "cifar-10-binary.tar.gz")
    monkeypatch.setattr(official, "CIFAR10_MD5", hashlib.md5(tarball).hexdigest())
    root = tmp_path / "dl"
    x, y = read_cifar10("test", root=root)
    assert torch.equal(x, torch.from_numpy(expected["test"][0]))
    assert torch.equal(y, torch.from_numpy(expected["test"][1]))
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-bin"]  # tarball removed
    names = sorted(p.name for p in (root / "cifar-10-batches-bin").iterdir())
    assert names == [f"data_batch_{k}.bin" for k in range(1, 6)] + ["test_batch.bin"]


# --------------------------------------------------------------------------------------------- #
# SVHN
# --------------------------------------------------------------------------------------------- #


def test_svhn_exact_and_label_10(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(4, 3, 32, 32), dtype=np.uint8)
    images[0] = 0
    images[0, 0] = 255  # sample 0 is pure red
    images[1, 1, 4, 7] = 17  # green, row 4, column 7
    images[1, 1, 7, 4] = 71
    write_svhn(tmp_path / "test_32x32.mat", images, [10, 1, 9, 10])
    x, y = read_svhn("test", root=tmp_path, download=False)
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.shape == (4, 3, 32, 32) and y.shape == (4,)
    assert torch.equal(x, torch.from_numpy(images))
    assert y.tolist() == [0, 1, 9, 0]
    assert bool((x[0, 0] == 255).all()) and bool((x[0, 1:] == 0).all())
    assert int(x[1, 1, 4, 7]) == 17 and int(x[1, 1, 7, 4]) == 71


def test_svhn_train_file(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 32 * 32, dtype=np.int64).reshape(2, 3, 32, 32).astype(np.uint8)
    write_svhn(tmp_path / "train_32x32.mat", images, [3, 4])
    x, y = read_svhn("train", root=tmp_path, download=False)
    assert torch.equal(x, torch.from_numpy(images)) and y.tolist() == [3, 4]


def test_svhn_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "test_32x32.mat"
    path.write_bytes(b"this is not a MATLAB file at all" * 10)
    with pytest.raises(AdvlabError, match=r"test_32x32\.mat': not a readable MATLAB") as info:
        read_svhn(root=tmp_path, download=False)
    assert "\n" not in str(info.value)
    # wrong shape of X
    scipy.io.savemat(str(path), {"X": np.zeros((28, 28, 2), np.uint8), "y": np.ones((2, 1))})
    with pytest.raises(AdvlabError, match=r"test_32x32\.mat': X has shape"):
        read_svhn(root=tmp_path, download=False)
    # count mismatch
    scipy.io.savemat(str(path), {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.ones((3, 1))})
    with pytest.raises(AdvlabError, match=r"test_32x32\.mat': X holds 2 images but y has 3"):
        read_svhn(root=tmp_path, download=False)
    # missing variable
    scipy.io.savemat(str(path), {"X": np.zeros((32, 32, 3, 2), np.uint8)})
    with pytest.raises(AdvlabError, match=r"missing variable\(s\) y"):
        read_svhn(root=tmp_path, download=False)
    # label out of range
    scipy.io.savemat(str(path), {"X": np.zeros((32, 32, 3, 1), np.uint8), "y": np.array([[11]])})
    with pytest.raises(AdvlabError, match=r"labels span 11\.\.11"):
        read_svhn(root=tmp_path, download=False)


def test_svhn_missing_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADVLAB_OFFLINE", "1")
    with pytest.raises(NotAvailableError) as info:
        read_svhn("train")
    msg = str(info.value)
    root = tmp_path / "cache" / "svhn"
    assert msg.startswith(f"svhn: not found in {str(root)!r}")
    assert "train_32x32.mat" in msg and f"into {str(root)!r}" in msg and "ADVLAB_DATA" in msg


def test_svhn_download_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(official, "SVHN_BASE_URL", UNREACHABLE + "/")
    t0 = time.monotonic()
    with pytest.raises(NotAvailableError, match=r"svhn: not found .* could not download"):
        read_svhn(root=tmp_path / "s")
    assert time.monotonic() - t0 < 5
    assert not any((tmp_path / "s").iterdir())
