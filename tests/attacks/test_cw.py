"""Carlini-Wagner L2: real successes, in [0, 1], smaller than FGSM's, targets hit, failures untouched."""

from __future__ import annotations

import pytest
import torch

from advlab import attacks
from advlab.losses import margin
from tests.attacks.helpers import check_png_roundtrip, check_result

N = 40  # a subset of the digits batch keeps the file fast
FAST = {"steps": 50, "binary_search_steps": 4, "lr": 0.05}  # enough on 8x8 digits (the defaults spend 1000 steps)


@pytest.fixture(scope="module")
def batch(digits_batch) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_batch
    return x[:N], y[:N]


@pytest.fixture(scope="module")
def untargeted(digits_model, batch) -> attacks.AttackResult:
    x, y = batch
    return attacks.CW(**FAST)(digits_model, x, y)


def _check(res: attacks.AttackResult, model: torch.nn.Module, x: torch.Tensor) -> None:
    check_result(res, model, x)
    # samples never broken come back exactly unchanged
    assert torch.equal(res.x_adv[~res.success], x[~res.success])


def test_untargeted_changes_predictions_with_small_l2(untargeted, digits_model, batch) -> None:
    x, y = batch
    res = untargeted
    _check(res, digits_model, x)
    assert torch.equal(res.success, res.prediction != y)
    assert res.success_rate >= 0.95
    assert float(res.l2[res.success].median()) < 0.7  # FGSM needs about 1 (see below)
    # one forward and one backward per Adam step, at most steps per round
    assert torch.equal(res.forwards, res.backwards)
    assert (res.forwards > 0).all() and (res.forwards <= FAST["steps"] * FAST["binary_search_steps"]).all()


def test_smaller_than_fgsm_for_the_same_successes(untargeted, digits_model, batch) -> None:
    """The point of a minimum-norm attack: where FGSM (L2, eps = 1) and C&W both succeed, C&W's changes are smaller."""
    x, y = batch
    fgsm = attacks.FGSM(eps=1.0, norm="l2")(digits_model, x, y)
    both = fgsm.success & untargeted.success
    assert int(both.sum()) >= N // 2
    cw_med, fgsm_med = float(untargeted.l2[both].median()), float(fgsm.l2[both].median())
    assert cw_med < 0.75 * fgsm_med, (cw_med, fgsm_med)
    assert (untargeted.l2[both] <= fgsm.l2[both] + 1e-6).float().mean() >= 0.9


def test_targeted_hits_the_targets(digits_model, batch) -> None:
    x, y = batch[0][:20], batch[1][:20]
    t = (y + 1) % 10
    res = attacks.CW(**FAST)(digits_model, x, y, target=t)
    _check(res, digits_model, x)
    assert torch.equal(res.target, t)
    assert torch.equal(res.success, res.prediction == t)
    assert res.success_rate >= 0.9


def test_more_binary_search_rounds_never_give_larger_perturbations(digits_model, batch) -> None:
    """The first rounds are the same computation, and the best point is kept across rounds."""
    x, y = batch
    few = attacks.CW(steps=30, binary_search_steps=2, lr=0.05)(digits_model, x, y)
    more = attacks.CW(steps=30, binary_search_steps=4, lr=0.05)(digits_model, x, y)
    assert (more.success | ~few.success).all()
    assert (more.l2[few.success] <= few.l2[few.success] + 1e-6).all()
    assert float(more.l2[more.success].median()) <= float(few.l2[few.success].median())
    assert (more.forwards >= few.forwards).all()


def test_failures_come_back_unchanged_and_kappa_buys_confidence(untargeted, digits_model, batch) -> None:
    x, y = batch
    short = attacks.CW(steps=8, binary_search_steps=1, lr=0.05)(digits_model, x, y)
    assert 0 < short.success_rate < 1  # some broken, some not
    _check(short, digits_model, x)
    with torch.no_grad():
        clean = digits_model(x)
    assert torch.equal(short.logits[~short.success], clean[~short.success])
    assert (short.l2[~short.success] == 0).all() and (short.l0[~short.success] == 0).all()

    x, y = x[:20], y[:20]
    sure = attacks.CW(**FAST, kappa=5.0)(digits_model, x, y)
    _check(sure, digits_model, x)
    assert sure.success_rate >= 0.9
    assert (margin(sure.logits[sure.success], y[sure.success]) >= 5.0 - 1e-4).all()  # the wrong class leads by 5
    both = sure.success & untargeted.success[:20]
    assert float(sure.l2[both].median()) > float(untargeted.l2[:20][both].median())


def test_quantized_results_are_on_the_8bit_grid_and_adversarial(digits_model, batch) -> None:
    x, y = batch[0][:20], batch[1][:20]
    x = (x * 255).round() / 255
    res = attacks.CW(**FAST, quantize=True)(digits_model, x, y)
    _check(res, digits_model, x)
    check_png_roundtrip(res, digits_model, y, targeted=False)
    assert res.success_rate >= 0.9


def test_deterministic(digits_model, batch) -> None:
    x, y = batch
    a = attacks.CW(steps=10, binary_search_steps=2)(digits_model, x[:8], y[:8])
    b = attacks.CW(steps=10, binary_search_steps=2)(digits_model, x[:8], y[:8])
    assert torch.equal(a.x_adv, b.x_adv) and torch.equal(a.forwards, b.forwards)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"c": 0.0}, "c must be positive"),
        ({"kappa": -1.0}, "kappa must be >= 0"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"binary_search_steps": 0}, "binary_search_steps must be >= 1"),
        ({"lr": -0.1}, "lr must be positive"),
    ],
)
def test_bad_settings_raise(kwargs: dict, match: str, digits_model, batch) -> None:
    x, y = batch
    with pytest.raises(ValueError, match=match):
        attacks.CW(**kwargs)(digits_model, x[:2], y[:2])
