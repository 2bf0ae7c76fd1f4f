"""How a caller takes part in a loop over units of work (batches of an evaluation, pairs of prototypes,
settings of a study): resume from finished units, save each one as it ends, compute only its shard, show progress.

The library loops (:func:`advlab.evaluation.evaluate`, :func:`advlab.prototypes.generate`,
:func:`advlab.experiments.study.sweep`) take one ``work: Work | None``; the layer that needs resume, sharding or a
progress bar builds it (:mod:`advlab.runs`: ``runs.resumable`` around a library call, ``runs.run_job`` for a
command). A unit's result depends only on its inputs and the seed, never on which units ran before, so the same
units give the same result however they are spread over calls and processes.

What a loop decides before its first unit (e.g. :mod:`advlab.evaluation.diagnostics`' adaptations) is its
*plan*: a JSON-able dict. A loop reads ``work.plan`` and, when it is None, decides and calls
``work.record_plan(plan)``; the run keeps it (plan.json) and hands it back on every resume, so a resumed or
merged run uses what the first launch decided.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass
class Work(Generic[T]):
    """``done``: results of units finished earlier, by unit index (a sequence stands for units 0, 1, ...), not
    computed again. ``on_done(i, result)``: called after each new unit (save it). ``in_shard(i)``: whether unit
    ``i`` is in this call's shard (one shard of a distributed run; None: every unit is); only those are computed,
    and the result then covers the units computed or given in ``done``. ``progress``: wraps the iterable of unit
    indices about to be computed (a tqdm bar). ``keep(result)``: what of a unit's result the loop keeps in memory
    once ``on_done`` has it (None: all of it); a run that saves each unit's bulky tensors (adversarial images) to
    disk drops them here, so that memory does not grow with the number of units."""

    done: Mapping[int, T] | Sequence[T] = field(default_factory=dict)
    on_done: Callable[[int, T], None] | None = None
    in_shard: Callable[[int], bool] | None = None
    progress: Callable[[Iterable[int]], Iterable[int]] | None = None
    plan: Mapping[str, Any] | None = None
    on_plan: Callable[[Mapping[str, Any]], None] | None = None
    keep: Callable[[T], T] | None = None

    def finished(self) -> dict[int, T]:
        """``done`` as a {unit: result} dict."""
        return dict(self.done) if isinstance(self.done, Mapping) else dict(enumerate(self.done))

    def wants(self, unit: int) -> bool:
        """Whether this call computes ``unit``: not finished earlier and in this shard."""
        return unit not in self.finished() and (self.in_shard is None or self.in_shard(unit))

    def todo(self, units: Iterable[int]) -> Iterable[int]:
        """The units of ``units`` this call computes, wrapped in ``progress``."""
        done = self.finished()
        todo = [u for u in units if u not in done and (self.in_shard is None or self.in_shard(u))]
        return self.progress(todo) if self.progress is not None else todo

    def record(self, unit: int, result: T) -> None:
        if self.on_done is not None:
            self.on_done(unit, result)

    def kept(self, result: T) -> T:
        """What the loop keeps of a recorded ``result`` (see ``keep``)."""
        return result if self.keep is None else self.keep(result)

    def record_plan(self, plan: Mapping[str, Any]) -> None:
        """Keep ``plan`` (decided because ``self.plan`` was None) as this work's plan, and hand it to ``on_plan``."""
        self.plan = dict(plan)
        if self.on_plan is not None:
            self.on_plan(self.plan)
