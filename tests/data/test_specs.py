"""Tests for advlab.data's specs: load / open / describe / item_names, and the image helpers.

Every image and tensors file is written here into tmp_path; expectations are derived from what was written
(or, for the embedded sets, from scikit-learn / the hand-checked labels) rather than from running advlab.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab import data
from advlab.data.classes import imagenet_synset_index
from advlab.data.images import convert_channels, resize_center_crop
from advlab.errors import AdvlabError


# ------------------------------------------------------------------------------------------ helpers
def write_png(
    path: Path, rgb: tuple[int, ...] | np.ndarray, size: tuple[int, int] = (12, 10), mode: str | None = None
) -> Path:
    """A PNG of ``size`` (w, h): uniform colour ``rgb`` (a tuple) or the given array."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rgb, np.ndarray):
        img = Image.fromarray(rgb)
    else:
        mode = mode or {1: "L", 3: "RGB", 4: "RGBA"}[len(rgb)]
        img = Image.new(mode, size, rgb if len(rgb) > 1 else rgb[0])
    img.save(path)
    return path


def noise_png(path: Path, seed: int, w: int = 20, h: int = 16) -> Path:
    a = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    return write_png(path, a)


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative specs ('nonsense', 'nope.png') are resolved in an empty directory."""
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------------------------ digits
@pytest.fixture(scope="module")
def sk_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    b = load_digits()
    return np.asarray(b.images, dtype=np.float32), np.asarray(b.target, dtype=np.int64)


@pytest.mark.parametrize("spec", ["digits", "digits:train", "digits:test"])
def test_digits_shapes_range_labels(spec: str) -> None:
    x, y = data.load(spec)
    assert x.ndim == 4 and tuple(x.shape[1:]) == (1, 8, 8)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(x) == len(y)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert float(x.max()) == 1.0  # 16/16 occurs in every split
    assert set(y.tolist()) == set(range(10))


def test_digits_split_is_index_mod_3(sk_digits: tuple[np.ndarray, np.ndarray]) -> None:
    images, target = sk_digits
    idx = np.arange(len(target))
    test_idx, train_idx = idx[idx % 3 == 0], idx[idx % 3 != 0]
    assert set(test_idx.tolist()).isdisjoint(train_idx.tolist())

    x_te, y_te = data.load("digits:test")
    x_tr, y_tr = data.load("digits:train")
    x_all, y_all = data.load("digits")
    assert len(x_te) + len(x_tr) == len(target) == 1797 == len(x_all)
    assert len(x_te) == len(test_idx) and len(x_tr) == len(train_idx)
    # exactly the sklearn images (grey levels 0..16 scaled by 1/16), in index order
    assert torch.equal(x_te[:, 0], torch.from_numpy(images[test_idx] / 16.0))
    assert torch.equal(y_te, torch.from_numpy(target[test_idx]))
    assert torch.equal(x_tr[:, 0], torch.from_numpy(images[train_idx] / 16.0))
    assert torch.equal(y_tr, torch.from_numpy(target[train_idx]))
    assert torch.equal(x_all[:, 0], torch.from_numpy(images / 16.0))


def test_digits_bogus_split() -> None:
    with pytest.raises(AdvlabError, match="bogus"):
        data.load("digits:bogus")


def test_digits_describe_and_names() -> None:
    info = data.describe("digits:test")
    n = len(range(0, 1797, 3))
    assert (info.count, info.channels, info.size, info.num_classes) == (n, 1, (8, 8), 10)
    assert info.dataset == "digits" and not info.photos
    names = data.item_names("digits:test", limit=3)
    assert names == ["digits:test[0]", "digits:test[1]", "digits:test[2]"]
    assert len(data.item_names("digits:test")) == n


def test_limit_on_fixed_set() -> None:
    x, y = data.load("digits:test", limit=7)
    x_full, y_full = data.load("digits:test")
    assert torch.equal(x, x_full[:7]) and torch.equal(y, y_full[:7])


# ------------------------------------------------------------------------------------------ samples
SAMPLE_NAMES = ["chelsea", "coffee", "rocket", "motorcycle"]
SAMPLE_LABELS = [281, 967, 657, 665]


def test_samples_default_size() -> None:
    x, y = data.load("samples")
    assert tuple(x.shape) == (4, 3, 224, 224)
    assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
    assert y.tolist() == SAMPLE_LABELS
    classes = data.imagenet_classes()
    assert [classes[i] for i in y.tolist()] == ["tabby", "espresso", "missile", "moped"]
    assert data.item_names("samples") == SAMPLE_NAMES


def test_samples_size_and_channels() -> None:
    x, y = data.load("samples", size=64)
    assert tuple(x.shape) == (4, 3, 64, 64)
    assert y.tolist() == SAMPLE_LABELS
    g, _ = data.load("samples", size=32, channels=1)
    assert tuple(g.shape) == (4, 1, 32, 32)
    info = data.describe("samples", size=64)
    assert (info.count, info.size, info.dataset, info.num_classes, info.photos) == (4, (64, 64), "imagenet", 1000, True)


def test_samples_content_matches_the_named_photo() -> None:
    """The i-th sample is the i-th named scikit-image photo (mean colour of the whole photo vs the crop)."""
    import skimage.data

    x, _ = data.load("samples", size=96)
    photos = [skimage.data.chelsea(), skimage.data.coffee(), skimage.data.rocket(), skimage.data.stereo_motorcycle()[0]]
    # distance matrix of channel means: every crop must be nearest to its own photo
    crop_means = x.mean(dim=(2, 3)).numpy()
    photo_means = np.stack([p.reshape(-1, 3).mean(0) / 255.0 for p in photos])
    d = np.abs(crop_means[:, None, :] - photo_means[None, :, :]).sum(-1)
    assert d.argmin(1).tolist() == [0, 1, 2, 3]


def test_samples_takes_no_argument() -> None:
    with pytest.raises(AdvlabError, match="no argument"):
        data.load("samples:x")


# ------------------------------------------------------------------------------------------ folders
def test_folder_with_synset_names(tmp_path: Path) -> None:
    root = tmp_path / "imnet"
    index = imagenet_synset_index()
    # looked up by hand in imagenet_classes.tsv: n01440764 -> 0 (tench), n01443537 -> 1, n01883070 -> 106 (wombat)
    expected = {"n01440764": 0, "n01443537": 1, "n01883070": 106}
    assert {s: index[s] for s in expected} == expected
    for k, syn in enumerate(expected):
        for j in range(2):
            write_png(root / syn / f"img{j}.png", (10 * k, 20 * j, 30))
    x, y = data.load(f"folder:{root}", size=16)
    assert tuple(x.shape) == (6, 3, 16, 16)
    assert y.tolist() == [0, 0, 1, 1, 106, 106]
    info = data.describe(f"folder:{root}")
    assert info.dataset == "imagenet" and info.count == 6 and info.num_classes == 1000
    assert info.class_names[106] == "wombat"
    assert data.item_names(f"folder:{root}") == [f"{syn}/img{j}.png" for syn in expected for j in range(2)]


def test_folder_unknown_synset(tmp_path: Path) -> None:
    write_png(tmp_path / "r" / "n99999999" / "a.png", (1, 2, 3))
    with pytest.raises(AdvlabError, match="n99999999"):
        data.load(f"folder:{tmp_path / 'r'}")


def test_folder_with_plain_names(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    write_png(root / "dogs" / "d1.png", (200, 0, 0))
    write_png(root / "cats" / "c1.png", (0, 200, 0))
    write_png(root / "cats" / "c2.png", (0, 0, 200))
    write_png(root / "zebras" / "z.png", (9, 9, 9))
    (root / "cats" / "notes.txt").write_text("not an image, ignored")
    x, y = data.load(f"folder:{root}", size=8)
    assert y.tolist() == [0, 0, 1, 2]  # cats, cats, dogs, zebras (sorted)
    info = data.describe(f"folder:{root}")
    assert info.class_names == ["cats", "dogs", "zebras"] and info.num_classes == 3 and info.dataset == "pets"
    # uniform images stay (almost exactly) uniform through resize + crop: order of files is kept
    assert torch.allclose(x[0].mean((1, 2)), torch.tensor([0, 200, 0]) / 255, atol=1.5 / 255)
    assert torch.allclose(x[2].mean((1, 2)), torch.tensor([200, 0, 0]) / 255, atol=1.5 / 255)


def test_flat_folder_is_unlabelled_and_plain_dir_works_like_folder(tmp_path: Path) -> None:
    root = tmp_path / "flat"
    for i in range(3):
        noise_png(root / f"{i}.png", seed=i)
    x, y = data.load(f"folder:{root}", size=10)
    assert tuple(x.shape) == (3, 3, 10, 10) and y.tolist() == [-1, -1, -1]
    x2, y2 = data.load(str(root), size=10)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert data.describe(str(root)).num_classes is None


def test_glob_and_single_file(tmp_path: Path) -> None:
    d = tmp_path / "g"
    paths = [noise_png(d / f"{n}.png", seed=i) for i, n in enumerate(["b", "a", "c"])]
    write_png(d / "skip.bmp", (1, 1, 1))
    x, y = data.load(f"{d}/*.png", size=12)
    assert tuple(x.shape) == (3, 3, 12, 12) and y.tolist() == [-1] * 3
    assert data.item_names(f"{d}/*.png") == ["a.png", "b.png", "c.png"]
    x1, y1 = data.load(str(paths[1]), size=12)  # a.png
    assert tuple(x1.shape) == (1, 3, 12, 12) and y1.tolist() == [-1]
    assert torch.equal(x1[0], x[0])
    with pytest.raises(AdvlabError, match="no files match"):
        data.load(f"{d}/*.jpg")


def test_different_sizes_are_resized_and_cropped(tmp_path: Path) -> None:
    d = tmp_path / "sizes"
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    for (w, h), c, n in zip([(40, 20), (13, 31), (7, 7)], colours, "abc", strict=True):
        write_png(d / f"{n}.png", c, size=(w, h))
    x, _ = data.load(str(d), size=24)
    assert tuple(x.shape) == (3, 3, 24, 24)
    for i, c in enumerate(colours):
        expect = (torch.tensor(c, dtype=torch.float32) / 255).view(3, 1, 1).expand(3, 24, 24)
        assert torch.allclose(x[i], expect, atol=1.5 / 255)


def test_grayscale_png_with_three_channels(tmp_path: Path) -> None:
    a = np.random.default_rng(1).integers(0, 256, (16, 16), dtype=np.uint8)
    p = write_png(tmp_path / "grey.png", a)
    x, _ = data.load(str(p), size=16, channels=3)
    assert tuple(x.shape) == (1, 3, 16, 16)
    assert torch.equal(x[0, 0], x[0, 1]) and torch.equal(x[0, 1], x[0, 2])
    g, _ = data.load(str(p), size=16, channels=1)
    assert tuple(g.shape) == (1, 1, 16, 16)
    assert torch.allclose(g[0, 0], x[0, 0], atol=1 / 255)


def test_rgba_png_gives_rgb(tmp_path: Path) -> None:
    p = write_png(tmp_path / "rgba.png", (30, 140, 220, 77), size=(9, 11))
    x, _ = data.load(str(p), size=8)
    assert tuple(x.shape) == (1, 3, 8, 8)
    # alpha dropped, colour kept
    assert torch.allclose(x[0].mean((1, 2)), torch.tensor([30, 140, 220]) / 255, atol=1.5 / 255)


def test_read_image_exact_pixels_without_resize(tmp_path: Path) -> None:
    from advlab.data.images import read_image

    a = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    p = write_png(tmp_path / "exact.png", a)
    t = read_image(p)
    assert torch.equal(t, torch.from_numpy(a).permute(2, 0, 1).float() / 255)


# ------------------------------------------------------------------------------------------ open()
def test_open_folder_streams_same_as_load(tmp_path: Path) -> None:
    root = tmp_path / "stream"
    for cls in ("a", "b"):
        for i in range(3 if cls == "a" else 2):
            noise_png(root / cls / f"{i}.png", seed=10 * len(cls) + i + (5 if cls == "b" else 0), w=15 + i, h=11)
    x, y = data.load(str(root), size=10)
    assert len(x) == 5

    batches = data.open(str(root), batch_size=2, size=10)
    assert len(batches) == 3
    got = list(batches)
    assert [len(b[0]) for b in got] == [2, 2, 1]
    assert torch.equal(torch.cat([b[0] for b in got]), x)
    assert torch.equal(torch.cat([b[1] for b in got]), y)
    assert batches.info.count == 5

    limited = data.open(str(root), batch_size=2, size=10, limit=3)
    assert len(limited) == 2
    lx = torch.cat([b[0] for b in limited])
    assert torch.equal(lx, x[:3])

    pooled = data.open(str(root), batch_size=2, size=10, workers=2)
    px, py = zip(*pooled, strict=True)
    assert torch.equal(torch.cat(px), x) and torch.equal(torch.cat(py), y)


def test_open_digits_concatenates_to_load() -> None:
    x, y = data.load("digits:test")
    b = data.open("digits:test", batch_size=100)
    assert len(b) == (len(y) + 99) // 100
    parts = list(b)
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)
    lim = list(data.open("digits:test", batch_size=4, limit=10))
    assert [len(p[1]) for p in lim] == [4, 4, 2]
    assert torch.equal(torch.cat([p[0] for p in lim]), x[:10])


def test_open_samples_concatenates_to_load() -> None:
    x, y = data.load("samples", size=40)
    b = data.open("samples", batch_size=3, size=40)
    parts = list(b)
    assert len(b) == 2 == len(parts)
    assert torch.equal(torch.cat([p[0] for p in parts]), x)
    assert torch.equal(torch.cat([p[1] for p in parts]), y)


def test_open_rejects_zero_batch_size() -> None:
    with pytest.raises(AdvlabError, match="batch size"):
        data.open("digits:test", batch_size=0)


# ------------------------------------------------------------------------------------------ tensors:
def _save(path: Path, **arrays: np.ndarray) -> Path:
    if path.suffix == ".npz":
        np.savez(path, **arrays)
    else:
        from safetensors.numpy import save_file

        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))
    return path


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_tensors_float(tmp_path: Path, suffix: str) -> None:
    rng = np.random.default_rng(3)
    xf = rng.random((5, 3, 6, 4), dtype=np.float32)
    yi = np.array([4, 0, 9, 2, 2], dtype=np.int64)
    p = _save(tmp_path / f"t{suffix}", x=xf, y=yi)
    x, y = data.load(f"tensors:{p}")
    assert x.dtype == torch.float32 and torch.equal(x, torch.from_numpy(xf))
    assert y.dtype == torch.int64 and y.tolist() == yi.tolist()
    info = data.describe(f"tensors:{p}")
    assert (info.count, info.channels, info.size, info.num_classes) == (5, 3, (6, 4), 10)
    assert data.item_names(f"tensors:{p}", limit=2) == [f"tensors:{p}[0]", f"tensors:{p}[1]"]


@pytest.mark.parametrize("suffix", [".npz", ".safetensors"])
def test_tensors_uint8_is_divided_by_255(tmp_path: Path, suffix: str) -> None:
    u = np.random.default_rng(4).integers(0, 256, (3, 1, 5, 5), dtype=np.uint8)
    u[0, 0, 0, 0], u[0, 0, 0, 1] = 0, 255
    p = _save(tmp_path / f"u{suffix}", x=u, y=np.array([1, 2, 3], dtype=np.int32))
    x, y = data.load(f"tensors:{p}")
    assert x.dtype == torch.float32
    assert torch.equal(x, torch.from_numpy(u).float() / 255)
    assert float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert y.dtype == torch.int64 and y.tolist() == [1, 2, 3]
    # streamed batches do the same conversion
    xs = torch.cat([b[0] for b in data.open(f"tensors:{p}", batch_size=2)])
    assert torch.equal(xs, x)


def test_tensors_nhw_gets_channel_dim_and_missing_y(tmp_path: Path) -> None:
    a = np.random.default_rng(5).random((4, 7, 6)).astype(np.float32)
    p = _save(tmp_path / "nhw.npz", x=a)
    x, y = data.load(f"tensors:{p}")
    assert tuple(x.shape) == (4, 1, 7, 6)
    assert torch.equal(x[:, 0], torch.from_numpy(a))
    assert y.tolist() == [-1] * 4
    assert data.describe(f"tensors:{p}").num_classes is None


def test_tensors_nhwc_is_permuted(tmp_path: Path) -> None:
    a = np.random.default_rng(6).integers(0, 256, (2, 9, 8, 3), dtype=np.uint8)
    p = _save(tmp_path / "nhwc.safetensors", x=a, y=np.array([0, 1]))
    x, _ = data.load(f"tensors:{p}")
    assert tuple(x.shape) == (2, 3, 9, 8)
    assert torch.equal(x, torch.from_numpy(np.transpose(a, (0, 3, 1, 2))).float() / 255)


def test_tensors_float64_and_integer_valued_float_y(tmp_path: Path) -> None:
    a = np.linspace(0, 1, 2 * 16).reshape(2, 1, 4, 4)  # float64
    p = _save(tmp_path / "f64.npz", x=a, y=np.array([3.0, 7.0]))
    x, y = data.load(f"tensors:{p}")
    assert x.dtype == torch.float32 and torch.allclose(x, torch.from_numpy(a).float())
    assert y.dtype == torch.int64 and y.tolist() == [3, 7]


class _CreatesFile:
    """Unpickling this calls builtins.open(marker, 'w'), i.e. creates the marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):  # noqa: ANN204
        return (builtins.open, (self.marker, "w"))


