"""The units of advlab's own loops, ready for :func:`advlab.runs.resumable` and :class:`advlab.runs.Job`:
how each saves its unit (tensors + JSON info) and reads it back.

- :data:`EVALUATE`: a batch of :func:`advlab.evaluate` (a :class:`~advlab.evaluation.cascade.BatchResult`);
- :data:`PROTOTYPES`: a batch of (start, target) pairs of :func:`advlab.prototypes.generate` (an
  :class:`~advlab.prototypes.evolve.Evolution`);
- :data:`STUDY`: a row of :func:`advlab.experiments.study.sweep` (an :class:`~advlab.experiments.study.Outcome`).

Their ``count`` is None (as many as the loop makes); :meth:`~advlab.runs.job.Units.counted` sets it. The library
types are imported when a unit is read or written, not when this module is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from advlab.runs.job import Encoded, Units

if TYPE_CHECKING:
    from advlab.evaluation.cascade import BatchResult
    from advlab.experiments.study import Outcome
    from advlab.prototypes.evolve import Evolution


def _batch_result(t: dict[str, torch.Tensor], info: dict[str, Any]) -> BatchResult:
    from advlab.evaluation.cascade import BatchResult

    return BatchResult.from_tensors(t, info["checks"])


def _evolution(t: dict[str, torch.Tensor], info: dict[str, Any]) -> Evolution:
    from advlab.prototypes.evolve import Evolution

    return Evolution.from_tensors(t)


def _outcome(t: dict[str, torch.Tensor], info: dict[str, Any]) -> Outcome:
    from advlab.experiments.study import Outcome

    return Outcome.from_saved(t, info)


def _encode_batch(part: BatchResult) -> Encoded:
    return part.tensors(), {"checks": part.checks}


def _encode_evolution(ev: Evolution) -> Encoded:
    return ev.tensors(), {}


def _encode_outcome(o: Outcome) -> Encoded:
    return o.to_saved()


#: a batch of :func:`advlab.evaluate`
EVALUATE: Units[BatchResult] = Units(None, "a batch of samples", _encode_batch, _batch_result, bar="evaluate")
#: a batch of (start, target) pairs of :func:`advlab.prototypes.generate` / ``generate_each``
PROTOTYPES: Units[Evolution] = Units(
    None, "a batch of (start, target) pairs", _encode_evolution, _evolution, "prototypes"
)
#: a row of :func:`advlab.experiments.study.sweep` (0: the undefended model)
STUDY: Units[Outcome] = Units(None, "a defense setting (0: the undefended model)", _encode_outcome, _outcome, "study")
