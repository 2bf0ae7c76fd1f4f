"""DeepFool: real successes, smaller than FGSM's, the paper's closed form on a linear model, honest counts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import attacks
from advlab.threat import distance
from tests.attacks.helpers import check_png_roundtrip, check_result


@pytest.fixture(scope="module")
def l2_result(digits_model, digits_batch) -> attacks.AttackResult:
    x, y = digits_batch
    return attacks.DeepFool()(digits_model, x, y)


def _check(res: attacks.AttackResult, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    check_result(res, model, x)
    assert torch.equal(res.success, res.prediction != y)
    assert torch.equal(res.x_adv[~res.success], x[~res.success])  # never broken: unchanged
    assert res.target is None


def test_untargeted_changes_predictions(l2_result, digits_model, digits_batch) -> None:
    x, y = digits_batch
    res = l2_result
    _check(res, digits_model, x, y)
    assert res.success_rate >= 0.95
    assert torch.allclose(res.l2, distance(res.x_adv - x, "l2"))


def test_counts_one_forward_and_k_backwards_per_linearization(l2_result, digits_model, digits_batch) -> None:
    """Per sample: 1 clean forward, then per linearization 1 forward + K = 10 backwards and 1 forward on the new
    iterate."""
    res = l2_result
    steps = res.backwards // 10
    assert (res.backwards == 10 * steps).all() and (steps >= 1).all() and (steps <= 50).all()
    assert torch.equal(res.forwards, 1 + 2 * steps)
    x, y = digits_batch
    few = attacks.DeepFool(candidates=3)(digits_model, x[:20], y[:20])  # K = 3: the true class and 2 others
    steps = few.backwards // 3
    assert (few.backwards == 3 * steps).all() and torch.equal(few.forwards, 1 + 2 * steps)
    assert few.success_rate >= 0.9


def test_smaller_than_fgsm_for_the_same_successes(l2_result, digits_model, digits_batch) -> None:
    """Where FGSM (L2, eps = 1) and DeepFool both succeed, DeepFool's perturbations are much smaller."""
    x, y = digits_batch
    fgsm = attacks.FGSM(eps=1.0, norm="l2")(digits_model, x, y)
    both = fgsm.success & l2_result.success
    assert int(both.sum()) >= len(x) // 2
    df_med, fgsm_med = float(l2_result.l2[both].median()), float(fgsm.l2[both].median())
    assert df_med < 0.75 * fgsm_med, (df_med, fgsm_med)


def test_linf_version_is_smaller_than_fgsm_in_linf(digits_model, digits_batch) -> None:
    x, y = digits_batch
    x, y = x[:60], y[:60]
    res = attacks.DeepFool(norm="linf")(digits_model, x, y)
    _check(res, digits_model, x, y)
    assert res.success_rate >= 0.95
    fgsm = attacks.FGSM(eps=0.2)(digits_model, x, y)
    both = fgsm.success & res.success
    assert int(both.sum()) >= len(x) // 2
    assert float(res.linf[both].median()) < 0.75 * float(fgsm.linf[both].median())


def test_linear_binary_model_gets_the_closed_form() -> None:
    """For f(x) = z_1 - z_0 = w.x + b, the minimal L2 perturbation is |f(x)| / ||w||_2 along -+w (the paper's
    eq. 3); DeepFool reaches it in one linearization, scaled by 1 + overshoot (and for L-inf: |f| / ||w||_1)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 2))
    x = 0.5 + 0.02 * torch.randn(16, 1, 8, 8)  # mid-box: no clipping
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    lin = model[1]
    w = (lin.weight[1] - lin.weight[0]).detach()
    f = (z[:, 1] - z[:, 0]).abs()
    res = attacks.DeepFool(overshoot=0.02)(model, x, y)
    assert res.success.all()
    assert float(res.x_adv.min()) > 0 and float(res.x_adv.max()) < 1
    assert torch.allclose(res.l2, 1.02 * f / w.norm(), rtol=1e-4, atol=1e-3)
    delta = (res.x_adv - x).flatten(1)
    cos = (delta @ w) / (delta.norm(dim=1) * w.norm())
    assert torch.allclose(cos.abs(), torch.ones(16), atol=1e-4)  # orthogonal to the boundary
    assert (res.backwards == 2).all() and (res.forwards == 3).all()  # one linearization, K = 2
    inf = attacks.DeepFool(norm="linf", overshoot=0.0)(model, x, y)
    assert torch.allclose(inf.linf, f / w.abs().sum(), rtol=1e-4, atol=1e-3)


def test_quantized_results_are_on_the_8bit_grid_and_adversarial(digits_model, digits_batch) -> None:
    x, y = digits_batch
    x = (x[:60] * 255).round() / 255
    y = y[:60]
    res = attacks.DeepFool(quantize=True)(digits_model, x, y)
    _check(res, digits_model, x, y)
    check_png_roundtrip(res, digits_model, y, targeted=False)
    assert res.success_rate >= 0.95


def test_already_misclassified_samples_cost_one_forward(digits_model, digits_batch) -> None:
    x, y = digits_batch
    wrong = (y[:10] + 1) % 10  # "labels" the model already disagrees with
    res = attacks.DeepFool()(digits_model, x[:10], wrong)
    assert res.success.all() and torch.equal(res.x_adv, x[:10])
    assert (res.forwards == 1).all() and (res.backwards == 0).all()


def test_targets_and_bad_settings_raise(digits_model, digits_batch) -> None:
    x, y = digits_batch
    with pytest.raises(ValueError, match="DeepFool is untargeted"):
        attacks.DeepFool()(digits_model, x[:2], y[:2], target=3)
    for kwargs, match in [
        ({"steps": 0}, "steps must be >= 1"),
        ({"overshoot": -0.1}, "overshoot must be >= 0"),
        ({"candidates": 1}, "candidates must be >= 2"),
        ({"norm": "l1"}, "norm must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            attacks.DeepFool(**kwargs)(digits_model, x[:2], y[:2])
