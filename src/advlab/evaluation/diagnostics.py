"""Diagnostics that decide whether a robustness number can be trusted, and what the evaluation does about them.

**The words** (one meaning each, across :mod:`~advlab.evaluation.checks`, :mod:`~advlab.evaluation.gradients`,
:mod:`~advlab.evaluation.cascade`, :mod:`~advlab.evaluation.summary` and ``advlab eval``):

* a **check** is one named measurement, a number: ``noise_broke`` (samples random noise broke), ``fd_unreliable``
  (probed samples whose gradients disagree with finite differences), ``eot`` (1: the attacks used EOT), ...
  ``BatchResult.checks`` holds a batch's, summed over batches (a per-evaluation one: its maximum) and shown as
  ``EvalReport.diagnostics["checks"]``. ``EvalConfig(sanity=False)`` turns the checks of the cascade off.
* a check **fails** when its value crosses its threshold (``gradients.fd_failed``: at least
  :data:`~advlab.evaluation.gradients.FD_MIN` unreliable samples); the failed gradient checks
  (:func:`advlab.evaluation.checks.failed_gradient_checks`) make the cascade run a gradient-free stage.
* a **warning** is one line of text for a failed check, saying what was measured, what was done about it and how far
  the number holds (``EvalReport.warnings``, :func:`advlab.evaluation.checks.check_warnings`,
  :func:`fallback_warning`; ``advlab eval`` prints each after ``warning:``).
* an **adaptation** is one line of text for what the evaluation changed about the attacks to fit the model (EOT,
  log-probabilities, straight-through gradients: ``EvalReport.adaptations``, :func:`adaptations`). It lowers no trust.
* **trust** is the verdict: ``"high"`` without a warning, else ``"low"`` (:func:`trust`, ``EvalReport.trust``).
* **unbroken**: a sample the cascade attacks and no attack has broken yet (its per-sample robust *flag*, the only
  meaning of "flag" here); the noise check, the zero-gradient check and the gradient-free stage look at those.
* the **probe** looks at a few samples of the first batch before the cascade (:data:`PROBE_SAMPLES`; the
  finite-difference probe :data:`advlab.evaluation.gradients.SAMPLES`) and records what it found as checks.
* **diagnostics** is the whole: this module, and ``EvalReport.diagnostics`` (the checks, the failed gradient
  checks, the warnings and the adaptations, as in metrics.json).

The diagnostics (see :mod:`advlab.evaluation.checks` for the sanity checks that run during the cascade):

* **non-finite outputs**: NaN or Inf logits on clean inputs make every accuracy meaningless, so
  :func:`require_finite` refuses the evaluation with one line (``AdvlabError``: exit code 2 in the CLI);
* **no gradient path**: a model whose outputs do not depend differentiably on its input (preprocessing in
  NumPy, OpenCV or under ``torch.no_grad``) gives gradient attacks nothing to follow. :func:`gradient_path`
  finds out with one forward on a few samples, and :func:`adapt` then replaces the white-box attacks by a
  gradient-free one (Square, :data:`FALLBACK_QUERIES` queries per image) instead of crashing. The number is an
  upper bound, and a warning says so.

* **non-differentiable ops** (round, floor, ceil, trunc, fix, sign, remainder, integer casts, and comparisons cast
  to float before any mixing layer, on input-dependent tensors, e.g. an input quantizer): the attacks run on
  :class:`advlab.evaluation.bpda.StraightThrough` of the model (straight-through gradients, the forward unchanged)
  and every success is confirmed on the model itself; an adaptation says so.

* **probabilities instead of logits** (a final softmax): the cross-entropy of probabilities has tiny,
  misleading gradients, so the attacks run on :class:`LogProbabilities` of the model (log p: the logits up to a
  constant per sample, the same argmax) and the successes are confirmed on the model itself.

* **randomized models** (two forwards on the same inputs differ: random transformations, noise, dropout): the
  attacks run on :class:`ExpectedProbabilities` (EOT, Athalye et al. 2018: log of the mean softmax over
  :data:`EOT_DRAWS` draws per forward, so every gradient is an expectation), and the report adds the expected
  clean and robust accuracy over :data:`ACCURACY_DRAWS` fresh draws and the worst case (robust in every draw).

* **unreliable gradients** (:mod:`advlab.evaluation.gradients`): :func:`gradient_probe` compares autograd with
  finite differences on :data:`advlab.evaluation.gradients.SAMPLES` samples of the first batch, and the cascade
  compares the gradient attacks' points with random ones on the samples left unbroken. When these, or the sanity
  checks (zero gradients, random noise or a black-box attack breaking unbroken samples), fail, the cascade runs
  Square (:data:`advlab.evaluation.gradients.GRADIENT_FREE_QUERIES` queries per image) on the samples still
  unbroken after the gradient attacks; on a well-behaved model nothing extra runs.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import Attack, frozen_parameters
from advlab.attacks.blackbox import Square
from advlab.attacks.pgd import PGD
from advlab.errors import AdvlabError
from advlab.evaluation.checks import is_probabilities

#: samples the gradient-path probe looks at
PROBE_SAMPLES = 4
#: queries per image of the gradient-free attack that stands in for gradient attacks on a model without a gradient path
FALLBACK_QUERIES = 5000
#: the check that records the fallback (see :func:`fallback_warning`)
FALLBACK_KEY = "gradient_free_fallback"
#: draws per forward of the EOT attack model, and draws per sample of the expected accuracy
EOT_DRAWS, ACCURACY_DRAWS = 16, 16
#: the fewest steps a white-box attack takes on a randomized model (AutoAttack's APGD budget)
EOT_STEPS = 100
#: the check that records EOT
EOT_KEY = "eot"
#: the check that records attacks on log-probabilities
LOGPROB_KEY = "log_probabilities"
#: the prefix of the checks that record straight-through gradients (one per op, see :func:`straight_through`)
BPDA_KEY = "bpda_"


def require_finite(logits: torch.Tensor, what: str = "clean inputs") -> None:
    """Raise ``AdvlabError`` when ``logits`` (N, K) hold NaN or Inf: no accuracy means anything then."""
    bad = ~torch.isfinite(logits.float()).all(1)
    if bool(bad.any()):
        raise AdvlabError(
            f"the model's outputs are NaN or infinite on {int(bad.sum())} of {len(logits)} {what}: "
            "no accuracy can be measured; check the model (e.g. a division by zero or log of 0 in it)"
        )


def gradient_path(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the model's outputs on a few samples of ``x`` (in [0, 1]) depend differentiably on the input:
    one forward with ``x`` requiring grad, the parameters frozen; False when no output has a ``grad_fn``. Counts
    the straight-through gradients of :mod:`advlab.evaluation.bpda` (a comparison or integer-cast quantizer has no
    path without them, and the attacks will get them)."""
    from advlab.evaluation import bpda

    xs = x[:PROBE_SAMPLES].detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad():
        out = bpda.StraightThrough(model)(xs)
    return bool(isinstance(out, torch.Tensor) and out.requires_grad)


