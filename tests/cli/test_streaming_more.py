"""``advlab transfer`` and ``advlab compare`` stream their data (issue 23): a ``--data file.py:factory`` Dataset logs
each image it hands out and a model file logs each forward pass with the highest image index in its batch, so the
log shows the order of reading and computing: the first forward comes long before the last image is read, and no
forward runs more than two batches behind the reading. The streamed results equal the in-memory library's."""

from __future__ import annotations

import json
import runpy
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from advlab.attacks import PGD
from advlab.experiments.transfer import transfer_matrix
from tests.cli.helpers import run_cli

#: 60 RGB 8x8 images of two classes: class 0 is brighter on the left half, class 1 on the right, by a contrast
#: c_i in [0.02, 0.32]. Pixels (0, 0) and (0, 1) of channel 0 hold the image's index in base 8 ((digit + 0.5) / 8);
#: the model never looks at channel 0, so its gradient there is 0 and an attack moves them by at most its random
#: start (< 1/16 at the eps used here): the index survives into every forward. ``gappy`` leaves every 7th image
#: (3, 10, 17, ...) unlabelled.
DATA = textwrap.dedent(
    """
    import os
    import torch
    from torch.utils.data import Dataset

    N = 60


    class Logged(Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.targets = [i % 2 for i in range(N)]
            sign = 1.0 - 2.0 * torch.tensor(self.targets, dtype=torch.float32)
            half = (0.01 + 0.15 * torch.rand(N, generator=g)) * sign
            x = torch.full((N, 3, 8, 8), 0.5)
            x[:, :, :, :4] += half[:, None, None, None]
            x[:, :, :, 4:] -= half[:, None, None, None]
            x[:, 0, 0, 0] = (torch.arange(N) // 8 + 0.5) / 8
            x[:, 0, 0, 1] = (torch.arange(N) % 8 + 0.5) / 8
            self.x = x

        def __len__(self):
            return N

        def __getitem__(self, i):
            log = os.environ.get("ADVLAB_STREAM_LOG")
            if log:
                with open(log, "a") as f:
                    f.write(f"read {i}\\n")
            return self.x[i], self.targets[i]


    def labelled():
        return Logged()


    def gappy():
        ds = Logged()
        ds.targets = [-1 if i % 7 == 3 else t for i, t in enumerate(ds.targets)]
        return ds
    """
)

#: a tiny CNN on channel 1: logit k is the mean of the left (k = 0) or right (k = 1) half, so it is right on every
#: image and an L-inf eps of 0.05 flips the images of contrast below 0.1 (about a third)
MODEL = textwrap.dedent(
    """
    import os
    import torch
    from torch import nn


    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.input_size, self.in_channels = 8, 3
            self.conv = nn.Conv2d(3, 2, 3, padding=1)
            self.fc = nn.Linear(2 * 8 * 8, 2)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.bias.zero_()
                self.conv.weight[:, 1, 1, 1] = 1.0
                self.fc.weight.zero_()
                self.fc.bias.zero_()
                w = self.fc.weight.view(2, 2, 8, 8)
                w[0, 0, :, :4] = 1 / 32
                w[1, 1, :, 4:] = 1 / 32

        def forward(self, x):
            log = os.environ.get("ADVLAB_STREAM_LOG")
            if log and len(x):
                digits = (x[:, 0, 0, :2].detach() * 8).floor().clamp(0, 7)
                with open(log, "a") as f:
                    f.write(f"forward {int((digits[:, 0] * 8 + digits[:, 1]).max())}\\n")
            return self.fc(torch.relu(self.conv(x)).flatten(1))


    def build():
        return Tiny()
    """
)

BATCH = 8


@pytest.fixture()
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    """(data.py, model.py, the log both write to while the test runs)."""
    (tmp_path / "data.py").write_text(DATA)
    (tmp_path / "model.py").write_text(MODEL)
    log = tmp_path / "log.txt"
    monkeypatch.setenv("ADVLAB_STREAM_LOG", str(log))
    return tmp_path / "data.py", tmp_path / "model.py", log


