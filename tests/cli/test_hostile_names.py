"""Issue 21 (part 4): hostile names (class names, file names, folder names) and the CLI's safety net.

- A class or file name that starts like a spreadsheet formula (=, +, -, @, tab, carriage return) is written to
  every CSV with a leading single quote (OWASP's advice), so a spreadsheet shows it as text instead of running it.
- HTML in a class or file name stays escaped in report.html; a class name never makes a path in a PNG's name.
- An error message is always one line: a newline (or any control character) in a name is escaped.
- An OSError on a path the user gave (a name too long, a missing file, a full disk) and an allocation that fails
  are one line and exit code 2; a genuine bug (TypeError, ...) keeps its traceback.
"""

from __future__ import annotations

import csv
import errno
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.cli import main
from advlab.cli.common import FORMULA_START, csv_text, one_line
from advlab.errors import AdvlabError
from tests.cli.helpers import run_cli

#: class names a spreadsheet would run, an HTML payload, a comma and quote, a newline
HOSTILE = [
    '=HYPERLINK("http://x","y")',
    "+1",
    "-2",
    "@SUM(A1)",
    "\tTAB",
    "\rCR",
    "<script>alert(1)</script>",
    'a,b"c',
    "x\ny",
    "../../etc",
]

MODEL = f"""
import torch
from torch import nn


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))


def net():
    torch.manual_seed(0)
    m = Small()
    m.input_size, m.in_channels = 8, 1
    m.class_names = {HOSTILE!r}
    return m
"""


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def _model(d: Path) -> str:
    (d / "hostile.py").write_text(MODEL)
    return f"{d / 'hostile.py'}:net"


def _data(d: Path, name: str = "digits.npz") -> str:
    from advlab import data

    x, y = data.load("digits:test", limit=12)
    np.savez(d / name, x=x.numpy(), y=y.numpy())
    return f"tensors:{d / name}"


def _text(path: Path) -> str:
    """The file's text as written (no newline translation: a carriage return inside a cell stays one)."""
    with path.open(newline="") as f:
        return f.read()


def _cells(path: Path) -> list[list[str]]:
    return _cells_of(_text(path))


def _assert_no_formula(path: Path) -> None:
    """No cell of the CSV starts like a formula, except a plain number (-0.5)."""
    for row in _cells(path):
        for cell in row:
            if cell.startswith(FORMULA_START):
                float(cell)  # a number, not text


# ------------------------------------------------------------------------------------------ CSV cells
def test_csv_text_quotes_formula_cells_and_keeps_numbers() -> None:
    rows = [{"name": n, "value": -2, "score": -0.5, "plain": "ok"} for n in HOSTILE]
    cells = _cells_of(csv_text(rows))
    assert cells[0] == ["name", "value", "score", "plain"]
    names = [r[0] for r in cells[1:]]
    assert names[:6] == ["'" + n for n in HOSTILE[:6]]
    assert names[6:] == HOSTILE[6:]  # not formula-like: unchanged (the newline and quotes are CSV-quoted)
    assert all(r[1:] == ["-2", "-0.5", "ok"] for r in cells[1:])


