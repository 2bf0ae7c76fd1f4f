"""The one place where per-sample outcomes become rates: every caller (``evaluate``, the study, the transfer
matrix, ``advlab attack``, the reports) computes its numbers with these functions.

Inputs are per-sample tensors of one length N (any device; they are compared, never modified):
``y`` the labels (-1 marks an unlabelled sample), ``clean_pred``/``adv_pred`` the predicted classes on the clean
and the adversarial input, ``success``/``attacked`` booleans. With L = {i: y_i >= 0} the labelled samples and
C = {i in L: clean_pred_i = y_i} the clean-correct ones:

    accuracy                   = |{i in L: pred_i = y_i}| / |L|            (on any input: clean, adversarial, noisy)
    top_k_accuracy             = |{i in L: y_i in top_i}| / |L|            (top_i: the k most likely classes)
    clean_accuracy             = |C| / |L|
    robust_accuracy            = |{i in C: adv_pred_i = y_i}| / |L|       (research note 003's "remnant accuracy")
    attack_success_rate        = |{i: success_i and attacked_i}| / |{i: attacked_i}|
    strict_attack_success_rate = |{i in C: adv_pred_i != y_i}| / |C|       (correct -> wrong)
    prediction_change_rate     = |{i: adv_pred_i != clean_pred_i}| / N
    rate                       = |{i: mask_i and over_i}| / |{i: over_i}|  (the count every rate above is)

From per-sample minimal adversarial distances d_i (inf where no adversarial was found) and the clean-correct mask
(the samples' own, over N samples): robust_accuracy_curve(eps) = |{i: correct_i and d_i > eps}| / N, and its area
from 0 to eps_max, (1/N) sum_i correct_i min(d_i, eps_max).

A rate whose denominator is empty is 0.0 (nothing was measured, nothing was fooled). ``success`` is the
attack's own goal: untargeted, the prediction left the label (or the clean prediction); targeted, it hit the
target; so the same function serves both. Robust accuracy counts a sample only when it is right on the clean
input AND on the adversarial one: a sample the model gets wrong clean is never robust, even if the attack
happens to move it onto its label.
"""

from __future__ import annotations

import math

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


def rate(mask: torch.Tensor, over: torch.Tensor | None = None) -> float:
    """|{i: mask_i and over_i}| / |{i: over_i}|: the fraction of the samples counted ``over`` (None: all N) where
    ``mask`` holds; 0.0 when ``over`` counts nothing. Every rate of this module is one of these."""
    mask = mask.bool()
    over = torch.ones_like(mask) if over is None else over.bool()
    return _ratio(_count(mask & over), _count(over))


def accuracy(y: torch.Tensor, pred: torch.Tensor) -> float:
    """|{i in L: pred_i = y_i}| / |L|: the fraction of the labelled samples whose prediction ``pred`` (on any
    input: clean, adversarial, noisy) is their label. On the clean predictions it is :func:`clean_accuracy`."""
    return rate(pred == y, labelled(y))


def top_k_accuracy(y: torch.Tensor, top_classes: torch.Tensor) -> float:
    """|{i in L: y_i in {top_i1, ..., top_ik}}| / |L|: the fraction of the labelled samples whose label is among
    their k most likely classes ``top_classes`` (N, k), e.g. ``logits.topk(k, dim=1).indices``; k = 1 is
    :func:`accuracy` of the top class."""
    return rate((top_classes == y[:, None]).any(1), labelled(y))