def adapt(
    model: nn.Module, x: torch.Tensor, attacks: list[Attack], eps: float | None, norm: str | None
) -> tuple[list[Attack], bool]:
    """``(attacks, fell_back)``: the attacks as given when the model has a gradient path at ``x``; otherwise the
    white-box ones replaced by one gradient-free Square attack in the same ball (the evaluation's ``eps``/``norm``,
    else the first white-box attack's own), placed where the first of them stood."""
    white = [a for a in attacks if a.white_box]
    if not white or gradient_path(model, x):
        return attacks, False
    own = getattr(white[0], "eps", None)
    e = eps if eps is not None else (max(own) if isinstance(own, (list, tuple)) else own)
    if e is None:
        raise AdvlabError(
            "the model's outputs have no gradient path to the input, and no eps bounds a gradient-free "
            "attack: give --eps (and --norm)"
        )
    nm = norm or white[0].threat_norm
    if nm not in ("linf", "l2"):
        raise AdvlabError(
            f"the model's outputs have no gradient path to the input; the gradient-free fallback (Square) "
            f"works in linf or l2, not {nm}"
        )
    square = Square(eps=float(e), norm=nm, max_queries=FALLBACK_QUERIES, seed=getattr(white[0], "seed", 0))
    first = attacks.index(white[0])
    rest = [a for a in attacks if not a.white_box]
    return rest[:first] + [square] + rest[first:], True


