"""Sanity checks in the spirit of AutoAttack's, and the warnings they raise (the words: see
:mod:`advlab.evaluation.diagnostics`).

Measured per batch by the cascade (:mod:`advlab.evaluation.cascade`), summed over batches, and turned into
lines of ``EvalReport.warnings`` by :func:`check_warnings`:

* outputs that look like probabilities instead of logits (every batch; free);
* a model in training mode (``training_mode``: the number of its modules in training mode, ``batchnorm_training``
  the BatchNorm layers among them, which normalize with the batch's statistics), or one that answers differently
  twice on the same inputs (first batch, a second forward on :data:`CHECK_SAMPLES` samples; ``randomness`` =
  max |f(x) - f'(x)| / (1 + max |f(x)|));
* all-zero cross-entropy input gradients on the samples the cascade left unbroken (saturated softmax);
* random noise (:data:`NOISE_TRIES` points per sample) or a black-box attack breaking samples that the
  white-box attacks left unbroken (masked gradients; the noise check itself runs in the cascade);
* the gradient checks of :mod:`advlab.evaluation.gradients` (finite differences on a few unbroken samples of each
  batch, ``fd_*``; gradient steps no better than random ones on the unbroken samples, ``steps_*``).

:func:`failed_gradient_checks` names the failed checks that cast doubt on the gradients; on those the cascade runs
a gradient-free stage (Square, ``gradient_free_*``) on the samples still unbroken. Every warning says what was
measured, what was done about it, and that the robust accuracy is then an upper bound.

:func:`zero_gradients` is the one zero-gradient test in advlab; the defense study uses it too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import frozen_parameters
from advlab.device import device_of
from advlab.evaluation import gradients, indicators

if TYPE_CHECKING:
    from advlab.evaluation.diagnostics import Findings

#: samples the randomness check (first batch) and the zero-gradient check (unbroken samples of each batch) look at:
#: a saturated or random model shows on nearly every sample, so a few suffice
CHECK_SAMPLES = 16
#: random points per unbroken sample in the noise check
NOISE_TRIES = 5


def zero_gradients(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample, whether the input gradient of CE(f(x_i), labels_i) is exactly zero everywhere: (N,) bool on the CPU.

    ``x`` on the model's device, in [0, 1]. A model with no differentiable path from the input at all (e.g.
    a quantizer without a straight-through gradient) counts as all zero. The parameters get no gradients.
    """
    xs = x.detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad():
        loss = F.cross_entropy(model(xs).float(), labels, reduction="sum")
        if not loss.requires_grad:
            return torch.ones(len(x), dtype=torch.bool)
        (g,) = torch.autograd.grad(loss, xs, allow_unused=True)
    if g is None:
        return torch.ones(len(x), dtype=torch.bool)
    return (g.flatten(1).abs().amax(1) == 0).cpu()


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor, samples: int = CHECK_SAMPLES) -> float:
    """The fraction of the first ``samples`` samples (labels ``y``) with an all-zero CE input gradient
    (:func:`zero_gradients`); ``x`` and ``y`` on any device, moved to the model's."""
    dev = device_of(model)
    if len(x) == 0:
        return 0.0
    return float(zero_gradients(model, x[:samples].to(dev), y[:samples].to(dev)).float().mean())


def is_probabilities(z: torch.Tensor) -> bool:
    """Whether outputs (N, K) look like probabilities rather than logits: non-negative, rows summing to 1 (1e-3)."""
    z = z.float()
    return bool((z >= 0).all() and ((z.sum(1) - 1).abs() < 1e-3).all())


def output_checks(
    model: nn.Module, x: torch.Tensor, logits: torch.Tensor, first: bool, forwards: torch.Tensor
) -> dict[str, float]:
    """Probabilities-not-logits on every batch (free); training mode and randomness (a second forward on
    up to :data:`CHECK_SAMPLES` samples, counted in ``forwards``) on the first batch."""
    z = logits.float()
    checks: dict[str, float] = {"batches": 1.0}
    checks["probability_batches"] = float(is_probabilities(z))
    if not first:
        return checks
    k = min(len(x), CHECK_SAMPLES)
    checks.update(training_modules(model))
    with torch.no_grad():
        again = model(x[:k]).float()
    forwards[:k] += 1
    scale = 1.0 + float(z[:k].abs().max()) if k else 1.0
    checks["randomness"] = float((again - z[:k]).abs().max()) / scale if k else 0.0
    return checks


