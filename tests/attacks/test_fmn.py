"""FMN: the prediction really changes within the reported norm, targeted hits the target, the per-sample distance
is the norm of x_adv - x (inf where it failed), and on a linear model it finds the true minimum."""

from __future__ import annotations

import math

import pytest
import torch

from advlab import attacks
from advlab.attacks.catalog import make
from advlab.attacks.fmn import project_l0
from advlab.errors import AdvlabError
from advlab.experiments.known import linear_problem, ratios
from advlab.threat import distance
from tests.attacks.helpers import check_result


@pytest.mark.parametrize("norm", ["l0", "l1", "l2", "linf"])
def test_fmn_changes_the_prediction_at_the_reported_distance(digits_model, digits_batch, norm: str) -> None:
    x, y = digits_batch[0][:24], digits_batch[1][:24]
    res = attacks.FMN(norm=norm, steps=60)(digits_model, x, y)
    check_result(res, digits_model, x)
    with torch.no_grad():
        pred = digits_model(res.x_adv).argmax(1)
    assert torch.equal(pred != y, res.success)
    assert res.success.float().mean() >= 0.9
    d = distance(res.x_adv - x, norm)
    assert res.min_eps is not None
    assert torch.allclose(res.min_eps[res.success], d[res.success])
    assert torch.isinf(res.min_eps[~res.success]).all()


def test_fmn_targeted_hits_the_target(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    t = (y + 1) % 10
    res = attacks.FMN(norm="l2", steps=80)(digits_model, x, y, target=t)
    with torch.no_grad():
        pred = digits_model(res.x_adv).argmax(1)
    assert torch.equal(pred == t, res.success) and res.success.float().mean() >= 0.9


def test_fmn_minimizes_more_steps_find_smaller_distances(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:24], digits_batch[1][:24]
    short = attacks.FMN(norm="l2", steps=5)(digits_model, x, y).min_eps
    long = attacks.FMN(norm="l2", steps=100)(digits_model, x, y).min_eps
    both = torch.isfinite(short) & torch.isfinite(long)
    assert both.sum() >= 12
    # per sample, 100 steps end closer than 5 (measured: every sample, on 3 blocks of 24 digits and two weight
    # perturbations); the medians differ by only 7-12%, too little to put a factor on
    assert float((long[both] < short[both]).float().mean()) >= 0.9
    assert float(long[both].median()) < float(short[both].median())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_fmn_finds_the_true_minimum_of_a_linear_model(norm: str) -> None:
    r = ratios(attacks.FMN(norm=norm, steps=100), linear_problem(n=64, seed=1))
    assert float(r.min()) > 1 - 1e-3  # never below the true minimum
    assert float((r <= 1.01).double().mean()) >= 0.99


def test_fmn_paper_loss_is_worse_on_a_linear_model_than_the_nearest_class() -> None:
    # the paper's largest-logit loss walks to the most likely class's boundary, not always the nearest one
    p = linear_problem(n=128, seed=2)
    paper, nearest = ratios(attacks.FMN(norm="l2", toward="paper"), p), ratios(attacks.FMN(norm="l2"), p)
    assert float((nearest <= 1.01).double().mean()) > float((paper <= 1.01).double().mean())


def test_fmn_stops_samples_already_adversarial(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:8], digits_batch[1][:8].clone()
    with torch.no_grad():
        y[:3] = (digits_model(x[:3]).argmax(1) + 1) % 10  # wrong labels: adversarial at x itself
    res = attacks.FMN(norm="l2", steps=50)(digits_model, x, y)
    assert torch.equal(res.min_eps[:3], torch.zeros(3))
    assert (res.backwards[:3] <= 11).all() and (res.backwards[3:] > 40).all()  # K = 10 backwards pick the class


def test_project_l0_keeps_the_largest_entries() -> None:
    d = torch.tensor([[0.5, -0.9, 0.1, 0.3], [0.2, 0.0, -0.4, 0.1]])
    out = project_l0(d, torch.tensor([2.0, 1.0]))
    assert torch.equal(out, torch.tensor([[0.5, -0.9, 0.0, 0.0], [0.0, 0.0, -0.4, 0.0]]))


def test_fmn_bad_settings_are_one_line_errors() -> None:
    with pytest.raises(AdvlabError, match="norm must be one of"):
        make("fmn", norm="l3")
    with pytest.raises(AdvlabError, match="steps must be >= 1"):
        make("fmn", steps=0)
    with pytest.raises(ValueError, match="gamma"):
        attacks.FMN(gamma=1.5)
    assert math.isfinite(attacks.FMN().alpha)