BAD_TENSOR_CASES = {
    "nan": ("nan.npz", "NaN or infinite"),
    "inf": ("inf.safetensors", "NaN or infinite"),
    "above 1": ("hi.npz", r"must be in \[0, 1\]"),
    "below 0": ("lo.safetensors", r"must be in \[0, 1\]"),
    "x missing": ("nox.npz", "has no 'x'.*images"),
    "y length": ("ylen.npz", "2 images but 3 labels"),
    "float y": ("yfloat.npz", "integer class indices"),
    "int x": ("xint.npz", "dtype"),
    "5-d x": ("x5.npz", r"expected \(N, C, H, W\)"),
    "suffix": ("t.pt", "must be .npz or .safetensors"),
    "corrupt npz": ("corrupt.npz", "cannot read tensors file"),
    "corrupt safetensors": ("corrupt.safetensors", "cannot read tensors file"),
    "missing": ("absent.npz", "no such tensors file"),
}


def _write_bad_tensor_file(tmp_path: Path, case: str) -> Path:
    ok = np.full((2, 1, 4, 4), 0.5, dtype=np.float32)
    p = tmp_path / BAD_TENSOR_CASES[case][0]
    if case in ("nan", "inf"):
        bad = ok.copy()
        bad[1, 0, 2, 2] = np.nan if case == "nan" else np.inf
        _save(p, x=bad, y=np.array([0, 1]))
    elif case == "above 1":
        _save(p, x=ok + 0.6)
    elif case == "below 0":
        _save(p, x=ok - 0.7)
    elif case == "x missing":
        _save(p, images=ok, y=np.array([0, 1]))
    elif case == "y length":
        _save(p, x=ok, y=np.array([0, 1, 2]))
    elif case == "float y":
        _save(p, x=ok, y=np.array([0.5, 1.0]))
    elif case == "int x":
        _save(p, x=np.ones((2, 1, 4, 4), dtype=np.int64))
    elif case == "5-d x":
        _save(p, x=np.zeros((1, 2, 1, 4, 4), dtype=np.float32))
    elif case == "suffix":
        np.save(tmp_path / "t.npy", ok)
        (tmp_path / "t.npy").rename(p)
    elif case.startswith("corrupt"):
        p.write_bytes(np.random.default_rng(7).bytes(300))
    return p


