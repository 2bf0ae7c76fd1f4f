"""``advlab study prune``, ``detect`` and ``analyze layers|units|linearity`` read their data batch by batch: a user's
Dataset (``--data data.py:factory``) logs every item it hands out and a user's model (``--model model.py:factory``)
every forward, in one log file. A streamed command runs the model on the first batches before it reads the last
image, and reads at most a few batches ahead of the model; one that loads everything first reads all N images
before its first forward on a batch."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli

#: images in the data set, and images per batch: 6 batches
N, BATCH = 60, 10
#: a forward on more rows than this is the model at work on a batch (probes of the layers use 1 or 2 images)
PROBE_ROWS = 2
#: batches a streamed command may have read when its first batch goes through the model: the one in use, the
#: one read ahead (:class:`advlab.evaluation.inputs.Source`) and the one a shape probe may read
AHEAD = 3

DATA = """
import torch


class Logged(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand({n}, 1, 8, 8, generator=g)
        self.targets = torch.randint(0, 3, ({n},), generator=g).tolist()

    def __len__(self):
        return {n}

    def __getitem__(self, i):
        with open({log!r}, "a") as fh:
            fh.write(f"read {{i}}\\n")
        return self.x[i], self.targets[i]


def make():
    return Logged()
"""

MODEL = """
import torch
from torch import nn


class Logged(nn.Module):
    input_size, in_channels = 8, 1

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
        self.classifier = nn.Sequential(nn.Linear(256, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x):
        with open({log!r}, "a") as fh:
            fh.write(f"forward {{len(x)}}\\n")
        return self.classifier(self.features(x))


def make():
    return Logged().eval()
"""


@pytest.fixture
def logged(tmp_path: Path) -> tuple[str, str, Path]:
    """(--data spec, --model spec, the log both write to)."""
    log = tmp_path / "log.txt"
    (tmp_path / "data.py").write_text(textwrap.dedent(DATA.format(n=N, log=str(log))))
    (tmp_path / "model.py").write_text(textwrap.dedent(MODEL.format(log=str(log))))
    return f"{tmp_path / 'data.py'}:make", f"{tmp_path / 'model.py'}:make", log


def _first_pass(log: Path) -> tuple[int, int]:
    """(distinct images read when the first batch went through the model, forwards on batches before the last
    image was first read), from the log of one run."""
    read: set[int] = set()
    at_first_forward, forwards = None, 0
    for line in log.read_text().splitlines():
        what, _, arg = line.partition(" ")
        if what == "read":
            if int(arg) == N - 1 and N - 1 not in read:
                break
            read.add(int(arg))
        elif int(arg) > PROBE_ROWS:
            forwards += 1
            at_first_forward = len(read) if at_first_forward is None else at_first_forward
    assert at_first_forward is not None, "no batch went through the model before the last image was read"
    return at_first_forward, forwards


def _assert_streamed(log: Path) -> None:
    ahead, forwards = _first_pass(log)
    assert forwards >= 1 and ahead <= AHEAD * BATCH, (ahead, forwards)
    assert f"read {N - 1}" in log.read_text().splitlines()  # and every image was read in the end


def test_first_pass_measure_tells_loading_from_streaming(tmp_path: Path) -> None:
    """The measure itself: a log of a load-everything-first command fails it, one of a streamed command passes."""
    log = tmp_path / "log.txt"
    log.write_text("".join(f"read {i}\n" for i in range(N)) + f"forward {BATCH}\n")
    with pytest.raises(AssertionError):
        _first_pass(log)
    streamed = []
    for b in range(N // BATCH):
        streamed += [f"read {i}" for i in range(b * BATCH, (b + 1) * BATCH)] + [f"forward {BATCH}"]
    log.write_text("\n".join(streamed) + "\n")
    assert _first_pass(log) == (BATCH, N // BATCH - 1)


def test_study_streams_each_pass(logged: tuple[str, str, Path], tmp_path: Path) -> None:
    data, model, log = logged
    argv = ["study", "prune", "--model", model, "--data", data, "--defense", "e", "--settings", "e=0.01"]
    argv += ["--eps", "0.1", "--steps", "2", "--batch-size", str(BATCH), "--json", "--quiet"]
    rc, out, err = run_cli([*argv, "--out", str(tmp_path / "run")])
    assert rc == 0, err
    rows = json.loads(out)
    assert [r["defense"] for r in rows] == ["none", "e"] and all(r["n"] == N for r in rows)
    _assert_streamed(log)
    lines = log.read_text().splitlines()
    # one pass over the data per row, each batch by batch (the undefended row also makes the adversarials that
    # the transfer column of every row uses)
    assert lines.count(f"read {N - 1}") == 2
    assert not list(tmp_path.glob("**/dense_*.pt"))  # the spilled adversarials are gone with the run


def test_detect_streams_both_data_sets(logged: tuple[str, str, Path], tmp_path: Path) -> None:
    data, model, log = logged
    argv = ["detect", "--model", model, "--data-train", data, "--data", data, "--eps", "0.3", "--steps", "2"]
    argv += ["--held-out", "fgsm@0.3", "--adaptive-steps", "2", "--epochs", "2", "--batch-size", str(BATCH)]
    rc, out, err = run_cli([*argv, "--json", "--quiet", "--out", str(tmp_path / "run")])
    assert rc == 0, err
    m = json.loads(out)
    assert m["test_images"] == N and m["train_clean"] + m["calibration_images"] == N
    _assert_streamed(log)
    assert log.read_text().splitlines().count(f"read {N - 1}") == 2  # one pass over each data set


@pytest.mark.parametrize(
    "analysis, extra",
    [
        ("layers", ["--eps", "0.1", "--steps", "2"]),
        ("units", ["--k", "3", "--top-units", "2", "--directions", "2"]),
    ],
)
def test_analyze_streams(logged: tuple[str, str, Path], tmp_path: Path, analysis: str, extra: list[str]) -> None:
    data, model, log = logged
    argv = ["analyze", analysis, "--model", model, "--data", data, "--batch-size", str(BATCH), *extra]
    rc, out, err = run_cli([*argv, "--json", "--quiet", "--out", str(tmp_path / "run")])
    assert rc == 0, err
    _assert_streamed(log)
    if analysis == "units":
        m = json.loads(out)
        assert m["images"] == N
        # units.png shows the top-3 of 4 probes: at most 12 images read again, each alone, after the pass
        again = log.read_text().splitlines()[log.read_text().splitlines().index(f"read {N - 1}") + 1 :]
        assert 3 <= len([x for x in again if x.startswith("read")]) <= 12


def test_analyze_linearity_streams(logged: tuple[str, str, Path], tmp_path: Path) -> None:
    data, model, log = logged
    argv = ["analyze", "linearity", "--models", model, "--data", data, "--eps", "0,0.1", "--batch-size", str(BATCH)]
    rc, out, err = run_cli([*argv, "--json", "--quiet", "--out", str(tmp_path / "run")])
    assert rc == 0, err
    m = json.loads(out)
    assert m["images"] == N and set(m["models"][model]["accuracy"]) == {"0.0", "0.1"}
    _assert_streamed(log)
