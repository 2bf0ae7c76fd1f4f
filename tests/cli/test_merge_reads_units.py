"""A command's merge (``Job.merge``, :mod:`advlab.runs.job`) reads the saved units and calls no model: a run
stopped once every unit was saved, resumed while any ``nn.Module`` call raises during the merge, writes the same
results as an uninterrupted run (prototypes, the study, attack)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from advlab.runs import job as runs_job
from advlab.runs import shards
from tests.cli.helpers import run_cli

COMMANDS = {
    "prototypes": [
        "prototypes",
        *("--model", "digits-cnn", "--start", "digits:test", "--limit", "2", "--targets", "0-3"),
        *("--steps", "4", "--batch-size", "4", "--json"),
    ],
    "study": [
        "study",
        "prune",
        *("--model", "digits-cnn", "--data", "digits:test", "--limit", "24", "--steps", "2"),
        *("--settings", "e=0.01,0.05", "--defense", "e", "--json"),
    ],
    "attack": [
        "attack",
        *("--model", "digits-cnn", "--data", "digits:test", "--limit", "24", "--attack", "pgd"),
        *("--eps", "0.1", "--steps", "3", "--batch-size", "8", "--json"),
    ],
}


def _stopped_before_writing(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next run stops with Ctrl-C once every unit is saved, before it writes its results."""
    finish = shards.Shards.finish

    def stop(self: shards.Shards, *a: Any, **kw: Any) -> None:
        monkeypatch.setattr(shards.Shards, "finish", finish)
        raise KeyboardInterrupt

    monkeypatch.setattr(shards.Shards, "finish", stop)


def _no_model_in_merge(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on every merge must be the job's own and call no ``nn.Module``; returns the merges seen."""
    merge_units, seen = runs_job.merge_units, []

    def refuse(self: torch.nn.Module, *a: Any, **kw: Any) -> Any:
        raise AssertionError(f"the merge called {type(self).__name__}")

    def checked(job: Any, sh: Any) -> Any:
        assert job.merge is not None, "no merge: compute would be called again"
        call = torch.nn.Module.__call__
        monkeypatch.setattr(torch.nn.Module, "__call__", refuse)
        try:
            return merge_units(job, sh)
        finally:
            monkeypatch.setattr(torch.nn.Module, "__call__", call)
            seen.append(sh.unit_name)

    monkeypatch.setattr(runs_job, "merge_units", checked)
    return seen


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_merge_reads_the_units_and_calls_no_model(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = COMMANDS[command]
    rc, fresh, err = run_cli([*args, "--out", str(tmp_path / "fresh")])
    assert rc == 0, err
    _stopped_before_writing(monkeypatch)
    out = tmp_path / "r"
    rc, _, err = run_cli([*args, "--out", str(out)])
    assert rc == 130, err
    saved = len(list((tmp_path / "r.partial").glob("batch_*.safetensors")))
    assert saved >= 2
    seen = _no_model_in_merge(monkeypatch)
    rc, merged, err = run_cli([*args, "--out", str(out), "--resume"])
    assert rc == 0, err
    assert len(seen) == 1
    strip = lambda x: x if not isinstance(x, dict) else {k: strip(v) for k, v in x.items() if "second" not in k}  # noqa: E731
    a, b = json.loads(merged), json.loads(fresh)
    if isinstance(a, list):
        a, b = [strip(r) for r in a], [strip(r) for r in b]
    assert strip(a) == strip(b)