def gradient_probe(model: nn.Module, x: torch.Tensor, eps: float | None, norm: str | None) -> dict[str, float]:
    """The finite-difference diagnostic (:func:`advlab.evaluation.gradients.finite_difference_disagreement`) on the
    first :data:`~advlab.evaluation.gradients.SAMPLES` samples of ``x`` (on the model's device) at their clean
    predictions, with random points in the ``eps`` ball when one is given, as checks: ``fd_checked`` samples,
    ``fd_unreliable`` of them disagreeing at every step size, ``fd_disagreement`` the median over those (over all
    when none), and the probe's cost per probed sample (``fd_forwards``, ``fd_backwards``; one forward for the
    predictions included)."""
    from advlab.evaluation import gradients

    xs = x[: gradients.SAMPLES]
    with torch.no_grad():
        labels = model(xs).argmax(1)
    radius = gradients.pixel_radius(eps, norm or "linf", xs) if eps is not None else None
    d = gradients.finite_difference_disagreement(model, xs, labels, radius)
    bad = d.unreliable
    value = d.per_sample[bad] if bool(bad.any()) else d.per_sample
    return {
        "fd_checked": float(len(xs)),
        "fd_unreliable": float(bad.sum()),
        "fd_disagreement": float(value.median()),
        "fd_forwards": float(d.forwards + 1),
        "fd_backwards": float(d.backwards),
    }


def charge_probe(part: Any, checks: dict[str, float]) -> None:
    """Count :func:`gradient_probe`'s cost in the first batch's per-sample counters (``part``: its BatchResult)."""
    k = int(checks.get("fd_checked", 0))
    part.forwards[:k] += int(checks.get("fd_forwards", 0))
    part.backwards[:k] += int(checks.get("fd_backwards", 0))


def straight_through(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, list[str]]:
    """``(attack model, op names)``: :class:`~advlab.evaluation.bpda.StraightThrough` of ``model`` when it applies
    non-differentiable ops to the input at ``x``, else ``model`` itself and no names."""
    from advlab.evaluation import bpda

    ops = bpda.non_differentiable_ops(model, x[:PROBE_SAMPLES])
    return (bpda.StraightThrough(model), ops) if ops else (model, [])


class AttackView(nn.Module):
    """A view of ``model`` that attacks run on (an evaluation's ``attack_model``), never the model judged: it keeps
    the model's ``info`` and train/eval mode; subclasses change what the attacks see."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.info = getattr(model, "info", None)
        self.training = model.training  # not train(): that would change the wrapped model's modules


class LogProbabilities(AttackView):
    """``log(model(x))`` for a model that outputs probabilities: logits up to a per-sample constant (the same
    argmax, useful cross-entropy gradients)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x).float()
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()


class ExpectedProbabilities(AttackView):
    """EOT for a randomized model: ``log((1/K) sum_k softmax(model(x)))`` over K = ``draws`` fresh forwards (the
    log of the expected probabilities; K times the cost of a forward)."""

    def __init__(self, model: nn.Module, draws: int = EOT_DRAWS) -> None:
        super().__init__(model)
        self.draws = draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([self.model(x).float().softmax(1) for _ in range(self.draws)]).mean(0)
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()


