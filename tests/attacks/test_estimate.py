"""The query-based gradient estimate shared by NES and SPSA (``advlab.attacks.blackbox.estimate``): on a linear
model it points along the true gradient as closely as its sample count allows, the antithetic pairs cancel the
loss's constant, every probe is counted on its own row, and the loop spends exactly the query budget."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab import attacks
from advlab.attacks.base import Oracle
from advlab.attacks.blackbox.estimate import check_ball, estimate_gradient
from advlab.attacks.draws import ESTIMATE_STREAM, SampleDraws

D = 64  # pixels per image (1 x 8 x 8)
PAIRS = 100  # antithetic pairs per estimate


def _linear_model() -> tuple[nn.Module, torch.Tensor]:
    """A 10-class linear model z = W x + b on 8x8 images, and its weights W (10, 64)."""
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(D, 10)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(10, D, generator=gen))
        lin.bias.copy_(torch.randn(10, generator=gen))
    return nn.Sequential(nn.Flatten(), lin).eval(), lin.weight.detach().clone()


def _images(n: int) -> torch.Tensor:
    """Images in [0.25, 0.75]: probes x +- sigma u with a small sigma are never clipped to [0, 1]."""
    return 0.25 + 0.5 * torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def _cosine_floor(pairs: int, dim: int, sds: float = 5.0) -> float:
    """A floor for the cosine between the estimate and the true gradient of a linear loss.

    With Gaussian directions u_i the estimate is g = (1/n) sum_i (w . u_i) u_i exactly, and splitting each u_i into
    its part along w and the rest gives cos^2(g, w) = X / (X + Y) with X ~ chi2(n), Y ~ chi2(dim - 1) independent:
    cos^2 ~ Beta(n / 2, (dim - 1) / 2), mean n / (n + dim - 1). The floor is that mean less ``sds`` standard
    deviations (n = 100, dim = 64: mean cos 0.78, floor 0.58; a random direction has |cos| ~ 1 / sqrt(dim) = 0.125).
    """
    a, b = pairs / 2, (dim - 1) / 2
    mean = a / (a + b)
    sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
    return math.sqrt(mean - sds * sd)


@pytest.mark.parametrize("atk", [attacks.NES(), attacks.SPSA(delta=1e-3)], ids=["nes-gaussian", "spsa-rademacher"])
def test_the_estimate_on_a_linear_model_points_along_the_true_gradient(atk: attacks.NES | attacks.SPSA) -> None:
    model, w = _linear_model()
    x = _images(8)
    y = torch.arange(8) % 10
    oracle = Oracle(model, len(x))
    scale, direction = atk._probes()  # the attack's own probe size and direction law
    draws = SampleDraws(x, atk.seed, stream=ESTIMATE_STREAM)
    rows = torch.arange(len(x))
    u = (direction(draws, rows, (0, i), x.shape[1:]).to(x) for i in range(PAIRS))
    g = estimate_gradient(oracle, x, rows, lambda z: z.gather(1, y[:, None]).squeeze(1), u, scale)
    true = w[y]  # d z_y / dx for each sample
    cos = nn.functional.cosine_similarity(g.flatten(1), true, dim=1)
    # Rademacher directions spread a little less (E ||g||^2 = ||w||^2 (1 + (dim - 1) / n), Gaussian ones
    # (1 + (dim + 1) / n)): the same floor holds
    assert (cos > _cosine_floor(PAIRS, D)).all(), cos
    # the component along the true gradient is unbiased: (g . w) / ||w||^2 has mean 1 and sd sqrt(2 / n) = 0.14
    along = (g.flatten(1) * true).sum(1) / true.pow(2).sum(1)
    assert float(along.mean()) == pytest.approx(1.0, abs=5 * math.sqrt(2 / PAIRS / len(x)))
    assert torch.equal(oracle.forwards, torch.full((8,), 2 * PAIRS))  # 2 queries a pair, each on its own row
    assert torch.equal(oracle.backwards, torch.zeros(8, dtype=torch.long))


def test_more_pairs_estimate_better_and_the_constant_cancels() -> None:
    model, w = _linear_model()
    x = _images(16)
    y = torch.zeros(16, dtype=torch.long)
    draws = SampleDraws(x, 0, stream=ESTIMATE_STREAM)
    rows = torch.arange(len(x))

    def estimate(pairs: int, shift: float) -> torch.Tensor:
        u = (draws.normal(rows, (0, i), x.shape[1:]) for i in range(pairs))
        return estimate_gradient(Oracle(model, len(x)), x, rows, lambda z: z[:, 0] + shift, u, 1e-3)

    def mean_cos(g: torch.Tensor) -> float:
        return float(nn.functional.cosine_similarity(g.flatten(1), w[y], dim=1).mean())

    few, many = mean_cos(estimate(10, 0.0)), mean_cos(estimate(400, 0.0))
    assert many > few + 0.2  # mean cos: about sqrt(10 / 73) = 0.37 against sqrt(400 / 463) = 0.93
    assert many > _cosine_floor(400, D)
    # antithetic pairs: L(x + s u) - L(x - s u) has no zeroth-order term, so a constant added to L changes nothing
    # beyond float32 rounding of the larger values
    assert torch.allclose(estimate(10, 100.0), estimate(10, 0.0), rtol=0, atol=5e-2 * float(w.abs().max()))


class _Constant(nn.Module):
    """A model no perturbation can break: the same logits for every image (class 0 by a margin of 5)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tensor([5.0, 0.0, 0.0]).expand(len(x), 3) + 0 * x.flatten(1)[:, :1]


@pytest.mark.parametrize("budget, spent", [(29, 29), (30, 29), (4, 4), (5, 4)])
def test_the_loop_spends_the_budget_exactly_with_a_shorter_last_step(budget: int, spent: int) -> None:
    """1 clean query, then steps of 2 n + 1 (n = samples = 10): 29 = 1 + 21 + 7 (a last step of 3 pairs); with 30
    one query is left, as a step needs at least 3."""
    x, y = _images(3), torch.zeros(3, dtype=torch.long)
    for atk in (attacks.NES(eps=0.1, max_queries=budget), attacks.SPSA(eps=0.1, max_queries=budget)):
        res = atk(_Constant(), x, y)
        assert not res.success.any()
        assert torch.equal(res.forwards, torch.full((3,), spent)) and not res.backwards.any()


def test_the_ball_check_takes_one_radius_of_linf_or_l2() -> None:
    check_ball(0.1, "linf")
    check_ball(3.0, "l2")
    for eps, norm, match in [
        (0.1, "l1", "norm must be one of linf, l2"),
        ([0.1, 0.2], "linf", "one positive number"),
        (True, "linf", "one positive number"),
        (0.0, "l2", "eps must be positive"),
        (1.5, "linf", "L-inf eps above 1"),
    ]:
        with pytest.raises(ValueError, match=match):
            check_ball(eps, norm)
