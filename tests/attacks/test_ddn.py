"""DDN: L2 only, the prediction changes at the reported distance, targeted hits the target, the true minimum of a
linear model is found."""

from __future__ import annotations

import pytest
import torch

from advlab import attacks
from advlab.attacks.catalog import make
from advlab.errors import AdvlabError
from advlab.experiments.known import linear_problem, ratios
from tests.attacks.helpers import check_result


def test_ddn_changes_the_prediction_at_the_reported_distance(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:24], digits_batch[1][:24]
    res = attacks.DDN(steps=80)(digits_model, x, y)
    check_result(res, digits_model, x)
    with torch.no_grad():
        pred = digits_model(res.x_adv).argmax(1)
    assert torch.equal(pred != y, res.success) and res.success.all()
    assert res.min_eps is not None and torch.allclose(res.min_eps, res.l2)


@pytest.mark.parametrize("toward", ["nearest", "paper"])
def test_ddn_targeted_hits_the_target(digits_model, digits_batch, toward: str) -> None:
    x, y = digits_batch[0][:16], digits_batch[1][:16]
    t = (y + 3) % 10
    res = attacks.DDN(steps=100, toward=toward)(digits_model, x, y, target=t)
    with torch.no_grad():
        pred = digits_model(res.x_adv).argmax(1)
    assert torch.equal(pred == t, res.success) and res.success.float().mean() >= 0.9


def test_ddn_finds_the_true_minimum_of_a_linear_model() -> None:
    r = ratios(attacks.DDN(steps=300), linear_problem(n=64, seed=2))
    assert float(r.min()) > 1 - 1e-3
    assert float((r <= 1.01).double().mean()) >= 0.99


def test_ddn_is_l2_only() -> None:
    with pytest.raises(AdvlabError, match="DDN is an L2 attack"):
        make("ddn", norm="linf")
    with pytest.raises(ValueError, match="gamma"):
        attacks.DDN(gamma=0)
