"""One thread policy for every command (:mod:`advlab.cli.threads`): the cores the load leaves free, or --threads."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch

from advlab.cli import info
from advlab.cli.threads import free_threads, torch_threads
from tests.cli.helpers import run_cli


@pytest.mark.parametrize(
    "load, cpus, most, local, want",
    [(12.0, 2, 2, "", 1), (0.1, 2, 2, "", 2), (1.2, 4, 4, "", 3), (0.0, 16, 4, "", 4), (99.0, 1, 1, "", 1)]
    + [(0.0, 16, 16, "4", 4), (6.0, 16, 16, "2", 5), (0.0, 2, 2, "8", 1)],
)
def test_the_free_cores_leave_a_busy_machine_alone(
    monkeypatch: pytest.MonkeyPatch, load: float, cpus: int, most: int, local: str, want: int
) -> None:
    """On a 2-core machine at load 12 the demo took 10:30 at 2 threads and 1:49 at 1: a command takes the free cores,
    shared by the processes torchrun started on the node."""
    monkeypatch.setattr(os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(os, "cpu_count", lambda: cpus)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local)
    assert free_threads(most) == want


def test_no_load_average_keeps_torchs_number(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_load() -> tuple[float, float, float]:
        raise OSError("no load average")

    monkeypatch.setattr(os, "getloadavg", no_load)
    assert free_threads(3) == 3


def test_torch_threads_are_restored() -> None:
    before = torch.get_num_threads()
    with torch_threads(3) as n:
        assert n == 3 == torch.get_num_threads()
    assert torch.get_num_threads() == before


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """`advlab models` replaced by a spy recording (torch threads, whether args has "threads") as it runs."""
    seen: list[tuple[int, bool]] = []

    def models(args: argparse.Namespace) -> int:
        seen.append((torch.get_num_threads(), hasattr(args, "threads")))
        return 0

    monkeypatch.setattr(info, "models", models)
    return seen


def test_every_command_runs_at_threads_n_and_the_run_never_sees_it(monkeypatch: pytest.MonkeyPatch) -> None:
    seen, before = _spy(monkeypatch), torch.get_num_threads()
    assert run_cli(["models", "--threads", "3"])[0] == 0
    assert run_cli(["--threads", "2", "models"])[0] == 0
    assert seen == [(3, False), (2, False)]  # not in args: no run name or run_settings can pick it up
    assert torch.get_num_threads() == before


def test_without_threads_a_command_takes_the_free_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = _spy(monkeypatch)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.0, 1.0, 1.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    with torch_threads(4):  # torch's own number is the most it takes
        assert run_cli(["models"])[0] == 0
    assert seen == [(2, False)]


@pytest.mark.parametrize("value, message", [("0", "must be >= 1"), (str(10**6), "must be at most")])
def test_a_bad_threads_is_one_line(value: str, message: str) -> None:
    rc, out, err = run_cli(["attack", "--threads", value])
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err


def test_threads_does_not_change_the_run_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["attack", "-m", "digits-cnn", "-d", "digits:test", "-a", "pgd", "--limit", "4", "--steps", "1", "-q"]
    assert run_cli([*argv, "--threads", "1"])[0] == 0
    first = sorted(p.name for p in (tmp_path / "runs").iterdir())
    rc, out, err = run_cli([*argv, "--resume"])
    assert rc == 0 and "complete already" in out, err  # the same run: nothing recomputed
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == first
