"""``python -m advlab`` (advlab/__main__.py) is the ``advlab`` command: same help, same exit codes (a real process)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from advlab.cli import parser

COLUMNS = "100"  # argparse wraps the help to the terminal width: fix it on both sides


def python_m_advlab(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": COLUMNS, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    return subprocess.run(
        [sys.executable, "-m", "advlab", *argv], capture_output=True, text=True, cwd=cwd, env=env, timeout=120
    )


def test_help_exits_0_and_prints_the_parsers_usage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    proc = python_m_advlab("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert proc.stdout.startswith("usage: advlab ")
    assert "advlab attack --model digits-cnn" in proc.stdout  # the examples in the description
    monkeypatch.setenv("COLUMNS", COLUMNS)
    assert proc.stdout == parser().format_help()


def test_no_command_prints_the_help_and_exits_0(tmp_path: Path) -> None:
    proc = python_m_advlab(cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: advlab ") and "COMMAND" in proc.stdout


def test_a_bad_option_exits_2_with_one_line_and_a_suggestion(tmp_path: Path) -> None:
    proc = python_m_advlab("--versoin", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == "advlab: error: unrecognized arguments: --versoin; did you mean --version? (see --help)\n"


def _without_torch(*argv: str, cwd: Path) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``python -X importtime -m advlab ARGV``: the process, and its stderr without the import-time lines (which
    name every module the process imported)."""
    env = {**os.environ, "COLUMNS": COLUMNS}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "advlab", *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=120,
    )
    imported = [ln.rsplit("|", 1)[-1].strip() for ln in proc.stderr.splitlines() if ln.startswith("import time:")]
    assert "advlab.cli" in imported  # the listing is real
    assert not [m for m in imported if m == "torch" or m.startswith("torch.")], "torch was imported"
    return proc, [ln for ln in proc.stderr.splitlines() if not ln.startswith("import time:")]


@pytest.mark.parametrize("argv", [["--help"], [], ["--version"]])
def test_help_and_no_command_answer_without_importing_torch(tmp_path: Path, argv: list[str]) -> None:
    proc, err = _without_torch(*argv, cwd=tmp_path)
    assert proc.returncode == 0 and err == []
    assert proc.stdout.startswith("usage: advlab ") or proc.stdout.startswith("advlab ")


def test_a_mistyped_command_answers_without_importing_torch(tmp_path: Path) -> None:
    proc, err = _without_torch("atack", "--model", "digits-cnn", cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert err == ["advlab: error: argument COMMAND: invalid choice: 'atack'; did you mean 'attack'? (see --help)"]
