"""Bad input to the ``advlab`` commands: exit code 2, exactly one line on stderr, no traceback, no output left.

Every case is run in-process through ``advlab.cli.main``; one case is also run as a real subprocess
(``python -m advlab``) to prove the process exit code and stderr.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.cli import main
from advlab.errors import AdvlabError
from tests.cli.helpers import run_cli


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


# ------------------------------------------------------------------------------------------ bad inputs
class RunsShell:
    """Unpickling this runs ``os.system(command)``."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (self.command,))


def _png(path: Path, w: int = 32, h: int = 32) -> Path:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _bomb_png(path: Path) -> Path:
    """A PNG header claiming 20000 x 20000 pixels (PIL's decompression-bomb limit is 2 x 89.5 M)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )
    return path


def _make_missing(d: Path) -> list[str]:
    return ["classify", str(d / "nope.png"), "--model", "digits-cnn"]


def _make_truncated(d: Path) -> list[str]:
    raw = _png(d / "full.png", 64, 64).read_bytes()
    (d / "cut.png").write_bytes(raw[: len(raw) // 2])
    return ["classify", str(d / "cut.png"), "--model", "digits-cnn"]


def _make_text_png(d: Path) -> list[str]:
    (d / "text.png").write_text("this is not a picture\n" * 5)
    return ["classify", str(d / "text.png"), "--model", "digits-cnn"]


def _make_grey_to_lite(d: Path) -> list[str]:
    p = _npz(d / "grey.npz", x=np.full((2, 1, 8, 8), 0.5, dtype=np.float32), y=np.array([0, 1]))
    return ["classify", f"tensors:{p}", "--model", "efficientnet-lite0"]


def _make_rgb_to_digits(d: Path) -> list[str]:
    p = _npz(d / "rgb.npz", x=np.full((2, 3, 8, 8), 0.5, dtype=np.float32), y=np.array([0, 1]))
    return ["classify", f"tensors:{p}", "--model", "digits-cnn"]


def _make_wrong_size_digits(d: Path) -> list[str]:
    p = _npz(d / "big.npz", x=np.full((2, 1, 16, 16), 0.5, dtype=np.float32))
    return ["classify", f"tensors:{p}", "--model", "digits-cnn"]


def _make_nan(d: Path) -> list[str]:
    x = np.full((2, 1, 8, 8), 0.5, dtype=np.float32)
    x[1, 0, 3, 3] = np.nan
    p = _npz(d / "nan.npz", x=x, y=np.array([0, 1]))
    return ["classify", f"tensors:{p}", "--model", "digits-cnn"]


def _make_unknown_model(d: Path) -> list[str]:
    return ["classify", "digits:test", "--model", "no-such-model"]


def _make_unknown_data(d: Path) -> list[str]:
    return ["classify", "nonsense", "--model", "digits-cnn"]


def _make_label_out_of_range(d: Path) -> list[str]:
    p = _npz(d / "y12.npz", x=np.full((2, 1, 8, 8), 0.5, dtype=np.float32), y=np.array([12, 0]))
    return ["classify", f"tensors:{p}", "--model", "digits-cnn"]


def _make_wrong_keys(d: Path) -> list[str]:
    from safetensors.torch import save_file

    save_file({"encoder.weight": torch.zeros(4, 4), "head.bias": torch.zeros(10)}, str(d / "wrong.safetensors"))
    return [
        "classify",
        "digits:test",
        "--model",
        "digits-cnn",
        "--weights",
        str(d / "wrong.safetensors"),
        "--limit",
        "4",
    ]


def _make_pickle_bomb(d: Path) -> list[str]:
    marker = d / "MARKER"
    (d / "evil.pt").write_bytes(pickle.dumps(RunsShell(f"touch {marker}")))
    return ["classify", "digits:test", "--model", "digits-cnn", "--weights", str(d / "evil.pt"), "--limit", "4"]


def _make_pickle_bomb_in_torch_zip(d: Path) -> list[str]:
    marker = d / "MARKER"
    torch.save({"w": torch.zeros(2), "evil": RunsShell(f"touch {marker}")}, d / "evil_zip.pt")
    return ["classify", "digits:test", "--model", "digits-cnn", "--weights", str(d / "evil_zip.pt"), "--limit", "4"]


def _make_decompression_bomb(d: Path) -> list[str]:
    return ["classify", str(_bomb_png(d / "bomb.png")), "--model", "digits-cnn"]


def _train(*extra: str) -> Callable[[Path], list[str]]:
    return lambda d: [
        "train",
        "--model",
        "digits-cnn",
        "--data",
        "digits:train",
        "--limit",
        "40",
        "--epochs",
        "1",
        "--quiet",
        *extra,
    ]


# (name, argv builder, whether --out is added)
CASES: list = [
    pytest.param(_make_missing, True, id="missing-image"),
    pytest.param(_make_truncated, True, id="truncated-image"),
    pytest.param(_make_text_png, True, id="text-as-png"),
    pytest.param(_make_grey_to_lite, True, id="1-channel-to-efficientnet"),
    pytest.param(_make_rgb_to_digits, True, id="3-channel-to-digits-cnn"),
    pytest.param(_make_wrong_size_digits, True, id="16x16-to-digits-cnn"),
    pytest.param(_make_nan, True, id="nan-in-tensors"),
    pytest.param(_make_unknown_model, True, id="unknown-model"),
    pytest.param(_make_unknown_data, True, id="unknown-data"),
    pytest.param(_make_label_out_of_range, True, id="label-12-for-10-classes"),
    pytest.param(_make_wrong_keys, True, id="checkpoint-wrong-keys"),
    pytest.param(
        _make_pickle_bomb,
        True,
        id="pickle-runs-code",
    ),
    pytest.param(_make_pickle_bomb_in_torch_zip, True, id="torch-save-with-code"),
    pytest.param(
        lambda d: ["classify", "digits:test", "--model", "digits-cnn", "--bogus-option"], True, id="unknown-option"
    ),
    pytest.param(lambda d: ["classify", "digits:test", "--model", "digits-cnn", "--top", "0"], True, id="top-0"),
    pytest.param(lambda d: ["classify", "digits:test", "--model", "digits-cnn", "--limit", "x"], True, id="limit-x"),
    pytest.param(_train("--epochs", "-1"), True, id="epochs-negative"),
    pytest.param(_train("--lr", "abc"), True, id="lr-abc"),
    pytest.param(_train("--lr", "1/0"), True, id="lr-div-zero"),
    pytest.param(_train("--lr", "0"), True, id="lr-0"),
    pytest.param(_train("--lr", "-0.1"), True, id="lr-negative"),
    pytest.param(lambda d: ["train", "--data", "nonsense", "--quiet"], True, id="train-unknown-data"),
    pytest.param(lambda d: ["train", "--data", "samples", "--quiet"], True, id="train-labels-out-of-range"),
    pytest.param(
        lambda d: ["train", "--data", "digits:train", "--eval-data", "digits:bogus", "--quiet"],
        True,
        id="train-bad-eval",
    ),
    pytest.param(lambda d: ["data", "nonsense"], False, id="data-unknown"),
    pytest.param(lambda d: ["no-such-command"], False, id="unknown-command"),
    pytest.param(
        _make_decompression_bomb,
        True,
        id="decompression-bomb",
    ),
    pytest.param(
        _train("--lr", "nan"),
        True,
        id="lr-nan",
    ),
]


@pytest.mark.parametrize(("make", "with_out"), CASES)
def test_bad_input_exit_2_one_line(tmp_path: Path, make: Callable[[Path], list[str]], with_out: bool) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    argv = make(inputs)
    out = tmp_path / "out"
    if with_out:
        argv = [*argv, "--out", str(out)]
    rc, _, err = run_cli(argv)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].strip(), err
    assert "Traceback" not in err
    assert lines[0].startswith("advlab")
    assert "error" in lines[0]
    assert not out.exists()
    assert not out.with_name("out.partial").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs"]  # nothing else written
    assert not (inputs / "MARKER").exists()


def test_pickle_that_runs_code_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    argv = _make_pickle_bomb(tmp_path)
    marker = tmp_path / "MARKER"
    # the file really would create the marker when unpickled (so the refusal is what protects us)
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(RunsShell(f"touch {probe}")))
    assert probe.exists()
    rc, _, err = run_cli(argv)
    assert rc == 2
    assert "refusing" in err or "pickle" in err
    assert not marker.exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_reraises(tmp_path: Path, where: str) -> None:
    args = ["classify", str(tmp_path / "nope.png"), "--model", "digits-cnn"]
    argv = ["--debug", *args] if where == "before" else [*args, "--debug"]
    with pytest.raises(AdvlabError, match="no such file"):
        main(argv)


def test_keyboard_interrupt_keeps_partial_and_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import advlab.cli.train as train_cmd

    def interrupted(*a: object, **k: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_cmd, "fit", interrupted)
    out = tmp_path / "tr"
    rc, _, err = run_cli(["train", "--limit", "40", "--epochs", "1", "--quiet", "--out", str(out)])
    assert rc == 130
    assert len(err.strip().splitlines()) == 1 and "resume" in err
    assert not out.exists()
    assert (tmp_path / "tr.partial" / "INTERRUPTED.json").is_file()


def test_subprocess_exit_code_and_stderr(tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "advlab",
            "classify",
            str(tmp_path / "nope.png"),
            "--model",
            "digits-cnn",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such file" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""
    assert not out.exists() and not (tmp_path / "out.partial").exists()
