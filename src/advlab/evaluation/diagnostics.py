"""Diagnostics that decide whether a robustness number can be trusted, and what the evaluation does about them.

First part of the adaptive evaluation (the rest: BPDA through non-differentiable ops, EOT for randomized
models, unreliable-gradient tests, is still to come; see :mod:`advlab.evaluation.checks` for the sanity checks
that already run during the cascade):

* **non-finite outputs**: NaN or Inf logits on clean inputs make every accuracy meaningless, so
  :func:`require_finite` refuses the evaluation with one line (``AdvlabError``: exit code 2 in the CLI);
* **no gradient path**: a model whose outputs do not depend differentiably on its input (preprocessing in
  NumPy, OpenCV or under ``torch.no_grad``) gives gradient attacks nothing to follow. :func:`gradient_path`
  finds out with one forward on a few samples, and :func:`adapt` then replaces the white-box attacks by a
  gradient-free one (Square, :data:`FALLBACK_QUERIES` queries per image) instead of crashing. The number is an
  upper bound, and the report says so.

* **non-differentiable ops** (round, floor, ceil, trunc, fix, sign on input-dependent tensors, e.g. an input
  quantizer): the attacks run on :class:`advlab.evaluation.bpda.StraightThrough` of the model (straight-through
  gradients, the forward unchanged) and every success is confirmed on the model itself; the report lists this
  in ``EvalReport.adaptations``.

* **probabilities instead of logits** (a final softmax): the cross-entropy of probabilities has tiny,
  misleading gradients, so the attacks run on :class:`LogProbabilities` of the model (log p: the logits up to a
  constant per sample, the same argmax) and the successes are confirmed on the model itself.

* **randomized models** (two forwards on the same inputs differ: random transformations, noise, dropout): the
  attacks run on :class:`ExpectedProbabilities` (EOT, Athalye et al. 2018: log of the mean softmax over
  :data:`EOT_DRAWS` draws per forward, so every gradient is an expectation), and the report adds the expected
  clean and robust accuracy over :data:`ACCURACY_DRAWS` fresh draws and the worst case (robust in every draw).

The verdict: ``EvalReport.trust`` is ``"high"`` when no check or diagnostic cast doubt on the number, else
``"low"``, with the reasons in ``EvalReport.flags``.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.base import Attack, frozen_parameters
from advlab.attacks.blackbox import Square
from advlab.errors import AdvlabError
from advlab.evaluation.checks import is_probabilities

#: samples the gradient-path probe looks at
PROBE_SAMPLES = 4
#: queries per image of the gradient-free attack that stands in for gradient attacks on a model without a gradient path
FALLBACK_QUERIES = 1000
#: the checks key that records the fallback (see :func:`advlab.evaluation.checks.flags`)
FALLBACK_KEY = "gradient_free_fallback"
#: draws per forward of the EOT attack model, and draws per sample of the expected accuracy
EOT_DRAWS, ACCURACY_DRAWS = 16, 16
#: the checks key that records EOT
EOT_KEY = "eot"
#: the checks key that records attacks on log-probabilities
LOGPROB_KEY = "log_probabilities"
#: the prefix of the checks keys that record straight-through gradients (one key per op, see :func:`straight_through`)
BPDA_KEY = "bpda_"


def require_finite(logits: torch.Tensor, what: str = "clean inputs") -> None:
    """Raise ``AdvlabError`` when ``logits`` (N, K) hold NaN or Inf: no accuracy means anything then."""
    bad = ~torch.isfinite(logits.float()).all(1)
    if bool(bad.any()):
        raise AdvlabError(f"the model's outputs are NaN or infinite on {int(bad.sum())} of {len(logits)} {what}: "
                          "no accuracy can be measured; check the model (e.g. a division by zero or log of 0 in it)")  # fmt: skip


def gradient_path(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the model's outputs on a few samples of ``x`` (in [0, 1]) depend differentiably on the input:
    one forward with ``x`` requiring grad, the parameters frozen; False when no output has a ``grad_fn``."""
    xs = x[:PROBE_SAMPLES].detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad():
        out = model(xs)
    return bool(isinstance(out, torch.Tensor) and out.requires_grad)


def adapt(model: nn.Module, x: torch.Tensor, attacks: list[Attack], eps: float | None, norm: str | None) -> tuple[list[Attack], bool]:
    """``(attacks, fell_back)``: the attacks as given when the model has a gradient path at ``x``; otherwise the
    white-box ones replaced by one gradient-free Square attack in the same ball (the evaluation's ``eps``/``norm``,
    else the first white-box attack's own), placed where the first of them stood."""
    white = [a for a in attacks if a.white_box]
    if not white or gradient_path(model, x):
        return attacks, False
    own = getattr(white[0], "eps", None)
    e = eps if eps is not None else (max(own) if isinstance(own, (list, tuple)) else own)
    if e is None:
        raise AdvlabError("the model's outputs have no gradient path to the input, and no eps bounds a gradient-free "
                          "attack: give --eps (and --norm)")  # fmt: skip
    nm = norm or white[0].threat_norm
    if nm not in ("linf", "l2"):
        raise AdvlabError(f"the model's outputs have no gradient path to the input; the gradient-free fallback (Square) "
                          f"works in linf or l2, not {nm}")  # fmt: skip
    square = Square(eps=float(e), norm=nm, max_queries=FALLBACK_QUERIES, seed=getattr(white[0], "seed", 0))
    first = attacks.index(white[0])
    rest = [a for a in attacks if not a.white_box]
    return rest[:first] + [square] + rest[first:], True


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
        self.train(model.training)


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
    """What the evaluation did about the model, one line each (from the merged per-batch checks)."""
    out = []
    if checks.get(EOT_KEY, 0) > 0:
        out.append(f"the model is randomized: the attacks used EOT (the mean of {EOT_DRAWS} draws' probabilities per forward) "
                   f"with their full budget (no early stop), and the expected accuracy over {ACCURACY_DRAWS} fresh draws at each "
                   "sample's worst case is reported beside the single-draw one")  # fmt: skip
    if checks.get(LOGPROB_KEY, 0) > 0:
        out.append("the model outputs probabilities, not logits: the attacks used their logarithm as logits (the same "
                   "argmax; every success confirmed on the model)")  # fmt: skip
    ops = sorted(k[len(BPDA_KEY):] for k, v in checks.items() if k.startswith(BPDA_KEY) and v > 0)
    if ops:
        out.append(f"the model applies {', '.join(ops)} to its input: the attacks used straight-through gradients through "
                   "them (BPDA; forward unchanged, every success confirmed on the model)")  # fmt: skip
    return out


def fallback_flag(checks: dict[str, float]) -> list[str]:
    """The report line for :func:`adapt`'s fallback, when the checks recorded it."""
    if checks.get(FALLBACK_KEY, 0) <= 0:
        return []
    return [f"the model's outputs have no gradient path to the input (preprocessing outside autograd?): gradient attacks "
            f"were replaced by Square with {FALLBACK_QUERIES} queries per image, so the robust accuracy is an upper bound; "
            "give a differentiable twin of the model (attack_model=) for a white-box number"]  # fmt: skip


def trust(flags: list[str]) -> str:
    """``"high"`` when no check cast doubt on the number (no flag), else ``"low"``."""
    return "low" if flags else "high"
