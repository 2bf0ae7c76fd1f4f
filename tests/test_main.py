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
