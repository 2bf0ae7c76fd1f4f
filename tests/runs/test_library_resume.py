"""Resume from Python (:func:`advlab.runs.resumable`): ``advlab.evaluate`` and ``advlab.prototypes.generate``,
stopped by Ctrl-C right after their first batch is saved and run again, equal one uninterrupted call, and the
second call computes only the batches that were not saved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from advlab import evaluate, prototypes, runs, zoo
from advlab.attacks import PGD
from advlab.evaluation import EvalConfig
from advlab.runs import shards


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return zoo.load("digits-cnn")


def _stop_after_first_save(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next unit saved is the last: Ctrl-C right after it is on disk (as ``tests/crash_after.py`` does)."""
    save = shards.Shards.save

    def save_then_stop(self: shards.Shards, *a: Any, **kw: Any) -> None:
        save(self, *a, **kw)
        monkeypatch.setattr(shards.Shards, "save", save)
        raise KeyboardInterrupt

    monkeypatch.setattr(shards.Shards, "save", save_then_stop)


def _counting(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Count the calls of ``module.name`` from now on."""
    real, calls = getattr(module, name), []

    def counted(*a: Any, **kw: Any) -> Any:
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_an_interrupted_evaluate_resumes_to_the_report_of_one_call(
    model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from advlab.evaluation import cascade

    cfg = EvalConfig(attacks=(PGD(eps=0.1, steps=3),), eps=0.1, batch_size=16, limit=40)
    whole = evaluate(model, "digits:test", cfg)
    out, settings = tmp_path / "ev", {"eps": 0.1, "steps": 3, "limit": 40}
    _stop_after_first_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt), runs.resumable(out, runs.units.EVALUATE, config=settings) as work:
        evaluate(model, "digits:test", cfg, work=work)
    assert runs.attach(out).batch_indices() == [0]
    batches = _counting(monkeypatch, cascade, "run_batch")
    with runs.resumable(out, runs.units.EVALUATE, config=settings) as work:
        resumed = evaluate(model, "digits:test", cfg, work=work)
    assert len(batches) == 2  # batches 1 and 2 of 3; batch 0 came from its file
    assert resumed.n == whole.n == 40
    assert (resumed.clean_accuracy, resumed.robust_accuracy) == (whole.clean_accuracy, whole.robust_accuracy)
    a, b = resumed.samples.tensors(), whole.samples.tensors()
    a["attack_stats"], b["attack_stats"] = a["attack_stats"][:, :-1], b["attack_stats"][:, :-1]  # but the seconds
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    untimed = lambda rows: [{k: v for k, v in r.items() if "seconds" not in k} for r in rows]  # noqa: E731
    assert resumed.warnings == whole.warnings and untimed(resumed.per_attack) == untimed(whole.per_attack)


def test_an_interrupted_generate_resumes_to_the_prototypes_of_one_call(
    model: torch.nn.Module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = prototypes.Config(steps=5, seed=3)
    kw: dict[str, Any] = {"start": "digits:test", "targets": "0-3", "config": cfg, "batch_size": 4, "limit": 3}
    whole = prototypes.generate(model, **kw)
    out, settings = tmp_path / "pr", {"config": repr(cfg), "targets": "0-3", "limit": 3, "batch_size": 4}
    _stop_after_first_save(monkeypatch)
    with pytest.raises(KeyboardInterrupt), runs.resumable(out, runs.units.PROTOTYPES, config=settings) as work:
        prototypes.generate(model, work=work, **kw)
    assert runs.attach(out).batch_indices() == [0]
    evolved = _counting(monkeypatch, prototypes.generator, "evolve")
    with runs.resumable(out, runs.units.PROTOTYPES, config=settings) as work:
        resumed = prototypes.generate(model, work=work, **kw)
    assert len(evolved) == 2  # batches 1 and 2 of 3 (4 pairs each: one start and its 4 targets)
    a, b = resumed.evolution.tensors(), whole.evolution.tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary() == whole.summary()