@pytest.mark.parametrize("case", list(BAD_TENSOR_CASES))
def test_tensors_errors(tmp_path: Path, case: str) -> None:
    path = _write_bad_tensor_file(tmp_path, case)
    message = BAD_TENSOR_CASES[case][1]
    with pytest.raises(AdvlabError, match=message):
        data.load(f"tensors:{path}")
    with pytest.raises(AdvlabError, match=message):  # describe() reads the same file and fails the same way
        data.describe(f"tensors:{path}")


def test_tensors_npz_with_pickled_object_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "MARKER"
    p = tmp_path / "evil.npz"
    np.savez(p, x=np.array([_CreatesFile(marker)], dtype=object))  # numpy pickles object arrays
    assert not marker.exists()
    with pytest.raises(AdvlabError, match="cannot read tensors file"):
        data.load(f"tensors:{p}")
    assert not marker.exists()


def test_tensors_empty_file_is_a_clean_result_or_error(tmp_path: Path) -> None:
    """An x with zero images must give empty tensors or a one-line AdvlabError, not a RuntimeError."""
    p = _save(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), dtype=np.float32))
    try:
        x, y = data.load(f"tensors:{p}")
    except AdvlabError:
        return
    assert tuple(x.shape) == (0, 1, 8, 8) and len(y) == 0


