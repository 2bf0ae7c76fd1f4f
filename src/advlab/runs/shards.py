"""One run directory shared by the ranks of a distributed run (``torchrun``; see :mod:`advlab.distributed`).

Rank 0 opens the directory (:func:`advlab.runs.start`: ``force``, ``resume`` and the settings check as in a
single process) and tells the other ranks where it is, which units are saved already (resume), the run's plan
(``plan.json``, what it decided before its first unit), or the one-line error every rank then reports. Each rank
computes the units it owns that are not saved, saving each one (``batch_00007.safetensors`` + ``.json``) as it
ends, and writes a status file when its shard is done or failed; rank 0 waits for those, then reads every unit.
The other ranks print nothing.

A single process goes through the same code: it owns every unit.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from advlab import distributed
from advlab.distributed import Dist
from advlab.errors import AdvlabError
from advlab.runs.fingerprint import changed
from advlab.runs.rundir import Run, attach, start

T = TypeVar("T")

#: the status file each non-main rank leaves when its shard is done or failed
STATUS = "rank_{:05d}.status.json"
#: what a distributed or resumed run records about its units
SHARDS_FILE = "shards.json"
#: what a run decided before its first unit (:attr:`advlab.work.Work.plan`), reused on every resume and merge
PLAN_FILE = "plan.json"
#: the key of config.json that holds the content hashes of a run's inputs (:mod:`advlab.runs.fingerprint`)
FINGERPRINT = "fingerprint"
#: seconds between rank 0's looks at the status files
POLL = 0.2
#: seconds rank 0 waits for units that other ranks reported saved to appear (caches of network file systems)
VISIBLE = 120.0


@dataclass
class Shards:
    """This rank's view of the shared run: ``units`` in all (None: as many as the loop makes), those ``reused``
    from an earlier launch, the run's ``plan`` (None: not decided yet)."""

    dist: Dist
    run: Run
    units: int | None
    reused: list[int]
    unit_name: str = "unit"
    plan: dict[str, Any] | None = None
    saved_here: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._reused = set(self.reused)

    def computes(self, unit: int) -> bool:
        """Whether this rank computes ``unit`` (it owns it and it is not saved): the loops' ``Work.in_shard``."""
        return unit not in self._reused and self.dist.owns(unit)

    def todo(self) -> list[int] | None:
        """The units this rank computes; None when the number of units is not known in advance."""
        return None if self.units is None else [i for i in range(self.units) if self.computes(i)]

    def save(self, unit: int, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> None:
        """Save one finished unit."""
        self.run.save_batch(unit, tensors, info)
        self.saved_here.append(unit)

    def save_plan(self, plan: Mapping[str, Any]) -> None:
        """Rank 0 keeps the first plan decided (plan.json); a plan is decided once per run."""
        if self.dist.is_main() and self.plan is None:
            self.plan = dict(plan)
            self.run.save_json(PLAN_FILE, self.plan)  # not state worth keeping alone: an error before a unit drops it

    def saved(self, decode: Callable[[dict[str, torch.Tensor], dict[str, Any]], T]) -> dict[int, T]:
        """The units saved before this launch, decoded (a single process resumes with them)."""
        return {i: decode(t, j) for i, (t, j) in self.run.load_batch_map(self.reused).items()}

    def load_all(self, decode: Callable[[dict[str, torch.Tensor], dict[str, Any]], T]) -> dict[int, T]:
        """Every unit, decoded (rank 0's merge); a missing one is an error (every saved one, when the number of
        units is not known)."""
        states = self.run.load_batch_map(None if self.units is None else range(self.units))
        missing = [i for i in range(self.units or 0) if i not in states]
        if missing:
            raise AdvlabError(
                f"{len(missing)} of {self.units} units are missing from {self.run.path} (first: {missing[0]}); "
                "rerun with --resume"
            )
        return {i: decode(t, j) for i, (t, j) in states.items()}

    @contextmanager
    def working(self) -> Iterator[None]:
        """Around this rank's own units. A non-main rank then leaves its status file; rank 0 waits for every
        other rank's, and raises if one failed or none showed progress for ``$ADVLAB_DIST_TIMEOUT``."""
        if not self.dist.distributed:
            yield
            return
        if not self.dist.is_main():
            try:
                yield
            except KeyboardInterrupt:
                raise
            except BaseException as e:
                self._status({"ok": False, "error": str(e) or type(e).__name__})
                raise
            self._status({"ok": True, "units": self.saved_here})
            return
        yield
        self._wait()

    def _status(self, obj: dict[str, Any]) -> None:
        self.run.save_json(STATUS.format(self.dist.rank), {"rank": self.dist.rank, **obj})

    def _failed(self, pending: set[int]) -> None:
        """Drop from ``pending`` the ranks whose status file says they are done; raise for one that failed."""
        for r in sorted(pending):
            p = self.run.file(STATUS.format(r))
            if p.exists():
                status = json.loads(p.read_text())
                if not status.get("ok"):
                    raise AdvlabError(
                        f"rank {r} failed: {status.get('error')}; the units saved in {self.run.path} are kept: "
                        "rerun with --resume"
                    )
                pending.discard(r)

    def _wait(self) -> None:
        limit = distributed.timeout().total_seconds()
        last = time.monotonic()
        seen = len(self.run.batch_indices())
        pending = set(range(1, self.dist.world_size))
        while pending:
            self._failed(pending)
            if not pending:
                break
            now = len(self.run.batch_indices())
            if now != seen:
                seen, last = now, time.monotonic()
            elif time.monotonic() - last > limit:
                raise AdvlabError(
                    f"ranks {sorted(pending)} finished no unit for {limit / 60:g} minutes ({distributed.TIMEOUT_ENV}); "
                    "the saved units are kept: rerun with --resume"
                )
            time.sleep(POLL)
        # every unit is reported saved; on a shared file system across nodes, wait until this node sees them all
        deadline = time.monotonic() + VISIBLE
        while self.units and set(range(self.units)) - set(self.run.batch_indices()) and time.monotonic() < deadline:
            time.sleep(POLL)

    def finish(self, extra: Mapping[str, Any] | None = None) -> None:
        """Rank 0, before writing the results: drop the status files and record who computed what
        (``shards.json``, written when the run was distributed or resumed)."""
        for p in self.run.path.glob("rank_*.status.json"):
            p.unlink(missing_ok=True)
        if not self.dist.distributed and not self.reused:
            return
        w = self.dist.world_size
        every = range(self.units) if self.units is not None else self.run.batch_indices()
        computed = {str(r): [i for i in every if i not in self._reused and i % w == r] for r in range(w)}
        self.run.save_json(
            SHARDS_FILE,
            {
                "world_size": w,
                "units": self.units if self.units is not None else len(every),
                "unit": self.unit_name,
                "reused": self.reused,
                "computed_by_rank": computed,
                **(extra or {}),
            },
        )


@dataclass
class Opened:
    """What :func:`open_shards` yields: ``shards`` is None when the run at ``final`` is complete already."""

    shards: Shards | None
    final: Path
    plan: dict[str, Any] | None = None


def check_settings(run: Run, config: Mapping[str, Any]) -> None:
    """A resumed run must have been started with the same settings (its ``command`` line may differ)."""
    saved_path = run.path / "config.json"
    if not run.resumed or not saved_path.exists():
        return
    saved = json.loads(saved_path.read_text())
    diff = [k for k, v in config.items() if k != "command" and json.loads(json.dumps(v)) != saved.get(k)]
    if diff:
        raise AdvlabError(
            f"{str(run.final)!r} was started with other settings ({', '.join(diff)}); use --force to start over"
        )


def check_inputs(run: Run, now: Mapping[str, str] | None) -> None:
    """A resumed run's inputs must hash as they did when it started (the files behind its specs may have changed)."""
    saved = run.path / "config.json"
    if not run.resumed or not now or not saved.exists():
        return
    diff = changed(json.loads(saved.read_text()).get(FINGERPRINT), now)
    if diff:
        raise AdvlabError(
            f"the {' and '.join(diff)} of {run.final} changed since it was started (content hash in config.json "
            "differs): resuming would mix results of the old and the new; restore them or use --force to start over"
        )


def read_plan(run: Run) -> dict[str, Any] | None:
    """The plan a run saved (plan.json), or None."""
    p = run.file(PLAN_FILE)
    return dict(run.load_json(PLAN_FILE)) if p.is_file() else None


def _follow(dist: Dist, units: int | None, unit_name: str) -> Opened:
    """A non-main rank: what rank 0 found when it opened the run (an error is raised on every rank)."""
    msg = dist.share(None)
    if msg["error"] is not None:
        dist.barrier()  # every rank has the message before any exits (torchrun stops the rest when one does)
        raise AdvlabError(msg["error"])
    final = Path(msg["final"])
    if msg["complete"]:
        return Opened(None, final, msg["plan"])
    return Opened(Shards(dist, attach(final), units, list(msg["reused"]), unit_name, msg["plan"]), final, msg["plan"])


def _prepare(run: Run, config: Mapping[str, Any], units: int | None, dist: Dist) -> tuple[bool, list[int]]:
    """Rank 0, the run just opened: (whether it is complete already, the units saved earlier); checks a resumed
    run's settings and inputs and clears what a killed process left half done."""
    check_inputs(run, config.get(FINGERPRINT))  # (a complete run too: --resume with other settings is no answer)
    check_settings(run, {k: v for k, v in config.items() if k != FINGERPRINT})
    if run.resumed and run.path == run.final:
        return True, []
    reused = [i for i in run.batch_indices() if units is None or i < units]
    if run.resumed:  # writes a killed process left half done (atomic_write's temp files)
        for p in run.path.glob(".*.tmp"):
            p.unlink(missing_ok=True)
    if dist.distributed:
        run.checkpointed = True  # the directory holds other ranks' work: never removed on an error
        for p in run.path.glob("rank_*.status.json"):  # an earlier launch's
            p.unlink(missing_ok=True)
    return False, reused


@contextmanager
def open_shards(
    dist: Dist,
    out: str | Path,
    config: dict[str, Any],
    units: int | None,
    *,
    force: bool,
    resume: bool,
    unit_name: str = "unit",
) -> Iterator[Opened]:
    """Open the shared run (see the module docstring): a collective, every rank calls it with the same arguments.
    On rank 0 the run directory is :func:`advlab.runs.start`'s: it lands at ``out`` when the body ends."""
    if not dist.is_main():
        yield _follow(dist, units, unit_name)
        return
    with ExitStack() as stack:
        try:
            run = stack.enter_context(start(out, config, force=force, resume=resume))
            complete, reused = _prepare(run, config, units, dist)
            plan = read_plan(run)
        except AdvlabError as e:
            dist.share({"error": str(e)})
            dist.barrier()
            raise
        except BaseException:
            dist.share({"error": "rank 0 could not open the run directory (see its error)"})
            dist.barrier()
            raise
        final = run.final.resolve()
        dist.share({"error": None, "complete": complete, "reused": reused, "final": str(final), "plan": plan})
        yield Opened(None if complete else Shards(dist, run, units, reused, unit_name, plan), final, plan)
