"""advlab.data.open_for_model: which images (subset, sample, limit), at which size, with which labels, read batch
by batch (batch(b) reads its own files only, labels() none, iteration at most PREFETCH batches ahead)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab import data
from advlab.data import stream
from advlab.errors import AdvlabError

CLASSES = ("ant", "bee", "cow")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """ant/ bee/ cow/ with 4 distinct 16x16 noise PNGs each (a0.png ... c3.png)."""
    rng = np.random.default_rng(0)
    for name in CLASSES:
        (tmp_path / "f" / name).mkdir(parents=True)
        for i in range(4):
            a = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
            Image.fromarray(a).save(tmp_path / "f" / name / f"{name[0]}{i}.png")
    return tmp_path / "f"


def _open(spec: str, **kw: object) -> data.Batches:
    args: dict = {"input_size": None, "channels": 3, "class_names": None, **kw}
    return data.open_for_model(spec, **args)


def _pixels(path: Path) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(path))).permute(2, 0, 1).float() / 255


def test_images_at_their_own_size_with_folder_labels(folder: Path) -> None:
    b = _open(f"folder:{folder}", batch_size=5)  # a model without class names
    assert (len(b), b.count, b.info.size, b.info.label_source, b.info.notes) == (3, 12, (16, 16), "folder order", [])
    x, y = stream.stack(b)
    assert torch.equal(y, torch.arange(3).repeat_interleave(4))
    assert torch.equal(x[5], _pixels(folder / "bee" / "b1.png"))  # exact pixels: nothing resized
    assert torch.equal(b.labels(), y)
    x2, y2, info = data.load_for_model(f"folder:{folder}", None, 3)  # the data's own labels: the same here
    assert torch.equal(x2, x) and torch.equal(y2, y) and info == b.info


def test_subset_by_name_and_relative_path(folder: Path, tmp_path: Path) -> None:
    listing = tmp_path / "subset.txt"
    listing.write_text("# five images\ncow/c2.png\na1.png\n\nb3.png\nbee/b0.png\ncow/c0.png\n")
    b = _open(f"folder:{folder}", subset=listing, batch_size=2)
    assert b.names() == ["ant/a1.png", "bee/b0.png", "bee/b3.png", "cow/c0.png", "cow/c2.png"]  # in data order
    assert b.labels().tolist() == [0, 1, 1, 2, 2]
    assert torch.equal(b.batch(2)[0][0], _pixels(folder / "cow" / "c2.png"))
    listing.write_text("a1.png\nzebra.png\nc9.png\n")
    with pytest.raises(AdvlabError, match=r"2 of 3 names are not in .* \(first: 'zebra.png'\)"):
        _open(f"folder:{folder}", subset=listing)


def test_sample_is_seeded_sorted_and_limited(folder: Path) -> None:
    spec = f"folder:{folder}"
    one, same, other = (_open(spec, sample=5, seed=s).names() for s in (1, 1, 2))
    assert one == same and one != other and len(set(one)) == 5
    every = _open(spec).names()
    assert [every.index(n) for n in one] == sorted(every.index(n) for n in one)
    assert _open(spec, sample=5, seed=1, limit=2).names() == one[:2]
    with pytest.raises(AdvlabError, match="sample of 13 images.*has 12"):
        _open(spec, sample=13)


def test_batch_reads_only_its_files_and_labels_read_none(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = _open(f"folder:{folder}", batch_size=4)
    read: list[str] = []
    original = stream.read_image
    monkeypatch.setattr(stream, "read_image", lambda p, *a: read.append(Path(p).name) or original(p, *a))
    x, y = b.batch(1)
    assert read == ["b0.png", "b1.png", "b2.png", "b3.png"] and y.tolist() == [1] * 4
    read.clear()
    assert b.labels().tolist() == [0] * 4 + [1] * 4 + [2] * 4 and b.names()[4] == "bee/b0.png"
    assert read == []
    with pytest.raises(AdvlabError, match="batch 3 out of range"):
        b.batch(3)


def test_iteration_decodes_at_most_two_batches_ahead(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []
    lock = threading.Lock()
    original = stream.read_image

    def counted(p: Path, *a: object) -> torch.Tensor:
        with lock:
            started.append(1)
        return original(p, *a)

    monkeypatch.setattr(stream, "read_image", counted)
    b = _open(f"folder:{folder}", batch_size=1, workers=3)
    ahead = []
    for k, _ in enumerate(b):
        time.sleep(0.02)  # a slow consumer: the workers could read everything meanwhile
        ahead.append(len(started) - (k + 1))
    assert 1 <= max(ahead) <= stream.PREFETCH and len(started) == 12


def test_mixed_sizes_need_an_input_size_and_upscales_are_noted(tmp_path: Path) -> None:
    for name, side in (("a", 20), ("b", 28)):
        (tmp_path / "m" / name).mkdir(parents=True)
        Image.new("RGB", (side, side), (9, 99, 199)).save(tmp_path / "m" / name / "x.png")
    spec = f"folder:{tmp_path / 'm'}"
    with pytest.raises(AdvlabError, match=r"different sizes \(20x20 .*28x28.*--input-size"):
        _open(spec)
    assert data.describe(spec).size is None and data.native_shape(spec) is None
    b = _open(spec, input_size=24)
    assert b.info.size == (24, 24) and len(b.info.notes) == 1
    assert "1 of the first 2 images are smaller than the model's 24x24" in b.info.notes[0]
    assert _open(spec, input_size=16).info.notes == []  # shrinking is no news


def test_factory_dataset(tmp_path: Path) -> None:
    (tmp_path / "ds.py").write_text(
        "import torch\n"
        "class Squares(torch.utils.data.Dataset):\n"
        "    classes = ['dark', 'light']\n"
        "    def __len__(self):\n        return 5\n"
        "    def __getitem__(self, i):\n        return torch.full((1, 6, 6), i / 4), int(i >= 3)\n"
        "def make():\n    return Squares()\n"
    )
    spec = f"{tmp_path / 'ds.py'}:make"
    b = _open(spec, channels=1, class_names=["light", "dark"], batch_size=2)
    assert (len(b), b.info.size, b.info.label_source) == (3, (6, 6), "names")
    x, y = stream.stack(b)
    assert torch.equal(x[:, 0, 0, 0], torch.arange(5) / 4) and y.tolist() == [1, 1, 1, 0, 0]
    assert b.labels().tolist() == y.tolist() and torch.equal(b.batch(1)[0], x[2:4])
    assert data.describe(spec).count == 5
    (tmp_path / "bad.py").write_text("def make():\n    return 42\n")
    with pytest.raises(AdvlabError, match="not a map-style torch Dataset"):
        _open(f"{tmp_path / 'bad.py'}:make")


def test_tensors_keep_their_size_and_sample_by_index() -> None:
    b = _open("digits:test", channels=1, class_names=[str(i) for i in range(10)], sample=7, seed=3, batch_size=3)
    x_all, y_all = data.load("digits:test")
    rows = [int(n.rpartition("[")[2][:-1]) for n in b.names()]
    x, y = stream.stack(b)
    assert torch.equal(x, x_all[rows]) and torch.equal(y, y_all[rows]) and b.info.label_source == "indices"


def test_reordered_is_the_data_in_that_order_reading_only_its_batch(
    folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    b = _open(f"folder:{folder}", batch_size=5)
    x, y = stream.stack(b)
    order = torch.randperm(b.count, generator=torch.Generator().manual_seed(7))  # one shuffled epoch
    r = b.reordered(order)
    assert (r.count, len(r), r.batch_size, r.info) == (12, 3, 5, b.info)
    assert not torch.equal(order, torch.arange(12))
    xr, yr = stream.stack(r)
    assert torch.equal(xr, x[order]) and torch.equal(yr, y[order]) and torch.equal(r.labels(), y[order])
    assert r.names() == [b.names()[i] for i in order.tolist()]
    assert torch.equal(stream.stack(r.rebatched(4, workers=2))[0], x[order])  # prefetched: the same images
    read: list[str] = []
    original = stream.read_image
    monkeypatch.setattr(stream, "read_image", lambda p, *a: read.append(Path(p).name) or original(p, *a))
    xb, yb = r.batch(1)
    assert sorted(read) == sorted(b.names()[i].split("/")[1] for i in order[5:10].tolist())
    assert torch.equal(xb, x[order[5:10]]) and torch.equal(yb, y[order[5:10]])
    read.clear()
    head = r.reordered([2, 0])  # a shorter order selects: positions in r, not in b
    assert torch.equal(stream.stack(head)[0], x[order[[2, 0]]]) and len(read) == 2
    with pytest.raises(IndexError, match="position 12 out of range"):
        b.reordered([0, 12])
