"""The run runner of :mod:`advlab.runs.job` and :func:`advlab.runs.resumable` on a toy loop: unit i is the tensor
(i * i, -i), the result their concatenation. A plan is decided once and reused on resume and merge; a merge reads
the saved units and never calls compute; a library loop resumes from a run directory and a finished one computes
nothing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from advlab import runs
from advlab.errors import AdvlabError
from advlab.runs import shards
from advlab.work import Work

N = 5
EXPECTED = torch.tensor([0, 0, 1, -1, 4, -2, 9, -3, 16, -4])
UNITS = runs.Units(N, "a toy unit", lambda t: ({"t": t}, {}), lambda t, _: t["t"], bar="toy")


class Toy:
    """A loop over N units that counts what it computes, stops with Ctrl-C at the ``stop``-th one, and decides a
    plan before its first unit when ``work.plan`` is None (counting how often)."""

    def __init__(self, stop: int | None = None) -> None:
        self.computed: list[int] = []
        self.plans_decided = 0
        self.plans_seen: list[Any] = []
        self.stop = stop

    def compute(self, work: Work[torch.Tensor]) -> torch.Tensor:
        if work.plan is None:
            self.plans_decided += 1
            work.record_plan({"scale": 1, "decided": self.plans_decided})
        self.plans_seen.append(dict(work.plan or {}))
        done = work.finished()
        for i in work.todo(range(N)):
            if self.stop is not None and len(self.computed) == self.stop:
                raise KeyboardInterrupt
            self.computed.append(i)
            done[i] = torch.tensor([i * i, -i]) * int((work.plan or {})["scale"])
            work.record(i, done[i])
        return torch.cat([done[i] for i in sorted(done)])

    def job(self, out: Path, **kw: Any) -> runs.Job[torch.Tensor, torch.Tensor, torch.Tensor]:
        return runs.Job(out, {"n": N}, UNITS, self.compute, **kw)


def _interrupted_after_every_unit(toy: Toy, out: Path) -> None:
    """Run ``toy`` to ``out`` and stop it with Ctrl-C once every unit is saved (before the results are written)."""

    def stop(run: Any, result: torch.Tensor, seconds: float) -> torch.Tensor:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        runs.run_job(toy.job(out, write=stop))
    assert runs.attach(out).batch_indices() == list(range(N))


def test_a_plan_decided_by_the_loop_is_saved_and_reused_on_resume(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    first = Toy(stop=2)
    with pytest.raises(KeyboardInterrupt):
        runs.run_job(first.job(out))
    assert json.loads((tmp_path / "toy.partial" / "plan.json").read_text()) == {"scale": 1, "decided": 1}
    again = Toy()
    again.plans_decided = 10  # a second decision would record decided=11
    assert torch.equal(runs.run_job(again.job(out), resume=True), EXPECTED)
    assert again.plans_decided == 10 and again.plans_seen == [{"scale": 1, "decided": 1}]
    assert again.computed == [2, 3, 4]
    assert json.loads((out / "plan.json").read_text()) == {"scale": 1, "decided": 1}


def test_a_job_plan_is_computed_once_and_handed_to_compute_and_merge(tmp_path: Path) -> None:
    out, calls, merged = tmp_path / "toy", [], []

    def plan() -> dict[str, Any]:
        calls.append(1)
        return {"scale": 2}

    def merge(done: dict[int, torch.Tensor], p: runs.job.Plan) -> torch.Tensor:
        merged.append(p)
        return torch.cat([done[i] for i in sorted(done)])

    toy = Toy()
    _interrupted_after_every_unit(toy, out)  # the loop decides its own plan here (scale 1)...
    runs.attach(out).file("plan.json").unlink()  # ...which is dropped: the job's plan decides the resumed run
    toy = Toy()
    assert torch.equal(runs.run_job(toy.job(out, plan=plan, merge=merge), resume=True), EXPECTED)
    assert calls == [1] and merged == [{"scale": 2}] and toy.computed == []  # merged, not computed
    with pytest.raises(KeyboardInterrupt):
        runs.run_job(Toy(stop=1).job(tmp_path / "b", plan=plan))
    toy = Toy()
    assert torch.equal(runs.run_job(toy.job(tmp_path / "b", plan=plan), resume=True), 2 * EXPECTED)
    assert calls == [1, 1] and toy.plans_seen == [{"scale": 2}]  # the plan of the first launch, not computed again


def test_merge_reads_the_saved_units_and_never_calls_compute(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    _interrupted_after_every_unit(Toy(), out)

    def compute(work: Work[torch.Tensor]) -> torch.Tensor:
        raise AssertionError("compute called to merge")

    job = runs.Job(
        out,
        {"n": N},
        UNITS,
        compute,
        merge=lambda done, _: runs.cat_columns({i: {"t": t} for i, t in done.items()})["t"],
    )
    assert torch.equal(runs.run_job(job, resume=True), EXPECTED)
    assert not list(out.glob("batch_*")) and (out / "shards.json").exists()


def test_a_library_loop_resumes_from_its_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, first = tmp_path / "toy", Toy(stop=3)
    with pytest.raises(KeyboardInterrupt), runs.resumable(out, UNITS, config={"n": N}) as work:
        first.compute(work)
    assert runs.attach(out).batch_indices() == [0, 1, 2]
    resumed = Toy()
    with runs.resumable(out, UNITS, config={"n": N}) as work:
        result = resumed.compute(work)
    assert torch.equal(result, EXPECTED) and resumed.computed == [3, 4] and resumed.plans_decided == 0
    assert not (tmp_path / "toy.partial").exists() and len(list(out.glob("batch_*.safetensors"))) == N
    finished = Toy()
    with runs.resumable(out, UNITS, config={"n": N}) as work:  # finished: every unit read, none computed
        assert torch.equal(finished.compute(work), EXPECTED) and finished.computed == []
    with pytest.raises(AdvlabError, match="other settings"), runs.resumable(out, UNITS, config={"n": 7}):
        pass
    more = dataclasses.replace(UNITS, count=None)
    with pytest.raises(AdvlabError, match="holds no unit 5"), runs.resumable(out, more, config={"n": N}) as work:
        list(work.todo(range(N + 1)))
    with runs.resumable(out, UNITS, config={"n": N}, force=True) as work:
        started_over = Toy()
        assert torch.equal(started_over.compute(work), EXPECTED) and started_over.computed == list(range(N))


def test_a_loop_of_unknown_length_resumes_and_records_its_units(tmp_path: Path) -> None:
    out, units = tmp_path / "toy", dataclasses.replace(UNITS, count=None)
    with pytest.raises(KeyboardInterrupt), runs.resumable(out, units) as work:
        Toy(stop=2).compute(work)
    toy = Toy()
    with runs.resumable(out, units) as work:
        assert torch.equal(toy.compute(work), EXPECTED)
    assert toy.computed == [2, 3, 4]
    recorded = json.loads((out / shards.SHARDS_FILE).read_text())
    assert recorded["units"] == N and recorded["reused"] == [0, 1] and recorded["computed_by_rank"] == {"0": [2, 3, 4]}