def randomized(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two forwards on a few samples of ``x`` differ (relative to the outputs' scale, above 1e-5)."""
    with torch.no_grad():
        a, b = model(x[:PROBE_SAMPLES]).float(), model(x[:PROBE_SAMPLES]).float()
    return float((a - b).abs().max()) > 1e-5 * (1.0 + float(a.abs().max()))


def eot_budget(atk: Attack) -> Attack:
    """``atk`` as it runs on a randomized model: the full budget (no early stop: the first expected misclassification
    is a weak point) and at least :data:`EOT_STEPS` steps (each EOT gradient is a noisy estimate, so a short schedule
    stops short of what the expectation allows)."""
    names = {f.name for f in dataclasses.fields(atk)}
    changes: dict[str, Any] = {"early_stop": False} if "early_stop" in names else {}
    if "steps" in names and atk.white_box:
        changes["steps"] = max(int(atk.steps), EOT_STEPS)  # type: ignore[attr-defined]
    return dataclasses.replace(atk, **changes) if changes else atk


def eot_attacks(attacks: list[Attack], eps: float | None, norm: str | None) -> list[Attack]:
    """The attacks as they run on a randomized model: first EOT-PGD with a fixed step (eps / 8, :data:`EOT_STEPS`
    steps, from the clean image) in the evaluation's ball, then each given attack with :func:`eot_budget`. APGD's
    step-size rule halves its step when the loss does not rise, and an EOT loss is a noisy estimate: on the digits
    behind Gaussian input noise (sigma 0.25, 200 digits, L-inf 0.1) the reliable preset alone gave an expected robust
    accuracy of 37.0%, with EOT-PGD first 34.5%, a hand-written EOT-PGD-50 on the mean loss 33.7%."""
    out = [eot_budget(a) for a in attacks]
    white = [a for a in attacks if a.white_box]
    e = eps if eps is not None else getattr(white[0], "eps", None) if white else None
    nm = norm or (white[0].threat_norm if white else None)
    if isinstance(e, (int, float)) and nm in ("linf", "l2"):
        seed = getattr(white[0], "seed", 0) if white else 0
        out.insert(0, PGD(eps=float(e), norm=nm, alpha=float(e) / 8, steps=EOT_STEPS, random_start=False, seed=seed))
    return out


def eot(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, bool]:
    """``(attack model, adapted)``: :class:`ExpectedProbabilities` of ``model`` when it is randomized at ``x``."""
    return (ExpectedProbabilities(model), True) if randomized(model, x) else (model, False)


def log_probabilities(model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, bool]:
    """``(attack model, adapted)``: :class:`LogProbabilities` of ``model`` when its outputs on a few samples of
    ``x`` look like probabilities (:func:`advlab.evaluation.checks.is_probabilities`), else ``model``."""
    with torch.no_grad():
        out = model(x[:PROBE_SAMPLES])
    return (LogProbabilities(model), True) if is_probabilities(out) else (model, False)


def adaptations(checks: dict[str, float]) -> list[str]:
    """The adaptations: what the evaluation changed about the attacks to fit the model, one line each (from the
    merged checks)."""
    out = []
    if checks.get(EOT_KEY, 0) > 0:
        out.append(
            f"the model is randomized: the attacks used EOT (the mean of {EOT_DRAWS} draws' probabilities per forward) "
            f"with their full budget (no early stop, at least {EOT_STEPS} steps; a fixed-step EOT-PGD first), and the "
            f"expected accuracy over {ACCURACY_DRAWS} fresh draws at each sample's worst case is reported beside the "
            "single-draw one"
        )
    if checks.get(LOGPROB_KEY, 0) > 0:
        out.append(
            "the model outputs probabilities, not logits: the attacks used their logarithm as logits (the same "
            "argmax; every success confirmed on the model)"
        )
    ops = sorted(k[len(BPDA_KEY) :] for k, v in checks.items() if k.startswith(BPDA_KEY) and v > 0)
    if ops:
        out.append(
            f"the model applies {', '.join(ops)} to its input: the attacks used straight-through gradients through "
            "them (BPDA; forward unchanged, every success confirmed on the model)"
        )
    return out


def fallback_warning(checks: dict[str, float]) -> list[str]:
    """The warning for :func:`adapt`'s fallback, when the checks recorded it."""
    if checks.get(FALLBACK_KEY, 0) <= 0:
        return []
    return [
        f"the model's outputs have no gradient path to the input (preprocessing outside autograd?): gradient attacks "
        f"were replaced by Square with {FALLBACK_QUERIES} queries per image, so the robust accuracy is an upper bound; "
        "give a differentiable twin of the model (attack_model=) for a white-box number"
    ]


def trust(warnings: list[str]) -> str:
    """``"high"`` when no check failed (no warning), else ``"low"``."""
    return "low" if warnings else "high"
