"""advlab.experiments.linearity: Goodfellow et al. 2015's linearity argument, checked exactly on a linear model.

Measured (digits:test, 599 images, FGSM on cross-entropy, accuracy at eps 0 / 0.02 / 0.05 / 0.1 / 0.2 / 0.3):
    linear (logistic regression, seeds 0-4)  0.965 / 0.93 / 0.80 / 0.47 / 0.01 / 0.00
    digits-cnn                               0.987 / 0.96 / 0.87 / 0.52 / 0.06 / 0.01
The linear model is below the CNN at every eps (by 0.03-0.07 up to eps 0.2): very vulnerable, as research note 004
says, but the ReLU CNN is nearly as vulnerable, which is Goodfellow's point that such networks are "too
linear". The median L-inf distance of a test digit to the linear model's nearest decision boundary is
0.068, about one grey level of the 17 (1/16 = 0.0625).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab import data, zoo
from advlab.attacks import FGSM
from advlab.defenses.training import accuracy
from advlab.experiments.linearity import (
    affine_map,
    fgsm_curve,
    fgsm_margin_shift,
    linear_digits_model,
    linear_flip_eps,
)

EPS = [0.0, 0.02, 0.05, 0.1, 0.2, 0.3]


@pytest.fixture(scope="module")
def linear() -> nn.Module:
    return linear_digits_model(seed=0)


@pytest.fixture(scope="module")
def digits_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    return data.load("digits:test")


def _correct_interior(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The digits squeezed into [0.1, 0.9] (a step of eps <= 0.1 is never clipped), those still classified right."""
    xi = x * 0.8 + 0.1
    with torch.no_grad():
        keep = model(xi).argmax(1) == y
    assert keep.float().mean() > 0.7
    return xi[keep], y[keep]


