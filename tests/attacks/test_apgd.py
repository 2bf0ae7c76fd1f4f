"""APGD / APGD-T: at least as strong as PGD at the same budget, and not fooled by saturated softmax."""

from __future__ import annotations

import torch
from torch import nn

from advlab import attacks
from advlab.attacks.apgd import checkpoints
from advlab.threat import distance


class Scaled(nn.Module):
    """The same classifier with logits x1000: identical predictions, softmax saturated, CE gradients ~0."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * 1000


def test_checkpoints_follow_the_paper() -> None:
    w = checkpoints(100)
    assert w[0] == 22 and w == sorted(w) and w[-1] <= 100
    gaps = [b - a for a, b in zip(w, w[1:])]
    assert all(g >= 6 for g in gaps) and gaps == sorted(gaps, reverse=True)  # shrinking, at least 0.06 N apart


def test_apgd_is_at_least_as_strong_as_pgd_with_the_same_budget(digits_model, digits_batch) -> None:
    x, y = digits_batch
    pgd = attacks.PGD(eps=0.1, steps=40)(digits_model, x, y)
    apgd = attacks.APGD(eps=0.1, steps=40)(digits_model, x, y)
    assert apgd.gradient_evaluations == pgd.gradient_evaluations
    assert apgd.success_rate >= pgd.success_rate
    assert (distance(apgd.x_adv - x, "linf") <= 0.1 + 1e-6).all()
    assert float(apgd.x_adv.min()) >= 0 and float(apgd.x_adv.max()) <= 1
    with torch.no_grad():
        assert torch.equal(digits_model(apgd.x_adv).argmax(1) != y, apgd.success)


def test_dlr_and_targeted_apgd_are_not_fooled_by_scaled_logits(digits_model, digits_batch) -> None:
    x, y = digits_batch
    scaled = Scaled(digits_model).eval()
    ce_plain = attacks.PGD(eps=0.1, steps=30)(digits_model, x, y).success_rate
    ce_scaled = attacks.PGD(eps=0.1, steps=30)(scaled, x, y).success_rate
    assert ce_scaled < ce_plain / 3  # the gradient-masking failure the reliable preset must avoid
    for atk in [attacks.APGD(eps=0.1, steps=30, loss="dlr"), attacks.APGDT(eps=0.1, steps=30, n_targets=3)]:
        plain = atk(digits_model, x, y)
        masked = atk(scaled, x, y)
        assert masked.success_rate >= ce_plain * 0.9, type(atk).__name__
        assert abs(masked.success_rate - plain.success_rate) <= 2 / len(x)  # DLR is scale invariant


def test_targeted_apgd_hits_given_targets(digits_model, digits_batch) -> None:
    x, y = digits_batch
    t = (y + 1) % 10
    res = attacks.APGD(eps=0.3, steps=30, loss="dlr")(digits_model, x, y, target=t)
    assert torch.equal(res.success, res.prediction == t)
    assert res.success_rate > 0.9