def _check_streamed(log: Path, n: int) -> list[int]:
    """Assert that the log shows streaming; returns the image indices read, in order.

    Forwards before the first read are the model's own probe at loading, not data. A forward on a batch whose
    highest image is j (batch j // BATCH) may only come after images of at most two batches beyond it were read
    (the one being prefetched, and one being regrouped); and some forward comes before the last image is read."""
    lines = log.read_text().splitlines()
    reads = [int(t.split()[1]) for t in lines if t.startswith("read ")]
    first_read = next(i for i, t in enumerate(lines) if t.startswith("read "))
    last_read = max(i for i, t in enumerate(lines) if t == f"read {n - 1}")
    forwards = [(i, int(t.split()[1])) for i, t in enumerate(lines) if t.startswith("forward ") and i > first_read]
    assert forwards and forwards[0][0] < last_read, lines[:40]
    seen = -1
    ahead = 0
    at = 0
    for pos, j in forwards:
        while at < pos:
            if lines[at].startswith("read "):
                seen = max(seen, int(lines[at].split()[1]))
            at += 1
        ahead = max(ahead, seen // BATCH - j // BATCH)
    assert 0 <= ahead <= 2, ahead
    return reads


def _load(path: Path, factory: str) -> Any:
    return runpy.run_path(str(path))[factory]()


def test_transfer_reads_batch_by_batch_and_counts_what_the_library_counts(
    files: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The unlabelled images are left out and the rest regrouped into full batches, read as the attack goes; the
    matrix equals the library's :func:`transfer_matrix` on the labelled images held in memory, batch for batch."""
    data, model, log = files
    spec = f"{model}:build"
    argv = ["transfer", "--from", spec, "--data", f"{data}:gappy", "--eps", "0.05", "--steps", "2"]
    rc, stdout, err = run_cli([*argv, "--noise-tries", "2", "--batch-size", str(BATCH), "--out", str(tmp_path / "t")])
    assert rc == 0, err
    reads = _check_streamed(log, 60)
    assert sorted(set(reads)) == list(range(60))
    m = json.loads((tmp_path / "t" / "metrics.json").read_text())
    assert m["unlabelled_dropped"] == 9 and m["n"] == 51 and "| chance: random noise" in stdout

    monkeypatch.delenv("ADVLAB_STREAM_LOG")
    ds = _load(data, "gappy")
    y = torch.tensor(ds.targets)
    keep = y >= 0
    net = _load(model, "build")
    lib = transfer_matrix(
        [(spec, net)],
        [(spec, net)],
        ds.x[keep],
        y[keep],
        PGD(eps=0.05, steps=2),
        batch_size=BATCH,
        noise_tries=2,
    )
    assert m["attack"] == lib.attack
    assert 0 < m["fooled"][0][0] < m["clean_correct"][0] == 51  # the model is right on all, eps breaks some
    for key in ("fooled", "clean_correct", "white_box_fooled", "noise_fooled", "true_prob_drop"):
        assert m[key] == lib.to_dict()[key], key


def test_compare_reads_batch_by_batch_and_stops_at_the_limit(files: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """compare attacks the clean-correct images a batch at a time while the next is read, and stops reading once
    --limit of them are found; the distances do not depend on the batch size."""
    data, model, log = files
    argv = ["compare", "--model", f"{model}:build", "--data", f"{data}:labelled", "--attacks", "fmn,deepfool"]
    argv += ["--norm", "l2", "--budget", "20", "--quiet"]
    rc, _, err = run_cli([*argv, "--limit", "60", "--batch-size", str(BATCH), "--out", str(tmp_path / "c")])
    assert rc == 0, err
    _check_streamed(log, 60)
    streamed = load_file(str(tmp_path / "c" / "distances.safetensors"))
    assert streamed["fmn"].shape == (60,) and bool(torch.isfinite(streamed["reference"]).all())

    log.unlink()
    rc, _, err = run_cli([*argv, "--limit", "12", "--batch-size", str(BATCH), "--out", str(tmp_path / "few")])
    assert rc == 0, err
    reads = [int(t.split()[1]) for t in log.read_text().splitlines() if t.startswith("read ")]
    assert max(reads) < 3 * BATCH  # 12 images need two batches; the third may be prefetched, no more
    few = json.loads((tmp_path / "few" / "metrics.json").read_text())
    assert few["images"] == 12

    rc, _, err = run_cli([*argv, "--limit", "60", "--batch-size", "64", "--out", str(tmp_path / "one")])
    assert rc == 0, err
    one = load_file(str(tmp_path / "one" / "distances.safetensors"))
    for name in ("fmn", "deepfool", "reference"):
        torch.testing.assert_close(streamed[name], one[name], rtol=1e-5, atol=1e-6)


def test_regrouped_batches_keep_order_and_stop_reading_at_the_limit() -> None:
    """Parts of any sizes come out in full batches in data order; with a limit, the parts after it are not read."""
    from advlab.cli.transfer import regrouped

    sizes, read = [3, 0, 5, 9, 2, 6], []

    def parts() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start = 0
        for k, n in enumerate(sizes):
            read.append(k)
            idx = torch.arange(start, start + n)
            yield idx[:, None].float(), idx
            start += n

    out = list(regrouped(parts(), 4))
    assert [len(y) for _, y in out] == [4, 4, 4, 4, 4, 4, 1] and torch.equal(
        torch.cat([y for _, y in out]), torch.arange(25)
    )
    assert all(torch.equal(x[:, 0].long(), y) for x, y in out)
    read.clear()
    out = list(regrouped(parts(), 4, limit=10))
    assert [len(y) for _, y in out] == [4, 4, 2] and torch.equal(torch.cat([y for _, y in out]), torch.arange(10))
    assert read == [0, 1, 2, 3]  # image 9 is in part 3: parts 4 and 5 are never read


#: a random 3-class CNN for 64x64 RGB photos (right on about a third of random images)
PHOTO_NET = textwrap.dedent(
    """
    import torch
    from torch import nn

    def make():
        torch.manual_seed(0)
        m = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
        )
        m.input_size, m.in_channels = 64, 3
        return m
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["transfer", "compare"])
def test_peak_memory_does_not_grow_with_the_number_of_images(tmp_path: Path, command: str) -> None:
    """Peak memory on 3,000 64x64 photos is at most 1.3x the peak on 300 (the images alone are 140 MiB in float32;
    measured before streaming: transfer 460 -> 886 MiB, compare 456 -> 1466 MiB; streamed: 453 -> 474, 479 -> 475)."""
    from tests.cli.test_streaming import _peak_mib, _photos

    (tmp_path / "net.py").write_text(PHOTO_NET)
    model = f"{tmp_path / 'net.py'}:make"
    peaks = {}
    for n in (300, 3000):
        data = f"folder:{_photos(tmp_path / f'p{n}', n, 64)}"
        if command == "transfer":
            argv = ["transfer", "--from", model, "--data", data, "--steps", "1", "--noise-tries", "1", "--eps", "0.03"]
        else:
            argv = ["compare", "--model", model, "--data", data, "--attacks", "deepfool", "--norm", "l2"]
            argv += ["--budget", "20"]
        peaks[n] = _peak_mib([*argv, "--limit", str(n), "--batch-size", "100", "--out", str(tmp_path / f"r{n}")])
    assert peaks[3000] <= 1.3 * peaks[300], peaks