def test_linear_model_is_a_good_logistic_regression(
    linear: nn.Module, digits_test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_test_split
    assert isinstance(linear[1], nn.Linear) and linear[1].weight.shape == (10, 64) and not linear.training
    assert accuracy(linear, x, y) >= 0.93  # measured 0.963-0.968 over seeds 0-4
    w, b = affine_map(linear, (1, 8, 8))
    assert torch.equal(w, linear[1].weight.detach()) and torch.allclose(b, linear[1].bias.detach())
    again = linear_digits_model(seed=0)
    assert torch.equal(again[1].weight, linear[1].weight)  # deterministic


def test_fgsm_moves_a_logit_difference_by_eps_times_l1_of_the_weight_difference(
    linear: nn.Module, digits_test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """z = Wx + b; targeted FGSM on the margin z_t - max_{j != t} z_j (= z_t - z_y on a correct sample) steps by
    eps * sign(w_t - w_y), so z_t - z_y grows by exactly eps * ||w_t - w_y||_1 when no pixel is clipped."""
    w, b = affine_map(linear, (1, 8, 8))
    x, y = _correct_interior(linear, *digits_test_split)
    with torch.no_grad():
        z0 = linear(x)
    t = z0.scatter(1, y[:, None], float("-inf")).argmax(1)  # the runner-up class
    eps = 0.1
    x_adv = FGSM(eps=eps, loss="margin")(linear, x, y, target=t).x_adv
    step = eps * torch.sign(w[t] - w[y]).view_as(x)
    assert torch.allclose(x_adv - x, step, atol=1e-6)  # the step is exactly eps * sign(w_t - w_y)
    with torch.no_grad():
        z1 = linear(x_adv)
    gain = (
        z1.gather(1, t[:, None]) - z1.gather(1, y[:, None]) - z0.gather(1, t[:, None]) + z0.gather(1, y[:, None])
    ).squeeze(1)
    predicted = fgsm_margin_shift(w, y, t, eps)
    assert torch.allclose(gain, predicted, rtol=1e-4, atol=1e-3)
    assert float(predicted.min()) > 3.0  # measured: about 7.6 logits from a 0.1 step on 64 pixels

    # on the raw digits (many pixels at 0 or 1) the box clips: the gain is (w_t - w_y) . (x_adv - x), below the bound
    xr, yr = digits_test_split
    with torch.no_grad():
        keep = linear(xr).argmax(1) == yr
        xr, yr = xr[keep], yr[keep]
        zr = linear(xr)
    tr = zr.scatter(1, yr[:, None], float("-inf")).argmax(1)
    xa = FGSM(eps=eps, loss="margin")(linear, xr, yr, target=tr).x_adv
    with torch.no_grad():
        za = linear(xa)
    g = (
        za.gather(1, tr[:, None]) - za.gather(1, yr[:, None]) - zr.gather(1, tr[:, None]) + zr.gather(1, yr[:, None])
    ).squeeze(1)
    exact = ((w[tr] - w[yr]) * (xa - xr).flatten(1)).sum(1)
    assert torch.allclose(g, exact, rtol=1e-4, atol=1e-3)
    bound = fgsm_margin_shift(w, yr, tr, eps)
    assert (g <= bound + 1e-3).all() and float((g < 0.9 * bound).float().mean()) > 0.5


def test_flip_eps_is_the_linf_distance_to_the_nearest_boundary(
    linear: nn.Module, digits_test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    w, b = affine_map(linear, (1, 8, 8))
    x, y = _correct_interior(linear, *digits_test_split)
    flip = linear_flip_eps(w, b, x, y)
    keep = flip < 0.099  # steps of up to 0.099 * 1.01 stay inside [0, 1] from [0.1, 0.9]
    x, y, flip = x[keep], y[keep], flip[keep]
    assert len(y) > 100
    z = x.flatten(1) @ w.T + b
    ratio = (z.gather(1, y[:, None]) - z) / (w[y][:, None] - w[None]).abs().sum(2)
    t = ratio.scatter(1, y[:, None], float("inf")).argmin(1)  # the class whose boundary is nearest
    for scale, flipped in ((0.99, False), (1.01, True)):
        eps = (flip * scale).view(-1, 1, 1, 1)
        x_adv = x + eps * torch.sign(w[t] - w[y]).view_as(x)
        with torch.no_grad():
            pred = linear(x_adv).argmax(1)
        assert bool(((pred != y) == flipped).all()), scale
    raw = linear_flip_eps(w, b, *digits_test_split)
    assert 0.04 < float(raw.median()) < 0.1  # measured 0.068: about one of the 16 grey-level steps


def test_fgsm_curve_is_a_plain_fgsm_step_per_eps(
    linear: nn.Module, digits_test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_test_split
    curve = fgsm_curve(linear, x, y, [0.0, 0.05])
    assert [e for e, _ in curve] == [0.0, 0.05] and curve[0][1] == accuracy(linear, x, y)
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(linear(xg), y, reduction="sum"), xg)
    with torch.no_grad():
        by_hand = float((linear((x + 0.05 * g.sign()).clamp(0, 1)).argmax(1) == y).float().mean())
    assert curve[1][1] == pytest.approx(by_hand, abs=1.5 / len(y))  # float ties may differ on a sample at most


def test_linear_model_falls_faster_than_the_cnn(
    linear: nn.Module, digits_test_split: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits_test_split
    lin = dict(fgsm_curve(linear, x, y, EPS))
    cnn = dict(fgsm_curve(zoo.load("digits-cnn"), x, y, EPS))
    assert all(lin[a] >= lin[b] for a, b in zip(EPS, EPS[1:], strict=False))  # monotone for the linear model
    assert lin[0.1] < 0.6 and lin[0.2] <= 0.05 and lin[0.3] <= 0.01
    assert cnn[0.0] > 0.97 and cnn[0.2] < 0.2  # the CNN is vulnerable too
    assert all(lin[e] <= cnn[e] for e in EPS)  # but the linear model is below it everywhere
    assert lin[0.05] < cnn[0.05] - 0.03 and lin[0.2] < cnn[0.2]


def test_bad_eps_raises(linear: nn.Module, digits_test_split: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits_test_split
    for eps, message in (
        ([0.1, -0.1], r"eps must be in \[0, 1\].*-0.1"),
        ([1.5], r"got 1.5"),
        ([], "eps_list is empty"),
    ):
        with pytest.raises(ValueError, match=message):
            fgsm_curve(linear, x[:4], y[:4], eps)
