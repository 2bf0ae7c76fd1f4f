"""The one place where per-sample outcomes become rates: every caller (``evaluate``, the study, the transfer
matrix, ``advlab attack``, the reports) computes its numbers with these functions.

Inputs are per-sample tensors of one length N (any device; they are compared, never modified):
``y`` the labels (-1 marks an unlabelled sample), ``clean_pred``/``adv_pred`` the predicted classes on the clean
and the adversarial input, ``success``/``attacked`` booleans. With L = {i: y_i >= 0} the labelled samples and
C = {i in L: clean_pred_i = y_i} the clean-correct ones:

    clean_accuracy             = |C| / |L|
    robust_accuracy            = |{i in C: adv_pred_i = y_i}| / |L|       (seed 003's "remnant accuracy")
    attack_success_rate        = |{i: success_i and attacked_i}| / |{i: attacked_i}|
    strict_attack_success_rate = |{i in C: adv_pred_i != y_i}| / |C|       (correct -> wrong)
    prediction_change_rate     = |{i: adv_pred_i != clean_pred_i}| / N

A rate whose denominator is empty is 0.0 (nothing was measured, nothing was fooled). ``success`` is the
attack's own goal: untargeted, the prediction left the label (or the clean prediction); targeted, it hit the
target; so the same function serves both. Robust accuracy counts a sample only when it is right on the clean
input AND on the adversarial one: a sample the model gets wrong clean is never robust, even if the attack
happens to move it onto its label.
"""

from __future__ import annotations

import torch


def _count(mask: torch.Tensor) -> int:
    return int(mask.sum())


def _ratio(k: int, n: int) -> float:
    return k / n if n else 0.0


def labelled(y: torch.Tensor) -> torch.Tensor:
    """L: the samples with a label (``y >= 0``), as a bool tensor."""
    return y >= 0


def clean_correct(y: torch.Tensor, clean_pred: torch.Tensor) -> torch.Tensor:
    """C: labelled samples predicted correctly on the clean input, as a bool tensor."""
    return (clean_pred == y) & labelled(y)


def robust(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> torch.Tensor:
    """Per sample: clean-correct and still correct on the adversarial input (the numerator of robust accuracy)."""
    return clean_correct(y, clean_pred) & (adv_pred == y)


def fooled(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> torch.Tensor:
    """Per sample: clean-correct and wrong on the adversarial input (correct -> wrong; the numerator of the
    strict success rate, and of a transfer matrix's cells)."""
    return clean_correct(y, clean_pred) & (adv_pred != y)


def clean_accuracy(y: torch.Tensor, clean_pred: torch.Tensor) -> float:
    """|C| / |L|: the fraction of the labelled samples predicted correctly on clean inputs."""
    return _ratio(_count(clean_correct(y, clean_pred)), _count(labelled(y)))


def robust_accuracy(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """|{i in C: adv_pred_i = y_i}| / |L|: correct on the clean AND on the adversarial input, over labelled samples."""
    return _ratio(_count(robust(y, clean_pred, adv_pred)), _count(labelled(y)))


def attack_success_rate(success: torch.Tensor, attacked: torch.Tensor | None = None) -> float:
    """|success and attacked| / |attacked| (``attacked=None``: every sample was attacked, the rate is over N).

    ``success`` is the attack's goal per sample (untargeted: the prediction changed away from the label or
    the clean prediction; targeted: the prediction equals the target)."""
    success = success.bool()
    over = torch.ones_like(success) if attacked is None else attacked.bool()
    return _ratio(_count(success & over), _count(over))


def strict_attack_success_rate(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """|{i in C: adv_pred_i != y_i}| / |C|: of the clean-correct samples, the fraction the attack made wrong."""
    return _ratio(_count(fooled(y, clean_pred, adv_pred)), _count(clean_correct(y, clean_pred)))


def prediction_change_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """|{i: adv_pred_i != clean_pred_i}| / N: over every sample, labelled or not."""
    return _ratio(_count(adv_pred != clean_pred), len(clean_pred))


def expected_accuracy(values: torch.Tensor, y: torch.Tensor) -> float:
    """sum_{i in L} values_i / |L|: an accuracy from per-sample expected correctness in [0, 1] (the fraction of a
    randomized model's draws in which the sample is right), over labelled samples."""
    lab = labelled(y)
    return _ratio(0, 0) if not bool(lab.any()) else float(values.double()[lab].sum()) / _count(lab)


def norm_stats(values: torch.Tensor) -> dict[str, float | None]:
    """``{"mean", "median"}`` of ``values`` (e.g. the L-inf norms of the successful perturbations, in [0, 1]
    pixel units), in float64; both None when ``values`` is empty. The median is the lower one for an even count."""
    if values.numel() == 0:
        return {"mean": None, "median": None}
    v = values.detach().double().flatten()
    return {"mean": float(v.mean()), "median": float(v.median())}


def mean_or_none(values: torch.Tensor) -> float | None:
    """The mean of ``values`` in float64 (e.g. softmax confidences in [0, 1]); None when empty."""
    return float(values.detach().double().mean()) if values.numel() else None


def confidence(logits: torch.Tensor, classes: torch.Tensor | None = None) -> torch.Tensor:
    """Per sample, the softmax probability (in [0, 1], computed in float32) of ``classes`` (N,), or of the
    top class when ``classes`` is None."""
    p = logits.float().softmax(1)
    return p.amax(1) if classes is None else p.gather(1, classes.long()[:, None]).squeeze(1)


def rates(
    y: torch.Tensor,
    clean_pred: torch.Tensor,
    adv_pred: torch.Tensor,
    success: torch.Tensor | None = None,
    attacked: torch.Tensor | None = None,
) -> dict[str, float]:
    """Every rate above as a dict (``attack_success_rate`` needs ``success``; otherwise it is left out)."""
    out = {
        "clean_accuracy": clean_accuracy(y, clean_pred),
        "robust_accuracy": robust_accuracy(y, clean_pred, adv_pred),
        "strict_attack_success_rate": strict_attack_success_rate(y, clean_pred, adv_pred),
        "prediction_change_rate": prediction_change_rate(clean_pred, adv_pred),
    }
    if success is not None:
        out["attack_success_rate"] = attack_success_rate(success, attacked)
    return out


__all__ = [
    "attack_success_rate",
    "clean_accuracy",
    "clean_correct",
    "confidence",
    "expected_accuracy",
    "fooled",
    "labelled",
    "mean_or_none",
    "norm_stats",
    "prediction_change_rate",
    "rates",
    "robust",
    "robust_accuracy",
    "strict_attack_success_rate",
]
