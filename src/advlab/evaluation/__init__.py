"""Robustness evaluation: the AutoAttack-style cascade, its metrics and its sanity checks.

``evaluate(model, data, EvalConfig(attacks=[...], eps=..., norm=...))`` (or a preset name) runs the cascade
batch by batch and returns an :class:`EvalReport`. The package, top to bottom:

* :mod:`~advlab.evaluation.metrics`: THE one place where per-sample outcomes become rates (clean and robust
  accuracy, attack success rates, prediction change rate, norm and confidence statistics); every caller in
  advlab (evaluate, the study, the transfer matrix, ``advlab attack``, the reports) uses it.
* :mod:`~advlab.evaluation.cascade`: the robust-flag cascade on one batch (:func:`run_batch`, :class:`BatchResult`).
* :mod:`~advlab.evaluation.checks`: the sanity checks (probabilities, randomness, zero gradients, noise) and
  their warnings.
* :mod:`~advlab.evaluation.presets`: the named attack ensembles.
* :mod:`~advlab.evaluation.config`: :class:`EvalConfig`; :mod:`~advlab.evaluation.inputs`: the data forms;
  :mod:`~advlab.evaluation.report`: :class:`EvalReport` and :func:`summarize`; :mod:`~advlab.evaluation.evaluator`:
  :func:`evaluate`.
* Room for ``diagnostics`` (the next evaluation issue: adaptive-attack and gradient-masking diagnostics beyond
  the sanity checks), which will read the per-sample columns of :class:`BatchResult` like ``report`` does.
"""

from __future__ import annotations

from advlab.evaluation import metrics
from advlab.evaluation.cascade import BatchResult, run_batch
from advlab.evaluation.checks import (
    CHECK_SAMPLES,
    NOISE_TRIES,
    flags,
    zero_gradient_fraction,
    zero_gradients,
)
from advlab.evaluation.config import EvalConfig
from advlab.evaluation.evaluator import evaluate
from advlab.evaluation.inputs import Data, batches
from advlab.evaluation.presets import PRESETS, default_eps, preset_attacks
from advlab.evaluation.report import EvalReport, summarize

__all__ = [
    "CHECK_SAMPLES",
    "NOISE_TRIES",
    "PRESETS",
    "BatchResult",
    "Data",
    "EvalConfig",
    "EvalReport",
    "batches",
    "default_eps",
    "evaluate",
    "flags",
    "metrics",
    "preset_attacks",
    "run_batch",
    "summarize",
    "zero_gradient_fraction",
    "zero_gradients",
]
