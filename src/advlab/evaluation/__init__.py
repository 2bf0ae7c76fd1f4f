"""Robustness evaluation: the AutoAttack-style cascade, its metrics and its sanity checks.

``evaluate(model, data, EvalConfig(attacks=[...], eps=..., norm=...))`` (or a preset name) runs the cascade
batch by batch and returns an :class:`EvalReport`. The package, top to bottom:

* :mod:`~advlab.evaluation.metrics`: THE one place where per-sample outcomes become rates (clean and robust
  accuracy, attack success rates, prediction change rate, norm and confidence statistics); every caller in
  advlab (evaluate, the study, the transfer matrix, ``advlab attack``, the reports) uses it.
* :mod:`~advlab.evaluation.cascade`: the robust-flag cascade on one batch (:func:`run_batch`, :class:`BatchResult`).
* :mod:`~advlab.evaluation.checks`: the sanity checks (probabilities, randomness, zero gradients, noise) and
  their warnings; :mod:`~advlab.evaluation.gradients`: the gradient checks (finite differences, gradient steps
  against random ones).
* :mod:`~advlab.evaluation.probes`: what is measured on a few samples before the first batch;
  :mod:`~advlab.evaluation.diagnostics`: what that decides, the typed :class:`Plan` every batch runs (gradient-free
  fallback, straight-through gradients of :mod:`~advlab.evaluation.bpda`, the views of
  :mod:`~advlab.evaluation.views`: log-probabilities, EOT), and the vocabulary of the diagnostic outputs (findings,
  checks, warnings, adaptations, trust).
* :mod:`~advlab.evaluation.presets`: the named attack ensembles.
* :mod:`~advlab.evaluation.config`: :class:`EvalConfig`; :mod:`~advlab.evaluation.inputs`: the data forms;
  :mod:`~advlab.evaluation.summary`: :class:`EvalReport` and :func:`summarize` (the per-batch results merged into
  one report); :mod:`~advlab.evaluation.evaluator`: :func:`evaluate`, :func:`prepare` (the plan) and :func:`merge`
  (a report from saved batches).
"""

from __future__ import annotations

from advlab.evaluation import metrics
from advlab.evaluation.cascade import BatchResult, run_batch
from advlab.evaluation.checks import (
    CHECK_SAMPLES,
    NOISE_TRIES,
    check_warnings,
    failed_gradient_checks,
    zero_gradient_fraction,
    zero_gradients,
)
from advlab.evaluation.config import EvalConfig
from advlab.evaluation.diagnostics import Findings, Plan, diagnose
from advlab.evaluation.evaluator import evaluate, merge, prepare
from advlab.evaluation.inputs import Data, batches
from advlab.evaluation.presets import PRESETS, default_eps, preset_attacks
from advlab.evaluation.summary import EvalReport, summarize

__all__ = [
    "CHECK_SAMPLES",
    "NOISE_TRIES",
    "PRESETS",
    "BatchResult",
    "Data",
    "EvalConfig",
    "EvalReport",
    "Findings",
    "Plan",
    "batches",
    "check_warnings",
    "default_eps",
    "diagnose",
    "evaluate",
    "failed_gradient_checks",
    "merge",
    "metrics",
    "prepare",
    "preset_attacks",
    "run_batch",
    "summarize",
    "zero_gradient_fraction",
    "zero_gradients",
]
