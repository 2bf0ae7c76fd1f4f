"""Indicators of attack failure (Pintor et al., NeurIPS 2022), per sample, and what each one triggers.

An evaluation's number is only as good as its attacks; these indicators say, per sample, when an attack has
visibly failed at its own task, so that the failure is repaired (and reported) instead of read as robustness. Each
is a bit of ``BatchResult.indicators``; the cascade (:func:`advlab.evaluation.cascade.run_batch`) sets them:

* :data:`SILENT_SUCCESS`: the attack met its goal at a point on its path but returned another point (a last
  iterate, a point its loss preferred). Remedy, at once: that point is judged, and kept when the model misclassifies
  it inside the ball (:class:`advlab.attacks.base.Witness` watches every point an attack evaluates).
* :data:`TRANSFER_FAILURE`: the attack claimed a success (on the model it ran on: a view, a surrogate, the forward
  with autograd on) that the model as a user calls it does not confirm.
* :data:`UNAVAILABLE_GRADIENTS`: the input gradient of the loss is exactly zero at the sample, left unbroken
  (a saturated softmax, masked gradients, a model with no gradient path to its input: there the Square that
  replaced the gradient attacks, :func:`advlab.evaluation.diagnostics.fallback`, gets the more runs below too).
* :data:`INCOMPLETE_OPTIMIZATION`: the attack's best loss was still rising over its last evaluations (a fifth of
  them) when its budget ran out, and the sample stayed unbroken (:meth:`advlab.attacks.base.Witness.still_improving`).
  Remedy: the attack runs again on those samples with :data:`MORE_STEPS` times its steps. Not on a randomized
  model (an EOT loss is noisy, and EOT attacks run their full budget already).
* :data:`UNCONSTRAINED_FAILURE`: the first white-box attack, run again with an unbounded ball (the whole [0, 1] box)
  on a few samples it left unbroken, still cannot change their prediction: a working attack always can (Pintor
  et al.'s "unconstrained attack failure"), so its gradients are not guiding it.

* :data:`UNSTABLE_PREDICTIONS`: at a sample left unbroken, small steps along the gradient (a fortieth of eps)
  change the margin loss far from what the gradient predicts (:func:`advlab.evaluation.gradients.instability`): a
  discontinuous function (k-winners-take-all, a steep staircase, a term oscillating faster than a step), whose
  gradients say nothing at the attack's scale (it fires when enough of a batch is unstable:
  :func:`advlab.evaluation.gradients.unstable_failed`). Remedy, first: EOT over Gaussian input noise, APGD on the
  model smoothed at two small scales (:func:`advlab.evaluation.cascade._smoothed_stage`,
  :class:`advlab.evaluation.views.GaussianSmoothed`; the same noise draws at every forward, so the smoothed loss is
  a deterministic function). On 200 digits behind a steep staircase (L-inf 0.1) it took the reliable preset from
  34.0% (Square and its more runs alone) to 31.0%, against 30.0% for the union of every attack known there; an
  earlier try with fresh noise at every forward left 50% robust on 100 digits where Square left 42%.

Any of the last four makes the batch end with the gradient-free stage: gradient-free search with more queries, as
the gradients say nothing useful there (Square on the samples still unbroken, then up to :data:`MORE_QUERY_RUNS`
more runs with fresh seeds, as many queries each, while each run breaks some; not on a randomized model).
:func:`summary` gives the report's lines: which fired, on how many samples, what was done.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from advlab.attacks.base import Attack

SILENT_SUCCESS = 1
TRANSFER_FAILURE = 2
UNAVAILABLE_GRADIENTS = 4
UNCONSTRAINED_FAILURE = 8
INCOMPLETE_OPTIMIZATION = 16
UNSTABLE_PREDICTIONS = 32

#: the indicators by name, in report order
NAMES = {
    "silent_success": SILENT_SUCCESS,
    "transfer_failure": TRANSFER_FAILURE,
    "unavailable_gradients": UNAVAILABLE_GRADIENTS,
    "unconstrained_failure": UNCONSTRAINED_FAILURE,
    "incomplete_optimization": INCOMPLETE_OPTIMIZATION,
    "unstable_predictions": UNSTABLE_PREDICTIONS,
}
#: the indicators that make a batch end with the gradient-free stage
NEED_GRADIENT_FREE = TRANSFER_FAILURE | UNAVAILABLE_GRADIENTS | UNCONSTRAINED_FAILURE | UNSTABLE_PREDICTIONS
#: unbroken samples per batch that the unconstrained attack runs on
UNCONSTRAINED_SAMPLES = 4
#: how many times its steps an attack runs again on the samples whose loss was still improving
MORE_STEPS = 2
#: at most how many more runs (fresh seeds) follow the gradient-free stage's first Square, while each breaks some
MORE_QUERY_RUNS = 3

#: the gradient-free stage, as the remedies name it
GRADIENT_FREE = (
    f"the gradient-free stage ran on the samples still unbroken (Square, then up to {MORE_QUERY_RUNS} more runs with "
    "fresh seeds while they broke some)"
)

REMEDIES = {
    "silent_success": "the point seen on the path was judged and kept as the sample's adversarial example",
    "transfer_failure": f"every success was judged on the model as called; {GRADIENT_FREE}",
    "unavailable_gradients": GRADIENT_FREE,
    "unconstrained_failure": GRADIENT_FREE,
    "incomplete_optimization": f"the attack ran again on those samples with {MORE_STEPS}x its steps",
    "unstable_predictions": f"APGD on the model smoothed by Gaussian input noise (EOT) ran first; {GRADIENT_FREE}",
}


def unbounded(atk: Attack, norm: str, pixels: int) -> Attack | None:
    """``atk`` with a ball that holds the whole [0, 1] box (L-inf 1, L2 sqrt(d), L1 d for d pixels), stopping at
    its first success; None for an attack without an ``eps`` field."""
    names = {f.name for f in dataclasses.fields(atk)}
    if "eps" not in names:
        return None
    radius = {"linf": 1.0, "l2": math.sqrt(pixels), "l1": float(pixels)}.get(norm)
    if radius is None:
        return None
    changes: dict[str, Any] = {"eps": radius}
    if "early_stop" in names:
        changes["early_stop"] = True
    return dataclasses.replace(atk, **changes)


def longer(atk: Attack) -> Attack | None:
    """``atk`` with :data:`MORE_STEPS` times its steps and another seed (a fresh start), for the samples whose loss
    was still improving when its budget ran out; None for an attack without ``steps``."""
    names = {f.name for f in dataclasses.fields(atk)}
    if "steps" not in names:
        return None
    changes: dict[str, Any] = {"steps": MORE_STEPS * int(atk.steps)}  # type: ignore[attr-defined]
    if "seed" in names:
        changes["seed"] = atk.seed + 1
    return dataclasses.replace(atk, **changes)


def counts(bits: torch.Tensor) -> dict[str, int]:
    """Per indicator, on how many samples it fired (``bits``: the ``indicators`` column)."""
    return {name: int(((bits & bit) != 0).sum()) for name, bit in NAMES.items()}


def summary(bits: torch.Tensor) -> list[dict[str, object]]:
    """The indicators that fired: name, samples, and the remedy applied (for the report and metrics.json)."""
    return [{"indicator": name, "samples": k, "remedy": REMEDIES[name]} for name, k in counts(bits).items() if k > 0]


def warnings(bits: torch.Tensor, checks: dict[str, float]) -> list[str]:
    """The warnings of the indicators that cast doubt on the gradients and have no check of their own (an all-zero
    gradient is :mod:`~advlab.evaluation.checks`' zero-gradient warning): one line each, with what was done."""
    k = counts(bits)
    then = f"{gradient_free_done(checks)}; the robust accuracy is an upper bound"
    out = []
    if k["transfer_failure"]:
        out.append(
            f"transfer failure: on {k['transfer_failure']} samples an attack claimed a success on the model it ran on "
            f"(a surrogate, or the forward with autograd on) that the model as called does not confirm; {then}"
        )
    if k["unconstrained_failure"]:
        out.append(
            f"unconstrained attack failure: with an unbounded ball the first gradient attack still could not change "
            f"the prediction of {k['unconstrained_failure']} of {int(checks.get('unconstrained_tried', 0))} samples "
            f"it tried (its gradients do not guide it, or nothing in the box moves the model off its class); {then}"
        )
    if k["unstable_predictions"]:
        out.append(
            f"unstable predictions: on {k['unstable_predictions']} of {int(checks.get('stability_probed', 0))} "
            "unbroken samples probed, small steps along the gradient (a fortieth of eps) change the loss far from "
            "what the gradient predicts (a discontinuous model: its gradients say little at the attack's scale); "
            + then
        )
    return out


def gradient_free_done(checks: dict[str, float]) -> str:
    """What the gradient-free stage did (its checks ``gradient_free_*``, ``more_queries_*``; with the smoothed APGD
    before it, ``smoothed_*``, when unstable predictions called for it), as a clause."""
    tried, broke = int(checks.get("gradient_free_tried", 0)), int(checks.get("gradient_free_broke", 0))
    smoothed = ""
    if checks.get("smoothed_tried"):
        smoothed = (
            f"APGD on the model smoothed by Gaussian input noise ran on the {int(checks['smoothed_tried'])} samples "
            f"still unbroken and broke {int(checks.get('smoothed_broke', 0))}; "
        )
    done = f"Square (gradient-free) then ran on the {tried} samples still unbroken and broke {broke}"
    return smoothed + done + more_runs_done(checks)


def more_runs_done(checks: dict[str, float]) -> str:
    """What the more Square runs did (checks ``more_queries_*``), as "; N more Square runs ... broke M more", or ""
    when none ran."""
    runs, more = int(checks.get("more_queries_runs", 0)), int(checks.get("more_queries_broke", 0))
    return f"; {runs} more Square runs (fresh seeds) broke {more} more" if runs else ""