def hit_target(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per sample: ``pred_i = target_i``, the success of a targeted attack or prototype (a bool tensor; its sum
    is the count of targets reached, its mean the targeted success rate)."""
    return pred == target


def clean_accuracy(y: torch.Tensor, clean_pred: torch.Tensor) -> float:
    """|C| / |L|: the fraction of the labelled samples predicted correctly on clean inputs (:func:`accuracy` of the
    clean predictions)."""
    return accuracy(y, clean_pred)


def robust_accuracy(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """|{i in C: adv_pred_i = y_i}| / |L|: correct on the clean AND on the adversarial input, over labelled samples."""
    return _ratio(_count(robust(y, clean_pred, adv_pred)), _count(labelled(y)))


def attack_success_rate(success: torch.Tensor, attacked: torch.Tensor | None = None) -> float:
    """|success and attacked| / |attacked| (``attacked=None``: every sample was attacked, the rate is over N).

    ``success`` is the attack's goal per sample (untargeted: the prediction changed away from the label or
    the clean prediction; targeted: the prediction equals the target)."""
    return rate(success, attacked)


def strict_attack_success_rate(y: torch.Tensor, clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """|{i in C: adv_pred_i != y_i}| / |C|: of the clean-correct samples, the fraction the attack made wrong."""
    return _ratio(_count(fooled(y, clean_pred, adv_pred)), _count(clean_correct(y, clean_pred)))


def prediction_change_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """|{i: adv_pred_i != clean_pred_i}| / N: over every sample, labelled or not."""
    return _ratio(_count(adv_pred != clean_pred), len(clean_pred))


def robust_accuracy_curve(distances: torch.Tensor, correct: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """RA(eps_j) = |{i: correct_i and d_i > eps_j}| / N for each eps_j of ``eps`` (E,), as an (E,) float64 tensor
    on the CPU: robust accuracy at every eps at once from per-sample minimal distances ``distances`` (N,) (the
    norm of each sample's smallest adversarial perturbation, in [0, 1] pixel units; inf where none was found)
    and the clean-correct mask ``correct`` (N,). A sample at exactly d_i = eps_j is broken at eps_j. All zeros
    for N = 0."""
    ok = correct.bool().cpu()[:, None] & (distances.cpu()[:, None] > eps.cpu()[None, :])
    return ok.sum(0).double() / len(ok) if len(ok) else torch.zeros(len(eps), dtype=torch.float64)


def robust_accuracy_area(distances: torch.Tensor, correct: torch.Tensor, eps_max: float) -> float:
    """A = int_0^eps_max RA(eps) d eps = (1/N) sum_i correct_i min(d_i, eps_max): the area under
    :func:`robust_accuracy_curve` from 0 to ``eps_max`` (exact for the step curve), in the distances' units;
    A / eps_max is the mean robust accuracy on [0, eps_max]. 0.0 for N = 0."""
    d = distances.cpu().double()
    d = torch.where(correct.bool().cpu(), d.clamp(max=eps_max), torch.zeros_like(d))
    return float(d.mean()) if len(d) else 0.0


def expected_accuracy(values: torch.Tensor, y: torch.Tensor) -> float:
    """sum_{i in L} values_i / |L|: an accuracy from per-sample expected correctness in [0, 1] (the fraction of a
    randomized model's draws in which the sample is right), over labelled samples."""
    lab = labelled(y)
    return _ratio(0, 0) if not bool(lab.any()) else float(values.double()[lab].sum()) / _count(lab)


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate of ``k`` hits in ``n`` samples (95% for z = 1.96; Wilson 1927): with
    p = k / n, (p + z^2 / 2n -+ z sqrt(p (1 - p) / n + z^2 / 4n^2)) / (1 + z^2 / n), clipped to [0, 1]. Unlike the
    normal approximation it stays inside [0, 1] and is not empty at p = 0 or 1 (0 of 10: [0, 0.278]). (0.0, 1.0)
    for n = 0: nothing was measured."""
    if n <= 0:
        return (0.0, 1.0)
    p, zz = k / n, z * z
    centre = (p + zz / (2 * n)) / (1 + zz / n)
    half = z * math.sqrt(p * (1 - p) / n + zz / (4 * n * n)) / (1 + zz / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


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
    "accuracy",
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
    "rate",
    "rates",
    "robust",
    "robust_accuracy",
    "robust_accuracy_area",
    "robust_accuracy_curve",
    "strict_attack_success_rate",
    "top_k_accuracy",
    "wilson_interval",
]
