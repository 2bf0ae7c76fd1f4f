"""Progress inside a batch (:mod:`advlab.cli.heartbeat`): a slow loop of model calls shows lines off a terminal."""

from __future__ import annotations

import io
import re
import time

import pytest
import torch

from advlab.cli import ticker
from advlab.cli.heartbeat import heartbeat

LINE = re.compile(r"^slow: (\d+) model calls?, \d+ s$")


def _slow_calls(model: torch.nn.Module, n: int, pause: float) -> None:
    for _ in range(n):
        model(torch.zeros(2, 3))
        time.sleep(pause)


def test_a_slow_loop_prints_lines_counting_the_model_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    model, out = torch.nn.Linear(3, 2), io.StringIO()
    monkeypatch.setattr(ticker, "BOARD", ticker.Board())  # no loop of another test is running
    with heartbeat(model, "slow", every=0.05, stream=out) as calls:
        _slow_calls(model, 8, 0.04)
    lines = out.getvalue().splitlines()
    assert len(lines) >= 2, lines
    counts = [int(m.group(1)) for m in map(LINE.match, lines) if m]
    assert len(counts) == len(lines), lines  # every line is a heartbeat line
    assert counts == sorted(counts) and 0 < counts[-1] <= 8
    assert calls.n == 8
    assert not model._forward_pre_hooks  # the hook is removed
    model(torch.zeros(1, 3))
    assert calls.n == 8


def test_quiet_a_short_block_and_other_ranks_print_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    model = torch.nn.Linear(3, 2)
    for kw in ({"quiet": True, "every": 0.01}, {"every": 60.0}):
        out = io.StringIO()
        with heartbeat(model, "slow", stream=out, **kw) as calls:  # type: ignore[arg-type]
            _slow_calls(model, 3, 0.02)
        assert out.getvalue() == "" and calls.n == 3
    monkeypatch.setenv("RANK", "1")
    out = io.StringIO()
    with heartbeat(model, "slow", every=0.01, stream=out):
        _slow_calls(model, 3, 0.02)
    assert out.getvalue() == ""


def test_the_line_names_the_batch_the_loop_is_on_and_waits_for_the_loops_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model, out = torch.nn.Linear(3, 2), io.StringIO()
    monkeypatch.setattr(ticker, "BOARD", ticker.Board())
    with heartbeat(model, "attack", every=0.05, stream=out):
        for _ in ticker.lines(range(2), desc="attack", unit="batch"):
            _slow_calls(model, 4, 0.03)
    lines = out.getvalue().splitlines()
    assert lines and all(re.match(r"attack: batch [12]/2, \d+ model calls?, \d+ s$", ln) for ln in lines), lines
    assert ticker.BOARD.where == ""
    # a line written by anyone moves the next heartbeat line back by `every`
    out = io.StringIO()
    with heartbeat(model, "slow", every=0.5, stream=out):
        for _ in range(30):
            ticker.write("another line", io.StringIO())
            _slow_calls(model, 1, 0.03)
    assert out.getvalue() == ""


def test_a_terminal_gets_a_counter_not_lines() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    model, out = torch.nn.Linear(3, 2), Terminal()
    with heartbeat(model, "slow", every=0.01, stream=out) as calls:
        _slow_calls(model, 3, 0.02)
    assert calls.n == 3
    assert "model calls" in out.getvalue() and not LINE.search(out.getvalue())


def test_a_defended_copy_made_inside_the_block_is_counted() -> None:
    import copy

    model = torch.nn.Linear(3, 2)
    with heartbeat(model, "study", quiet=True) as calls:
        copy.deepcopy(model)(torch.zeros(1, 3))
        model(torch.zeros(1, 3))
    assert calls.n == 2


def test_the_first_line_comes_early_then_one_per_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    """A newcomer sees the first line ``first`` seconds into the work, not a whole interval later: with first 0.1 s
    and an interval of 60 s, a 0.6 s loop prints exactly one line."""
    model, out = torch.nn.Linear(3, 2), io.StringIO()
    monkeypatch.setattr(ticker, "BOARD", ticker.Board())
    with heartbeat(model, "attack", every=60.0, first=0.1, stream=out):
        _slow_calls(model, 6, 0.1)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1 and re.match(r"attack: \d+ model calls?, 0 s$", lines[0]), lines
