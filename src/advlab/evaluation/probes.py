"""Measurements an evaluation takes of the model on a few samples before its first batch (the **probe**); what
to do about them is decided in :mod:`advlab.evaluation.diagnostics`.

Each function measures one property at ``x`` (a few [0, 1] images on the model's device) and returns it; none
changes the model (parameters frozen, modes as found):

* :func:`require_finite`: NaN or Inf outputs (refused: no accuracy means anything then);
* :func:`gradient_path`: whether the outputs depend differentiably on the input (straight-through gradients of
  :mod:`advlab.evaluation.bpda` counted);
* :func:`randomized`: whether two forwards on the same inputs differ;
* :func:`outputs_probabilities`: whether the outputs look like probabilities rather than logits;
* :func:`gradient_agreement`: how far the input gradients of a view of the model agree with finite differences
  (from it :func:`advlab.evaluation.diagnostics.failing_functions` decides which custom autograd Functions the
  attacks get their gradients through another way);
* :func:`grad_mode_gap`: how far the forward with autograd on (as attacks call it) differs from the forward under
  ``torch.no_grad`` (as a user calls it): a model that computes another function when it is being differentiated
  shows its attacks a decoy.
"""

from __future__ import annotations

import torch
from torch import nn

from advlab.attacks.base import frozen_parameters
from advlab.errors import AdvlabError
from advlab.evaluation import bpda, gradients
from advlab.evaluation.checks import is_probabilities

#: samples the probe looks at
PROBE_SAMPLES = 4
#: relative output difference (to 1 + the outputs' largest magnitude) above which two forwards count as different
DIFFERENT = 1e-5


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
    xs = x[:PROBE_SAMPLES].detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad():
        out = bpda.StraightThrough(model)(xs)
    return bool(isinstance(out, torch.Tensor) and out.requires_grad)


def relative_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / (1 + max |a|)`` in float32: how far two outputs of the model differ, relative to its scale."""
    a, b = a.float(), b.float()
    return float((a - b).abs().max()) / (1.0 + float(a.abs().max())) if a.numel() else 0.0


def randomized(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether two forwards on a few samples of ``x`` differ (:func:`relative_gap` above :data:`DIFFERENT`)."""
    with torch.no_grad():
        a, b = model(x[:PROBE_SAMPLES]), model(x[:PROBE_SAMPLES])
    return relative_gap(a, b) > DIFFERENT


def outputs_probabilities(model: nn.Module, x: torch.Tensor) -> bool:
    """Whether the outputs on a few samples of ``x`` look like probabilities
    (:func:`advlab.evaluation.checks.is_probabilities`)."""
    with torch.no_grad():
        return is_probabilities(model(x[:PROBE_SAMPLES]))


def grad_mode_gap(model: nn.Module, x: torch.Tensor) -> float:
    """:func:`relative_gap` between the forward on a few samples of ``x`` requiring grad (autograd on, as attacks
    call the model) and the forward under ``torch.no_grad`` (as a user calls it); 0 for an honest deterministic
    model. Only meaningful for a deterministic model (a randomized one differs between any two forwards)."""
    xs = x[:PROBE_SAMPLES].detach()
    with torch.no_grad():
        plain = model(xs)
    with frozen_parameters(model), torch.enable_grad():
        graded = model(xs.clone().requires_grad_(True))
    return relative_gap(plain, graded.detach())


def gradient_agreement(model: nn.Module, x: torch.Tensor) -> gradients.Disagreement:
    """Autograd's input gradients of ``model`` against finite differences at a few samples of ``x`` (in [0, 1]):
    :func:`advlab.evaluation.gradients.finite_difference_disagreement` at the clean points, each sample's runner-up
    margin against its clean prediction. Cost per sample: 26 forwards and 1 backward."""
    xs = x[:PROBE_SAMPLES].detach()
    with torch.no_grad():
        labels = model(xs).argmax(1)
    return gradients.finite_difference_disagreement(model, xs, labels)
