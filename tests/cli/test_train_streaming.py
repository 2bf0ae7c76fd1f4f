"""``advlab train`` streams its data: a user's Dataset (``--data data.py:factory``) is read batch by batch while the
model trains, at most a few batches ahead of it, in a fresh shuffled order each epoch, and the trained weights are
the bits that training on the whole data as one tensor gives."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from advlab import data, zoo
from advlab.data.stream import PREFETCH
from advlab.defenses.training import TrainConfig, fit
from tests.cli.helpers import run_cli

N, BATCH, EPOCHS, SEED = 100, 16, 2, 3
STEPS = math.ceil(N / BATCH)

#: 100 8x8 grey images in 4 classes (a bright 3x3 square in the class's corner, on weak noise); every read of an
#: item appends "read i main|worker" to LOG (worker: a thread other than the main one). ``targets`` lets the labels
#: be known without reading an image.
DATA = """
import threading

import torch
from torch.utils.data import Dataset

LOG = {log!r}
CORNERS = [(0, 0), (0, 5), (5, 0), (5, 5)]


class Logged(Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand({n}, 1, 8, 8, generator=g) * 0.3
        self.targets = [i % 4 for i in range({n})]
        for i, k in enumerate(self.targets):
            r, c = CORNERS[k]
            self.x[i, 0, r : r + 3, c : c + 3] += 0.6

    def __len__(self):
        return {n}

    def __getitem__(self, i):
        who = "main" if threading.current_thread() is threading.main_thread() else "worker"
        with open(LOG, "a") as fh:
            fh.write(f"read {{i}} {{who}}\\n")
        return self.x[i], self.targets[i]


def build():
    return Logged()
"""

#: a tiny 4-class CNN taking 1x8x8 images; every forward appends "forward train|eval B" to LOG
MODEL = """
import torch
from torch import nn

LOG = {log!r}


class Tiny(nn.Module):
    input_size = 8
    in_channels = 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 4)

    def forward(self, x):
        with open(LOG, "a") as fh:
            fh.write(f"forward {{'train' if self.training else 'eval'}} {{len(x)}}\\n")
        return self.fc(nn.functional.max_pool2d(torch.relu(self.conv(x)), 2).flatten(1))


def build():
    return Tiny()
"""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str, Path]:
    """(the --data spec, the --model spec, the log both write to)."""
    root = tmp_path_factory.mktemp("stream")
    log = root / "log.txt"
    (root / "data.py").write_text(DATA.format(log=str(log), n=N))
    (root / "model.py").write_text(MODEL.format(log=str(log)))
    return f"{root / 'data.py'}:build", f"{root / 'model.py'}:build", log


def _train(files: tuple[str, str, Path], out: Path) -> list[str]:
    """Run ``advlab train`` on the logged Dataset; returns the log lines it wrote."""
    data_spec, model_spec, log = files
    log.write_text("")
    argv = ["train", "--model", model_spec, "--data", data_spec, "--epochs", str(EPOCHS)]
    rc, _, err = run_cli([*argv, "--batch-size", str(BATCH), "--seed", str(SEED), "--out", str(out), "--quiet"])
    assert rc == 0, err
    return log.read_text().splitlines()


def test_train_reads_batch_by_batch_while_training_and_gives_the_in_memory_weights(
    files: tuple[str, str, Path], tmp_path: Path
) -> None:
    lines = _train(files, tmp_path / "run")
    train_forwards = [k for k, line in enumerate(lines) if line.startswith("forward train")]
    assert len(train_forwards) == EPOCHS * STEPS  # one forward per optimizer step
    worker_reads = [k for k, line in enumerate(lines) if line.startswith("read") and line.endswith("worker")]
    # before training, the main thread reads at most the one item that tells the images' shape (twice: the model
    # file is probed with it, the data described by it): nothing is loaded up front
    setup = [line for line in lines[: train_forwards[0]] if line.startswith("read") and line.endswith("main")]
    assert len(setup) <= 2, setup

    # epoch 1: the first N reads by the reader thread, each image once, in a shuffled order
    epoch1 = [int(lines[k].split()[1]) for k in worker_reads[:N]]
    epoch2 = [int(lines[k].split()[1]) for k in worker_reads[N : 2 * N]]
    assert sorted(epoch1) == sorted(epoch2) == list(range(N))
    assert epoch1 != list(range(N)) and epoch1 != epoch2  # a fresh order each epoch
    # the model trains before the last image of epoch 1 is read, and reads run at most PREFETCH batches ahead
    assert train_forwards[0] < worker_reads[N - 1]
    for step, k in enumerate(train_forwards[:STEPS]):
        read_so_far = sum(1 for r in worker_reads[:N] if r < k)
        assert read_so_far >= min(N, BATCH * (step + 1))  # the batch it trains on was read
        assert read_so_far <= min(N, BATCH * (step + 1 + PREFETCH)), (step, read_so_far)

    # the same bits as training on the whole data as one tensor, with the same seed
    data_spec, model_spec, _ = files
    torch.manual_seed(SEED)
    model = zoo.load(model_spec, pretrained=False)
    x, y, _ = data.load_for_model(data_spec, 8, 1, model_classes=None)
    history = fit(model, x, y, TrainConfig(epochs=EPOCHS, batch_size=BATCH, seed=SEED))
    saved = load_file(str(tmp_path / "run" / "weights.safetensors"))
    expected = model.net.state_dict()  # type: ignore[union-attr]
    assert saved.keys() == expected.keys()
    assert all(torch.equal(saved[k], expected[k]) for k in saved)
    assert history.loss[-1] < history.loss[0]  # it did learn something: the comparison is not of untouched weights


#: n synthetic 3x64x64 images made on the fly from their index (nothing stored: a data set of any size costs nothing
#: to hold), labelled i % 4
SYNTHETIC = """
import torch
from torch.utils.data import Dataset


class Synthetic(Dataset):
    def __init__(self):
        self.targets = [i % 4 for i in range({n})]

    def __len__(self):
        return {n}

    def __getitem__(self, i):
        return torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)), self.targets[i]


def build():
    return Synthetic()
"""

#: a 4-class CNN on 3x64x64 images, as small as a CNN gets
SMALL = """
import torch
from torch import nn


def build():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 4)
    )
    net.input_size, net.in_channels = 64, 3
    return net
"""


def _peak_mib(args: list[str]) -> float:
    """Peak resident memory (MiB) of ``advlab ARGS`` run in a fresh process."""
    probe = (
        "import resource, sys; from advlab.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    done = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout.split("PEAK")[-1].split()[0]) / 1024


@pytest.mark.slow
def test_train_peak_memory_does_not_grow_with_the_number_of_images(tmp_path: Path) -> None:
    """Training on 3,000 64x64 images peaks at most 1.2x the memory of training on 300: as one float32 tensor
    the 3,000 would be 141 MiB more (a torch process starts at ~300 MiB)."""
    (tmp_path / "small.py").write_text(SMALL)
    peaks = {}
    for n in (300, 3000):
        (tmp_path / f"data{n}.py").write_text(SYNTHETIC.format(n=n))
        argv = ["train", "--model", f"{tmp_path / 'small.py'}:build", "--data", f"{tmp_path / f'data{n}.py'}:build"]
        peaks[n] = _peak_mib([*argv, "--epochs", "1", "--batch-size", "100", "--out", str(tmp_path / f"r{n}"), "-q"])
    assert peaks[3000] <= 1.2 * peaks[300], peaks