# ------------------------------------------------------------------------------------------ bad specs / files
def test_unknown_spec_lists_known_specs() -> None:
    with pytest.raises(AdvlabError) as e:
        data.load("nonsense")
    msg = str(e.value)
    assert "nonsense" in msg
    for spec, _ in data.spec_names():
        assert spec in msg
    assert "\n" not in msg


def test_missing_image_file() -> None:
    with pytest.raises(AdvlabError, match="no such file"):
        data.load("nope.png")
    with pytest.raises(AdvlabError, match="no such folder"):
        data.load("folder:not-here")


def test_text_file_named_png(tmp_path: Path) -> None:
    p = tmp_path / "fake.png"
    p.write_text("hello, I am not a picture\n")
    with pytest.raises(AdvlabError, match="not an image"):
        data.load(str(p))


def test_truncated_png(tmp_path: Path) -> None:
    p = noise_png(tmp_path / "full.png", seed=8, w=64, h=64)
    raw = p.read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(raw[: len(raw) // 2])
    data.load(str(p), size=8)  # the whole file is fine
    with pytest.raises(AdvlabError, match="cut.png"):
        data.load(str(cut), size=8)


def test_empty_folder_and_empty_class_folders(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(AdvlabError, match="no images"):
        data.load(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "classes" / "a").mkdir(parents=True)
    with pytest.raises(AdvlabError, match="no images"):
        data.load(f"folder:{tmp_path / 'classes'}")


@pytest.mark.parametrize("bad", ["", None])
def test_spec_must_be_nonempty_string(bad: object) -> None:
    with pytest.raises(AdvlabError):
        data.load(bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ image helpers
def test_resize_center_crop_keeps_the_centre() -> None:
    w, h, size = 100, 60, 30
    a = np.zeros((h, w, 3), dtype=np.uint8)
    a[:] = (255, 0, 0)  # red background
    a[20:40, 40:60] = (0, 0, 255)  # blue 20x20 block in the exact centre
    a[:, :10] = (0, 255, 0)  # green stripe at the far left: outside the centre crop
    out = np.asarray(resize_center_crop(Image.fromarray(a), size).convert("RGB")).astype(int)
    assert out.shape == (size, size, 3)
    c = size // 2
    assert (np.abs(out[c - 2 : c + 2, c - 2 : c + 2] - [0, 0, 255]) <= 8).all()  # centre is blue
    for r, q in [(0, 0), (0, size - 1), (size - 1, 0), (size - 1, size - 1)]:
        assert np.abs(out[r, q] - [255, 0, 0]).max() <= 8  # corners are red
    assert out[:, :, 1].max() <= 8  # no green survives


def test_resize_center_crop_scales_the_shorter_side() -> None:
    from advlab.data.images import CROP_FRACTION

    # a portrait image: the vertical stripe at the centre must stay centred and the output square
    a = np.zeros((90, 30, 3), dtype=np.uint8)
    a[:, 14:16] = 255
    out = np.asarray(resize_center_crop(Image.fromarray(a), 16))
    assert out.shape == (16, 16, 3)
    col = out[8, :, 0].astype(int)
    peak = int(col.argmax())
    assert 6 <= peak <= 9
    # the shorter side (30) becomes 16 / CROP_FRACTION wide, so the 2-pixel stripe is about 2 * that / 30 wide
    width = int((col > 127).sum())
    assert abs(width - 2 * (16 / CROP_FRACTION) / 30) <= 1


def test_convert_channels_grey_to_rgb_and_back() -> None:
    g = torch.rand(2, 1, 5, 4)
    rgb = convert_channels(g, 3)
    assert tuple(rgb.shape) == (2, 3, 5, 4)
    for c in range(3):
        assert torch.equal(rgb[:, c], g[:, 0])
    back = convert_channels(rgb, 1)
    assert torch.allclose(back, g, atol=1e-6)  # the 601 weights sum to 1

    x = torch.rand(3, 3, 4, 4)
    grey = convert_channels(x, 1)
    expect = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    assert tuple(grey.shape) == (3, 1, 4, 4)
    assert torch.allclose(grey[:, 0], expect, atol=1e-6)
    assert convert_channels(x, None) is x and convert_channels(x, 3) is x
    with pytest.raises(AdvlabError):
        convert_channels(torch.rand(1, 2, 3, 3), 3)


def test_convert_channels_matches_pil_luminance() -> None:
    a = np.random.default_rng(9).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    pil_l = np.asarray(Image.fromarray(a).convert("L")).astype(np.float32) / 255
    x = torch.from_numpy(a).permute(2, 0, 1).float().div(255).unsqueeze(0)
    ours = convert_channels(x, 1)[0, 0].numpy()
    assert np.abs(ours - pil_l).max() <= 1 / 255 + 1e-6


def test_no_files_created_by_loading(tmp_path: Path) -> None:
    """Reading data specs never writes next to the data."""
    d = tmp_path / "ro"
    noise_png(d / "a.png", seed=1)
    before = sorted(os.listdir(d))
    data.load(str(d), size=8)
    list(data.open(str(d), batch_size=1, size=8, workers=2))
    assert sorted(os.listdir(d)) == before
