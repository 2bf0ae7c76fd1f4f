"""Issue 21 (part 2): a hostile tour of every command's numeric and choice options, as real CLI calls.

Every bad value is refused with exit code 2 and exactly one line on stderr that starts with ``advlab`` and says
what was wrong (no traceback, no usage dump), before anything is written: the working directory and ``--out``
stay empty. Options that size the work have sane upper bounds, named in the message; options that depend on the
model (``--n-targets``, ``--top``, ``--targets``) are checked against it once it is loaded (digits-cnn: 10 classes).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.cli.helpers import run_cli

DIGITS = ["--model", "digits-cnn", "--data", "digits:test", "--limit", "4"]
DETECT = [
    "detect",
    "--model",
    "digits-cnn",
    "--data-train",
    "digits:train",
    "--data",
    "digits:test",
    "--limit",
    "4",
    "--limit-train",
    "8",
]
TRANSFER = ["transfer", "--from", "digits-cnn", "--data", "digits:test", "--limit", "4"]
TRAIN = ["train", "--limit", "40", "--epochs", "1"]
SIXTY_FIVE = ",".join(f"0.{i:03d}" for i in range(1, 66))


def _attack(*extra: str) -> list[str]:
    return ["attack", *DIGITS, "--attack", "pgd", *extra]


def _apgdt(*extra: str) -> list[str]:
    return ["attack", *DIGITS, "--attack", "apgd-t", *extra]


def _eval(*extra: str) -> list[str]:
    return ["eval", *DIGITS, "--eps", "0.1", *extra]


def _protos(*extra: str) -> list[str]:
    return ["prototypes", "--model", "digits-cnn", "--steps", "2", *extra]


def _study(*extra: str) -> list[str]:
    return ["study", "prune", *DIGITS, *extra]


def _layers(*extra: str) -> list[str]:
    return ["analyze", "layers", *DIGITS, *extra]


def _units(*extra: str) -> list[str]:
    return ["analyze", "units", *DIGITS, "--k", "2", *extra]


def _linearity(*extra: str) -> list[str]:
    return ["analyze", "linearity", "--data", "digits:test", "--limit", "4", *extra]


def _compare(*extra: str) -> list[str]:
    return ["compare", *DIGITS, "--attacks", "fmn", "--norm", "l2", *extra]


#: (argv, what the one-line error must say)
CASES: list[tuple[list[str], str]] = [
    # attack: the attack options, shared by attack, eval, transfer, study, analyze layers and detect
    (_attack("--steps", "0"), ">= 1"),
    (_attack("--steps", "-1"), ">= 1"),
    (_attack("--steps", "1.5"), "not an integer"),
    (_attack("--steps", str(10**9)), "at most 100000"),
    (_attack("--steps", str(10**12)), "at most 100000"),
    (_attack("--steps", "9" * 5000), "at most 100000"),
    (_attack("--restarts", "0"), ">= 1"),
    (_attack("--restarts", str(10**6)), "at most 1000"),
    (_attack("--eps", "-0.1"), "positive"),
    (_attack("--eps", "0"), "positive"),
    (_attack("--eps", "nan"), "finite"),
    (_attack("--eps", "inf"), "finite"),
    (_attack("--eps=-inf"), "finite"),
    (_attack("--eps", "-inf"), "expected one argument"),  # argparse reads -inf as an option
    (_attack("--eps", "1/0"), "not a number"),
    (_attack("--eps", "1e400"), "finite"),
    (_attack("--eps", "2"), "above 1"),
    (_attack("--eps", ","), "empty eps"),
    (_attack("--eps", "0.1,0.1"), "twice"),
    (_attack("--eps", "0.1,-0.1"), "positive"),
    (_attack("--eps", SIXTY_FIVE), "at most 64"),
    (_attack("--norm", "l2", "--eps", "1e9"), "larger than any l2 distance"),  # 1x8x8 images: at most 8 apart
    (_attack("--norm", "l1", "--eps", "65"), "larger than any l1 distance"),
    (_attack("--alpha", "nan"), "finite"),
    (_attack("--alpha", "-1"), "alpha must be positive"),
    (_attack("--alpha", "1e300"), "at most 1e+30"),
    (_attack("--norm", "l7"), "norm must be one of"),
    (_attack("--loss", "banana"), "unknown loss"),
    (["attack", *DIGITS, "--attack", "cw", "--c", "1e300"], "at most 1e+30"),
    (["attack", *DIGITS, "--attack", "cw", "--c", "-1"], "c must be positive"),
    (["attack", *DIGITS, "--attack", "cw", "--binary-search-steps", str(10**6)], "at most 100"),
    (["attack", *DIGITS, "--attack", "noise", "--tries", "0"], ">= 1"),
    (["attack", *DIGITS, "--attack", "noise", "--tries", str(10**9)], "at most 100000"),
    (["attack", *DIGITS, "--attack", "square", "--max-queries", str(10**12)], "at most 1000000"),
    (["attack", *DIGITS, "--attack", "square", "--p-init", "2"], "p_init"),
    (["attack", *DIGITS, "--attack", "nes", "--samples", str(10**9)], "at most 10000"),
    (["attack", *DIGITS, "--attack", "nes", "--sigma", "-1"], "sigma"),
    (_apgdt("--n-targets", "0"), ">= 1"),
    (_apgdt("--n-targets", "10"), "at most 9"),  # 10 classes: 9 wrong ones
    (_apgdt("--n-targets", "99"), "at most 9"),
    (_attack("--n-targets", "3"), "takes no n-targets"),
    (_attack("--seed", "-1"), ">= 0"),
    (_attack("--seed", "abc"), "not an integer"),
    (_attack("--seed", str(2**32)), "at most 4294967295"),
    (_attack("--seed", str(2**63)), "at most 4294967295"),
    (_attack("--seed", str(2**64)), "at most 4294967295"),
    (_attack("--target", "99"), "out of range"),
    (_attack("--target", "-1"), "out of range"),
    (_attack("--target", "²"), "out of range"),
    (_attack("--target", "9" * 5000), "out of range"),
    (_attack("--limit", "-1"), ">= 1"),
    (_attack("--limit", "0"), ">= 1"),
    (_attack("--limit", str(10**12)), "at most 100000000"),
    (_attack("--batch-size", "0"), ">= 1"),
    (_attack("--batch-size", "-5"), ">= 1"),
    (_attack("--batch-size", str(10**12)), "at most 100000"),
    (_attack("--pngs", "-1"), ">= 0"),
    (_attack("--input-size", "0"), ">= 1"),
    (_attack("--input-size", str(10**6)), "at most 4096"),
    (_attack("--channels", "0"), ">= 1"),
    (_attack("--std", "0"), "positive"),
    (_attack("--std", "-1"), "positive"),
    (_attack("--std", "0.2,nan"), "finite"),
    (_attack("--mean", "nan,0,0"), "finite"),
    (_attack("--device", "banana"), "banana"),
    # eval
    (_eval("--batch-size", "0"), ">= 1"),
    (_eval("--batch-size", str(10**9)), "at most 100000"),
    (_eval("--batch-size", "banana"), "not an integer"),
    (_eval("--seed", str(2**64)), "at most 4294967295"),
    (_eval("--attack", "apgd-t", "--n-targets", "99"), "at most 9"),
    (_eval("--attack", "pgd", "--steps", str(10**9)), "at most 100000"),
    (_eval("--preset", "banana"), "invalid choice"),
    (["eval", *DIGITS, "--eps", "0.1,0.2"], "one --eps"),
    (_eval("--attack", ","), "names no attack"),
    (_eval("--attack", "pgd,,pgd"), "twice"),
    # classify
    (["classify", "digits:test", "--model", "digits-cnn", "--top", "0"], ">= 1"),
    (["classify", "digits:test", "--model", "digits-cnn", "--top", str(10**12)], "at most 100000000"),
    (["classify", "digits:test", "--model", "digits-cnn", "--batch-size", str(10**12)], "at most 100000"),
    (["classify", "digits:test", "--model", "digits-cnn", "--limit", "0"], ">= 1"),
    # transfer
    ([*TRANSFER, "--noise-tries", "0"], ">= 1"),
    ([*TRANSFER, "--noise-tries", str(10**9)], "at most 10000"),
    ([*TRANSFER, "--attack", "apgd-t", "--n-targets", "99"], "at most 9"),
    ([*TRANSFER, "--steps", str(10**9)], "at most 100000"),
    ([*TRANSFER, "--batch-size", "0"], ">= 1"),
    # prototypes
    (_protos("--steps", str(10**9)), "at most 100000"),
    (_protos("--steps", "0"), ">= 1"),
    (_protos("--tol", "-1"), ">= 0"),
    (_protos("--momentum", "-1"), ">= 0"),
    (_protos("--tv", "-1"), ">= 0"),
    (_protos("--l2", "-1"), ">= 0"),
    (_protos("--blur-prior", "-1"), ">= 0"),
    (_protos("--jitter", "-1"), ">= 0"),
    (_protos("--jitter", str(10**6)), "at most 4096"),
    (_protos("--rotate", str(10**6)), "[0, 180]"),
    (_protos("--rotate", "-1"), "[0, 180]"),
    (_protos("--transforms-per-step", str(10**9)), "at most 256"),
    (_protos("--blur", "-1"), ">= 0"),
    (_protos("--blur", str(10**6)), "at most 4096"),
    (_protos("--seed", "-1"), ">= 0"),
    (_protos("--seed", str(2**64)), "at most 4294967295"),
    (_protos("--batch-size", str(10**9)), "at most 100000"),
    (_protos("--targets", "0-1000000000"), "classes 0..9"),
    (_protos("--targets", "0-" + "9" * 5000), "classes 0..9"),
    (_protos("--targets", "0-²"), "classes 0..9"),
    (_protos("--targets", "5-2"), "empty"),
    (_protos("--targets", "99"), "classes 0..9"),
    (_protos("--strip-classes", "99"), "classes 0..9"),
    (_protos("--snapshots", "a,b"), "--snapshots"),
    (_protos("--eps", "-1"), "eps"),
    (["prototypes", "quiz", "nowhere", "--quiz-seed", str(2**64)], "at most 4294967295"),
    (["prototypes", "quiz", "nowhere", "--items", "0"], ">= 1"),
    # study prune
    (_study("--calibration", "0"), ">= 1"),
    (_study("--settings", "e=inf"), "finite ones"),
    (_study("--settings", "e=1e400"), "finite ones"),
    (_study("--settings", "garbage"), "--settings"),
    (_study("--settings", "quant=1000"), "2..16"),
    (_study("--defense", "banana"), "unknown defense"),
    (_study("--batch-size", "0"), ">= 1"),
    (_study("--steps", str(10**9)), "at most 100000"),
    # analyze
    (_layers("--clamp", "-1"), "[50, 100]"),
    (_layers("--clamp", "200"), "[50, 100]"),
    (_layers("--clamp", "nan"), "finite"),
    (_layers("--steps", str(10**9)), "at most 100000"),
    (_layers("--batch-size", "0"), ">= 1"),
    (_units("--top-units", str(10**9)), "at most 1000"),
    (_units("--directions", "0"), ">= 1"),
    (_units("--k", str(10**9)), "at most 1000"),
    (_units("--seed", str(2**64)), "at most 4294967295"),
    (_units("--units", "-1"), ">= 0"),
    (_units("--units", "1,1"), "distinct"),
    (_units("--units", "100000"), "out of range"),
    (_linearity("--eps", "5"), "[0, 1]"),
    (_linearity("--eps", "0.1,-1"), "[0, 1]"),
    (_linearity("--eps", "0," + SIXTY_FIVE), "at most 64"),
    (_linearity("--seed", "-1"), ">= 0"),
    (_linearity("--batch-size", str(10**9)), "at most 100000"),
    # detect
    ([*DETECT, "--hidden", "-1"], ">= 0"),
    ([*DETECT, "--hidden", str(10**9)], "at most 65536"),
    ([*DETECT, "--epochs", str(10**9)], "at most 10000"),
    ([*DETECT, "--calibration", "2"], "(0, 1)"),
    ([*DETECT, "--fpr", "0"], "(0, 1)"),
    ([*DETECT, "--adaptive-steps", str(10**9)], "at most 100000"),
    ([*DETECT, "--held-out", "pgd@nan"], "finite"),
    ([*DETECT, "--held-out", ",".join(["pgd@0.1"] * 40)], "at most 32"),
    ([*DETECT, "--limit-train", "0"], ">= 1"),
    # train
    ([*TRAIN, "--epochs", "0"], ">= 1"),
    ([*TRAIN, "--epochs", str(10**9)], "at most 10000"),
    ([*TRAIN, "--batch-size", str(10**9)], "at most 100000"),
    ([*TRAIN, "--seed", "-1"], ">= 0"),
    ([*TRAIN, "--seed", str(2**64)], "at most 4294967295"),
    ([*TRAIN, "--lr", "1e300"], "at most 1e+30"),
    ([*TRAIN, "--lr", "nan"], "finite"),
    ([*TRAIN, "--lr", "0"], "positive"),
    ([*TRAIN, "--adversarial", "pgd", "--adv-steps", str(10**9)], "at most 100000"),
    ([*TRAIN, "--adversarial", "pgd", "--eps", "5"], "(0, 1]"),
    ([*TRAIN, "--robust-limit", "0"], ">= 1"),
    # compare, selftest, demo
    (_compare("--budget", "0"), ">= 1"),
    (_compare("--budget", str(10**9)), "at most 100000"),
    (_compare("--limit", "0"), ">= 1"),
    (["selftest", "--seed", str(2**64)], "at most 4294967295"),
    (["selftest", "--seed", "-1"], ">= 0"),
    (["selftest", "--n", "0"], ">= 1"),
    (["selftest", "--n", str(10**9)], "at most 10000"),
    (["selftest", "--attacks", "banana"], "unknown self-test attack"),
    (["demo", "--threads", "0"], ">= 1"),
    (["demo", "--threads", str(10**6)], "at most"),
]

#: commands that take no --out (nothing to point into tmp_path)
NO_OUT = {"selftest", "data", "models"}


def _id(case: tuple[list[str], str]) -> str:
    """The command and its last option with its value, e.g. "attack --steps 0"."""
    argv = case[0]
    head = " ".join(argv[:2]) if argv[0] in ("study", "analyze") or argv[:2] == ["prototypes", "quiz"] else argv[0]
    last = max(i for i, a in enumerate(argv) if a.startswith("--"))
    return f"{head} {' '.join(argv[last : last + 2])[:30]}"


@pytest.mark.parametrize(("argv", "says"), CASES, ids=[_id(c) for c in CASES])
def test_refused_in_one_line_before_anything_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, argv: list[str], says: str
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    takes_out = argv[0] not in NO_OUT and argv[:2] != ["prototypes", "quiz"]
    rc, stdout, err = run_cli([*argv, "--out", str(out)] if takes_out else argv)
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("advlab") and "error: " in lines[0], err
    assert says in lines[0], err
    assert "Traceback" not in err + stdout
    assert len(lines[0]) < 1000
    assert list(tmp_path.iterdir()) == []


def test_bounds_are_named_in_the_help() -> None:
    rc, out, _ = run_cli(["attack", "--help"])
    assert rc == 0
    flat = " ".join(out.split())
    assert "iterations (1..100000)" in flat
    assert "0 <= seed < 2**32" in flat
    assert "at most the model's classes - 1" in flat


def test_the_largest_accepted_seed_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["attack", *DIGITS, "--attack", "pgd", "--steps", "1", "--seed", str(2**32 - 1), "--pngs", "0", "--quiet"]
    rc, _, err = run_cli([*argv, "--out", str(tmp_path / "a")])
    assert rc == 0, err


THREE_CLASSES = """
import torch
from torch import nn


def net():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    m.input_size, m.in_channels = 8, 1
    return m
"""


def test_classify_default_top_fits_a_small_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--top (default 5) is cut to the classes of a model with fewer; up to the class count it is taken as given."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "three.py").write_text(THREE_CLASSES)
    x, y = np.full((2, 1, 8, 8), 0.5, dtype=np.float32), np.array([0, 2])  # labels the 3-class model has
    np.savez(tmp_path / "three.npz", x=x, y=y)
    rc, out, err = run_cli(
        ["classify", f"tensors:{tmp_path / 'three.npz'}", "--model", f"{tmp_path / 'three.py'}:net", "--json"]
    )
    assert rc == 0, err
    assert len(json.loads(out)["predictions"][0]["top"]) == 3
    rc, out, err = run_cli(
        ["classify", "digits:test", "--model", "digits-cnn", "--limit", "2", "--top", "10", "--json"]
    )
    assert rc == 0, err
    assert len(json.loads(out)["predictions"][0]["top"]) == 10