def _cells_of(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def test_attack_and_eval_csvs_escape_class_names_and_pngs_are_plain_names(tmp_path: Path) -> None:
    model, data = _model(tmp_path), _data(tmp_path)
    argv = ["--model", model, "--data", data, "--attack", "pgd", "--eps", "0.3", "--steps", "3", "--quiet"]
    rc, _, err = run_cli(["attack", *argv, "--out", str(tmp_path / "a")])
    assert rc == 0, err
    samples = tmp_path / "a" / "samples.csv"
    _assert_no_formula(samples)
    rows = list(csv.DictReader(io.StringIO(_text(samples), newline="")))
    names = {r[k] for r in rows for k in ("label_name", "clean_name", "adv_name")}
    assert names <= {("'" + n if n.startswith(FORMULA_START) else n) for n in HOSTILE}
    assert any(n.startswith("'") for n in names)
    pngs = [p.name for p in (tmp_path / "a" / "adversarials").iterdir()]
    assert pngs and all(re.fullmatch(r"[A-Za-z0-9._-]+\.png", p) for p in pngs), pngs
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<script>alert" not in html
    rc, _, err = run_cli(["eval", *argv, "--out", str(tmp_path / "e")])
    assert rc == 0, err
    _assert_no_formula(tmp_path / "e" / "samples.csv")


def test_folder_and_file_names_are_escaped_in_csv_and_html(tmp_path: Path) -> None:
    """A folder data set whose sub-folder and file names are formulas or HTML: samples.csv quotes them,
    report.html escapes the data spec in its title."""
    root = tmp_path / "<img src=x onerror=alert(1)>"
    for cls in ("=1+1", "@SUM(A1)"):
        (root / cls).mkdir(parents=True)
        Image.new("L", (8, 8), 40).save(root / cls / "=2+2.png")
    argv = [
        "--model",
        "digits-cnn",
        "--data",
        f"folder:{root}",
        "--labels",
        "predicted",
        "--attack",
        "pgd",
        "--eps",
        "0.1",
        "--steps",
        "2",
        "--quiet",
    ]
    rc, _, err = run_cli(["attack", *argv, "--out", str(tmp_path / "a")])
    assert rc == 0, err
    _assert_no_formula(tmp_path / "a" / "samples.csv")
    html = (tmp_path / "a" / "report.html").read_text()
    assert "<img src=x" not in html and "&lt;img src=x" in html


def test_prototypes_report_escapes_class_names(tmp_path: Path) -> None:
    argv = ["--model", _model(tmp_path), "--steps", "2", "--targets", "0,6", "--quiet"]
    rc, _, err = run_cli(["prototypes", *argv, "--out", str(tmp_path / "p")])
    assert rc == 0, err
    html = (tmp_path / "p" / "report.html").read_text()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    _assert_no_formula(tmp_path / "p" / "trajectories.csv")


# ------------------------------------------------------------------------------------------ one-line errors
def _one_line(rc: int, err: str) -> str:
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("advlab") and "error: " in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def test_one_line_escapes_control_characters() -> None:
    for text in ("a\nb", "a\r\nb", "a\x1b[31mb", "a\u2028b", "a\x85b", "a\x00b", "a\x0bb"):
        assert len(one_line(text).splitlines()) == 1
        assert "\x1b" not in one_line(text)
    assert one_line("a\nb\tc") == "a\\nb\\tc"
    assert one_line("été, ok") == "été, ok"
    assert len(one_line("x" * 100_000)) < 2100


DIGITS = ["--data", "digits:test", "--model", "digits-cnn"]
NEWLINES = {
    "classify-file": ["classify", "no\nsuch.png", "--model", "digits-cnn"],
    "model-file": ["attack", "--model", "no\nsuch.py:net", "--data", "digits:test", "--attack", "pgd"],
    "attack-name": ["attack", *DIGITS, "--attack", "pg\nd"],
    "target": ["attack", *DIGITS, "--attack", "pgd", "--target", "ban\nana"],
    "unknown-option": ["attack", *DIGITS, "--attack", "pgd", "--bogus\noption"],
    "extra-argument": ["attack", *DIGITS, "--attack", "pgd", "extra\nargument"],
    "data-spec": ["data", "no\nsuch"],
    "score-run": ["prototypes", "score", "no\nrun", "answers.json"],
    "command": ["pro\ntotypes"],
}


@pytest.mark.parametrize("argv", list(NEWLINES.values()), ids=list(NEWLINES))
def test_a_newline_in_a_name_gives_one_line(argv: list[str]) -> None:
    line = _one_line(*run_cli(argv)[::2])
    assert "\\n" in line


def test_a_real_file_with_a_newline_in_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "not\nan image.png"
    bad.write_bytes(b"\x00garbage")
    line = _one_line(*run_cli(["classify", str(bad), "--model", "digits-cnn"])[::2])
    assert "\\n" in line


LONG = "a" * 300


TOO_LONG = {
    "classify-image": lambda d: ["classify", str(d / f"{LONG}.png"), "--model", "digits-cnn"],
    "model-file": lambda d: ["attack", "--model", f"{d / LONG}.py:net", "--data", "digits:test", "--attack", "pgd"],
    "weights": lambda d: ["attack", *DIGITS, "--weights", str(d / f"{LONG}.safetensors"), "--attack", "pgd"],
    "quiz-run": lambda d: ["prototypes", "quiz", str(d / LONG)],
    "demo-out": lambda d: ["demo", "--out", str(d / LONG)],
    "robustbench": lambda d: ["eval", *DIGITS, "--limit", "4", "--eps", "0.1", "--robustbench", f"{d / LONG}.json"],
}


@pytest.mark.parametrize("make_argv", list(TOO_LONG.values()), ids=list(TOO_LONG))
def test_a_name_too_long_for_the_file_system_gives_one_line(tmp_path: Path, make_argv: object) -> None:
    _one_line(*run_cli(make_argv(tmp_path))[::2])  # type: ignore[operator]
    assert list(tmp_path.iterdir()) == []


def test_selftest_seed_beyond_the_range_gives_one_line() -> None:
    line = _one_line(*run_cli(["selftest", "--seed", str(2**64)])[::2])
    assert "at most 4294967295" in line


# ------------------------------------------------------------------------------------------ the safety net in main
def _raising(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    import advlab.cli.selftest as selftest_cmd

    def boom(args: object) -> int:
        raise error

    monkeypatch.setattr(selftest_cmd, "run", boom)


USER_ERRORS = {
    "ENOSPC": (OSError(errno.ENOSPC, "No space left on device", "/runs/a.pt"), "No space left on device: '/runs/a.pt'"),
    "ENAMETOOLONG": (OSError(errno.ENAMETOOLONG, "File name too long", "a\nb"), "File name too long: 'a\\nb'"),
    "EACCES": (PermissionError(errno.EACCES, "Permission denied", "/root/x"), "Permission denied: '/root/x'"),
    "ENOENT-two-names": (
        FileNotFoundError(errno.ENOENT, "No such file or directory", "x", None, "y"),
        "No such file or directory: 'x' -> 'y'",
    ),
    "MemoryError": (MemoryError(), "out of memory"),
    "torch-allocator": (
        RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"),
        "out of memory",
    ),
    "AdvlabError-newline": (AdvlabError("a\nmulti-line\x1b[2J message"), "a\\nmulti-line\\x1b[2J message"),
}


@pytest.mark.parametrize(("error", "says"), list(USER_ERRORS.values()), ids=list(USER_ERRORS))
def test_user_errors_are_one_line(monkeypatch: pytest.MonkeyPatch, error: BaseException, says: str) -> None:
    _raising(monkeypatch, error)
    line = _one_line(*run_cli(["selftest"])[::2])
    assert line.startswith(f"advlab selftest: error: {says}")


BUGS = [TypeError("a bug"), OSError(errno.EINVAL, "Invalid argument"), RuntimeError("a bug")]


@pytest.mark.parametrize("error", BUGS, ids=["TypeError", "EINVAL", "RuntimeError"])
def test_bugs_keep_their_traceback(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    _raising(monkeypatch, error)
    with pytest.raises(type(error)):
        main(["selftest"])


def test_debug_reraises_user_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    _raising(monkeypatch, OSError(errno.ENOSPC, "No space left on device", "/x"))
    with pytest.raises(OSError):
        main(["selftest", "--debug"])
    _raising(monkeypatch, MemoryError())
    with pytest.raises(MemoryError):
        main(["--debug", "selftest"])


def test_torch_out_of_memory_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _raising(monkeypatch, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert "out of memory" in _one_line(*run_cli(["selftest"])[::2])
