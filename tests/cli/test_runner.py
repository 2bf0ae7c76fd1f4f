"""The command runner (:mod:`advlab.cli.runner`) on a toy command: unit i is the tensor of its index squared,
the result is their concatenation. Units are saved as they finish, a resumed run recomputes only the missing
ones, the merge of saved units equals a single pass, and a failing run leaves no directory."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from advlab.cli.runner import Job, UnitSpec, batch_size, run_job, saved_batch_size
from advlab.distributed import Dist
from advlab.errors import AdvlabError
from advlab.runs import attach
from advlab.work import Work

N = 5


class Toy:
    """A toy command: counts the units it computes; raises Ctrl-C (or an error) at the ``stop``-th one."""

    def __init__(self, stop: int | None = None, error: Exception | None = None) -> None:
        self.computed: list[int] = []
        self.stop, self.error = stop, error
        self.saved_before: list[list[str]] = []
        self.written: list[tuple[torch.Tensor, float]] = []

    def compute(self, work: Work[torch.Tensor], out: Path) -> torch.Tensor:
        done = work.finished()
        for i in work.todo(range(N)):
            if self.stop is not None and len(self.computed) == self.stop:
                raise self.error or KeyboardInterrupt
            # every unit finished so far in this call is on disk already, before the next one starts
            self.saved_before.append(sorted(p.name for p in Path(f"{out}.partial").glob("batch_*.json")))
            self.computed.append(i)
            done[i] = torch.tensor([i * i, -i])
            work.record(i, done[i])
        return torch.cat([done[i] for i in sorted(done)])

    def job(self, out: Path) -> Job[torch.Tensor, torch.Tensor, torch.Tensor]:
        def write(run: Any, result: torch.Tensor, seconds: float) -> torch.Tensor:
            run.save_json("metrics.json", {"sum": int(result.sum())})
            self.written.append((result, seconds))
            return result

        def report(run: Any, shown: torch.Tensor) -> None:
            assert not list(run.path.glob("batch_*"))  # the unit files are gone before the report is written
            run.save_text("report.txt", str(shown.tolist()))

        units = UnitSpec(N, "a toy unit", lambda t: ({"t": t}, {"unit": int(-t[1])}), lambda t, j: t["t"], bar="toy")

        def merge(done: dict[int, torch.Tensor], plan: Any) -> torch.Tensor:
            return torch.cat([done[i] for i in sorted(done)])

        compute = lambda work: self.compute(work, out)  # noqa: E731
        return Job(out, {"command": "toy", "n": N}, units, compute, write, report, merge=merge)


def _args(**kw: Any) -> argparse.Namespace:
    return argparse.Namespace(**{"force": False, "resume": False, "quiet": True, **kw})


EXPECTED = torch.tensor([0, 0, 1, -1, 4, -2, 9, -3, 16, -4])


def test_a_single_pass_saves_each_unit_as_it_finishes_and_writes_the_result(tmp_path: Path) -> None:
    toy, out = Toy(), tmp_path / "toy"
    shown = run_job(toy.job(out), _args(), Dist())
    assert shown is not None and torch.equal(shown, EXPECTED) and toy.computed == list(range(N))
    assert toy.saved_before == [[f"batch_{i:05d}.json" for i in range(k)] for k in range(N)]
    assert json.loads((out / "metrics.json").read_text()) == {"sum": int(EXPECTED.sum())}
    assert (out / "report.txt").read_text() == str(EXPECTED.tolist())
    assert not list(out.glob("batch_*")) and not (tmp_path / "toy.partial").exists()
    assert toy.written[0][1] >= 0  # the summed seconds of the units


def test_resume_recomputes_only_the_missing_units_and_equals_a_single_pass(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    with pytest.raises(KeyboardInterrupt):
        run_job(Toy(stop=2).job(out), _args(), Dist())
    partial = attach(out)
    assert partial.batch_indices() == [0, 1] and not out.exists()
    assert (
        partial.load_json("batch_00001.json")["unit"] == 1
        and partial.load_json("batch_00001.json")["runner_seconds"] >= 0
    )
    toy = Toy()
    shown = run_job(toy.job(out), _args(resume=True), Dist())
    assert toy.computed == [2, 3, 4]  # units 0 and 1 come from their files
    assert shown is not None and torch.equal(shown, EXPECTED)
    shards = json.loads((out / "shards.json").read_text())
    assert (
        shards["reused"] == [0, 1] and shards["computed_by_rank"] == {"0": [2, 3, 4]} and shards["unit"] == "a toy unit"
    )


def test_a_run_whose_units_are_all_saved_is_merged_without_computing(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    failing = Toy()
    failing_job = failing.job(out)

    def write_fails(run: Any, result: torch.Tensor, seconds: float) -> torch.Tensor:
        raise KeyboardInterrupt  # every unit is saved; the run stops while writing

    with pytest.raises(KeyboardInterrupt):
        run_job(
            Job(
                failing_job.out,
                failing_job.config,
                failing_job.units,
                failing_job.compute,
                write_fails,
                failing_job.report,
            ),
            _args(),
            Dist(),
        )
    assert attach(out).batch_indices() == list(range(N))
    toy = Toy()
    shown = run_job(toy.job(out), _args(resume=True), Dist())
    assert toy.computed == [] and shown is not None and torch.equal(shown, EXPECTED)
    assert run_job(Toy().job(out), _args(resume=True), Dist()) is None  # complete already: nothing to do
    other = Toy().job(out)  # ... but not with other settings: the finished run is not the one asked for
    other = Job(other.out, {**other.config, "n": 7}, other.units, other.compute, other.write, other.report)
    with pytest.raises(AdvlabError, match=r"other settings \(n\)"):
        run_job(other, _args(resume=True), Dist())


def test_an_error_leaves_no_directory_and_other_settings_are_refused(tmp_path: Path) -> None:
    out = tmp_path / "toy"
    with pytest.raises(AdvlabError, match="bad unit"):
        run_job(Toy(stop=0, error=AdvlabError("bad unit")).job(out), _args(), Dist())
    assert not out.exists() and not (tmp_path / "toy.partial").exists()
    with pytest.raises(KeyboardInterrupt):
        run_job(Toy(stop=1).job(out), _args(), Dist())
    other = Toy().job(out)
    other = Job(other.out, {**other.config, "n": 7}, other.units, other.compute, other.write, other.report)
    with pytest.raises(AdvlabError, match=r"other settings \(n\)"):
        run_job(other, _args(resume=True), Dist())


def test_batch_size_keeps_the_size_a_resumed_run_started_with(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert saved_batch_size(out) is None
    assert batch_size(None, out, False, Dist(), lambda: 64) == 64
    assert batch_size(32, out, True, Dist(), lambda: 64) == 32  # given: kept
    Path(f"{out}.partial").mkdir()
    Path(f"{out}.partial/config.json").write_text(json.dumps({"batch_size": 48}))
    assert batch_size(None, out, True, Dist(), lambda: 64) == 48
    assert batch_size(None, out, False, Dist(), lambda: 64) == 64  # not resuming: sized again


def test_a_failing_validate_hook_stops_the_run_before_its_directory_exists(tmp_path: Path) -> None:
    toy, out = Toy(), tmp_path / "toy"

    def refuse() -> None:
        raise AdvlabError("--snapshots must be steps in 0..5")

    with pytest.raises(AdvlabError, match="snapshots"):
        run_job(dataclasses.replace(toy.job(out), validate=refuse), _args(), Dist())
    assert toy.computed == [] and list(tmp_path.iterdir()) == []


def test_the_inputs_fingerprint_is_saved_and_a_changed_input_refuses_the_resume(tmp_path: Path) -> None:
    out, x = tmp_path / "toy", torch.arange(6.0)
    with pytest.raises(KeyboardInterrupt):
        run_job(dataclasses.replace(Toy(stop=2).job(out), inputs={"data": x}), _args(), Dist())
    saved = json.loads((tmp_path / "toy.partial" / "config.json").read_text())["fingerprint"]
    assert set(saved) == {"data"} and len(saved["data"]) == 16
    with pytest.raises(AdvlabError, match="the data of .* changed since it was started"):
        run_job(dataclasses.replace(Toy().job(out), inputs={"data": x + 1}), _args(resume=True), Dist())
    toy = Toy()
    assert torch.equal(
        run_job(dataclasses.replace(toy.job(out), inputs={"data": x.clone()}), _args(resume=True), Dist()), EXPECTED
    )
    assert toy.computed == [2, 3, 4]