def training_modules(model: nn.Module) -> dict[str, float]:
    """``training_mode``: how many of the model's modules (itself included) are in training mode;
    ``batchnorm_training``: the BatchNorm layers among them (batch statistics: a sample's output depends on its
    batch)."""
    modules = [m for m in model.modules() if m.training]
    bn = [m for m in modules if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    return {"training_mode": float(len(modules)), "batchnorm_training": float(len(bn))}


def zero_gradient_check(
    model: nn.Module,
    x: torch.Tensor,
    labels: torch.Tensor,
    unbroken: torch.Tensor,
    forwards: torch.Tensor,
    backwards: torch.Tensor,
) -> tuple[dict[str, float], torch.Tensor]:
    """:func:`zero_gradients` at the clean point on up to :data:`CHECK_SAMPLES` samples the cascade left unbroken:
    the checks, and the positions (CPU) of the checked samples whose gradient is all zero.

    Only unbroken samples matter: a sample the attacks broke is broken whatever its gradient, while an unbroken one
    with a zero gradient may be unbroken only because gradient attacks saw nothing (the cost is nil on an
    undefended model, where nothing is left unbroken). Counts one forward and one backward per checked sample.
    """
    idx = unbroken.nonzero().flatten()[:CHECK_SAMPLES]
    if len(idx) == 0:
        return {}, torch.zeros(0, dtype=torch.long)
    zero = zero_gradients(model, x[idx], labels[idx])
    forwards[idx.cpu()] += 1
    backwards[idx.cpu()] += 1
    return {"zero_gradient": float(zero.sum()), "gradient_checked": float(len(idx))}, idx.cpu()[zero]


def _per_evaluation(key: str) -> bool:
    """Whether a check is measured once per evaluation (its maximum over batches is kept, not the sum)."""
    return key in ("randomness", "training_mode", "batchnorm_training", "fd_disagreement")


def merge(parts: list[dict[str, float]]) -> dict[str, float]:
    """Per-batch check counts summed over batches (the per-evaluation measurements: the maximum)."""
    out: dict[str, float] = {}
    for checks in parts:
        for k, v in checks.items():
            out[k] = max(out.get(k, 0.0), v) if _per_evaluation(k) else out.get(k, 0.0) + v
    return out


def failed_gradient_checks(checks: dict[str, float]) -> list[str]:
    """The checks in ``checks`` (one batch's or merged) that failed and cast doubt on the gradients the attacks
    followed: zero gradients on unbroken samples, random noise or a gradient-free attack breaking unbroken samples,
    gradients that disagree with finite differences, gradient attacks' points no better than random ones."""
    failed = [k for k in ("zero_gradient", "noise_broke", "black_box_broke") if checks.get(k, 0) > 0]
    if gradients.fd_failed(checks.get("fd_unreliable", 0.0)):
        failed.append("fd_unreliable")
    if gradients.steps_failed(checks.get("steps_weak", 0.0), checks.get("steps_checked", 0.0)):
        failed.append("steps_weak")
    return failed


def _action(checks: dict[str, float], fell_back: bool) -> str:
    """What the evaluation did about failed gradient checks, and what the number then is."""
    if checks.get("gradient_free_tried", 0):
        return (
            f"{indicators.gradient_free_done(checks)} ({gradients.GRADIENT_FREE_QUERIES} queries per image and run); "
            "the robust accuracy is an upper bound"
        )
    if fell_back:  # the attacks were gradient-free to begin with (diagnostics.fallback)
        return (
            f"the attacks were gradient-free (Square) already{indicators.more_runs_done(checks)}; the robust accuracy "
            "is an upper bound"
        )
    return (
        "no gradient-free stage ran (it runs on the batches whose own checks cast doubt, in an L-inf or L2 ball, on a "
        "deterministic model); the robust accuracy is an upper bound"
    )


def _gradient_warnings(checks: dict[str, float], fell_back: bool) -> list[str]:
    """One warning per check of :func:`failed_gradient_checks`, each with its measured value and :func:`_action`."""
    out, act, failed = [], _action(checks, fell_back), failed_gradient_checks(checks)
    if "zero_gradient" in failed:
        out.append(
            f"{int(checks['zero_gradient'])} of {int(checks['gradient_checked'])} checked robust samples have an "
            f"all-zero cross-entropy input gradient (saturated softmax or masked gradients): {act}"
        )
    if "fd_unreliable" in failed:
        out.append(
            f"unreliable gradients: on {int(checks['fd_unreliable'])} of {int(checks['fd_checked'])} probed samples "
            "autograd's directional derivatives disagree with finite differences at every step size (h = 1e-2, "
            f"1e-3, 1e-4; median relative disagreement {checks.get('fd_disagreement', 0):.2g} at the best step): {act}"
        )
    if "steps_weak" in failed:
        out.append(
            f"gradient steps no better than random ones: on {int(checks['steps_weak'])} of "
            f"{int(checks['steps_checked'])} samples left unbroken the gradient attacks raised the margin loss less "
            f"than {gradients.STEP_RATIO:g}x as much as the best of {NOISE_TRIES} random points in the ball: {act}"
        )
    if "noise_broke" in failed:
        out.append(
            f"random noise broke {int(checks['noise_broke'])} of the {int(checks.get('noise_tried', 0))} samples "
            f"that the white-box attacks left unbroken (gradients likely masked or obfuscated): {act}"
        )
    if "black_box_broke" in failed:
        out.append(
            f"a gradient-free attack broke {int(checks['black_box_broke'])} samples that the gradient attacks left "
            f"unbroken: gradients are masked or misleading here, and the gradient attacks alone over-report "
            f"robustness; {act}"
        )
    return out


def _model_warnings(checks: dict[str, float], findings: Findings) -> list[str]:
    """The warnings about the model as given: probability outputs, training mode, randomness."""
    out = []
    if checks.get("probability_batches", 0) > 0 and not findings.probabilities:
        out.append(
            "the model's outputs look like probabilities (non-negative, rows sum to 1), not logits: remove the "
            "final softmax, or the cross-entropy and its gradients are wrong; the robust accuracy is an upper bound"
        )
    if checks.get("training_mode", 0) > 0:
        bn = int(checks.get("batchnorm_training", 0))
        out.append(
            f"the model is in training mode ({int(checks['training_mode'])} modules in training mode, {bn} of them "
            "BatchNorm layers normalizing with batch statistics; dropout draws): it was evaluated as given, so its "
            "outputs depend on the batch or the draw; call model.eval() before evaluating; the robust accuracy is "
            "not a bound for the eval-mode model"
        )
    if checks.get("randomness", 0) > 1e-5 and findings.randomized:
        out.append(
            f"the model is not deterministic (two passes differ by up to {checks['randomness']:.2g}, relative): the "
            "attacks used EOT, and the accuracies are the expected ones over fresh draws (single_draw: one draw's)"
        )
    elif checks.get("randomness", 0) > 1e-5:
        out.append(
            f"the model is not deterministic: two passes on the same inputs differ by up to "
            f"{checks['randomness']:.2g} (relative); use expectation over transformation (average gradients over "
            "several passes) for a meaningful bound"
        )
    return out


#: the share of the active test's planted adversarial examples the attacks must find (Zimmermann et al. 2022)
ACTIVE_PASS = 0.95


def _active_warnings(checks: dict[str, float]) -> list[str]:
    """The warning of a failed active test (:mod:`advlab.evaluation.active`): the attacks found fewer than
    :data:`ACTIVE_PASS` of the adversarial examples planted within eps."""
    tested, found = int(checks.get("active_tested", 0)), int(checks.get("active_found", 0))
    if tested == 0 or found >= ACTIVE_PASS * tested:
        return []
    return [
        f"active test failed: on binary tasks built from the model where an adversarial example provably exists "
        f"within eps, the attacks found {found} of {tested} (at least {ACTIVE_PASS:.0%} needed): they miss "
        "adversarial examples that exist; the robust accuracy is an upper bound"
    ]


def check_warnings(checks: dict[str, float], findings: Findings | None = None) -> list[str]:
    """The warnings the merged checks call for, one line each (empty: no check failed); ``findings``: what the
    probe found (:class:`advlab.evaluation.diagnostics.Findings`; None: nothing), which changes what some checks
    mean."""
    if findings is None:
        from advlab.evaluation.diagnostics import Findings

        findings = Findings()
    return (
        _model_warnings(checks, findings)
        + _active_warnings(checks)
        + _gradient_warnings(checks, findings.no_gradient_path and not findings.finite_differences)
    )
