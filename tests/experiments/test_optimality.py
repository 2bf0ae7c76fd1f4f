"""Robust-accuracy curves from distances, their areas, AttackBench optimality, the comparison runner and the
bisection that makes APGD minimum-norm."""

from __future__ import annotations

import math

import pytest
import torch

from advlab import attacks, data, zoo
from advlab.attacks.minimal import bisect
from advlab.errors import AdvlabError
from advlab.experiments import optimality as O
from advlab.threat import distance, random_start


@pytest.fixture(scope="module")
def digits_model() -> torch.nn.Module:
    return zoo.load("digits-cnn")


@pytest.fixture(scope="module")
def digits_batch(digits_model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.load("digits:test")
    with torch.no_grad():
        ok = digits_model(x).argmax(1) == y
    return x[ok][:16], y[ok][:16]


def test_score_of_one_attack_is_its_own_reference() -> None:
    """Distances 0.1, 0.3, inf, 0 (wrong clean), 0.25: the curve and area of advlab.evaluation.metrics (the
    integral is checked there), 3 of the 4 correct samples broken, optimality 1 against itself."""
    d = torch.tensor([0.1, 0.3, math.inf, 0.0, 0.25])
    correct = torch.tensor([True, True, True, False, True])
    cmp = O.score([O.Entry("a", d)], correct, "l2", 100, eps_max=0.5)
    assert cmp.clean_accuracy == 4 / 5 and cmp.n == 5
    row = cmp.rows[0]
    assert row["area"] == pytest.approx((0.1 + 0.3 + 0.5 + 0.25) / 5) and cmp.reference_area == pytest.approx(
        row["area"]
    )
    assert row["success_rate"] == 3 / 4 and row["optimality"] == 1.0 and row["median_distance"] == pytest.approx(0.25)
    assert len(row["curve"]) == 51 and row["curve"][0] == [0.0, 0.8] and row["curve"][-1] == [0.5, 0.2]
    assert row["curve"][20] == [0.2, 0.6]  # 0.1 broken at 0.2, 0.25 and 0.3 still unbroken


def test_optimality_is_one_for_the_reference_and_zero_for_nothing_broken() -> None:
    correct = torch.ones(4, dtype=torch.bool)
    best = O.Entry("best", torch.tensor([0.1, 0.2, 0.3, 0.4]))
    worse = O.Entry("worse", torch.tensor([0.2, 0.2, 0.3, 0.4]))
    none = O.Entry("none", torch.full((4,), math.inf))
    cmp = O.score([best, worse, none], correct, "l2", 100)
    got = {r["attack"]: r["optimality"] for r in cmp.rows}
    assert got["best"] == pytest.approx(1.0) and got["none"] == pytest.approx(0.0)
    assert 0 < got["worse"] < 1
    assert cmp.eps_max == pytest.approx(0.4) and torch.equal(cmp.reference, best.distances)


def test_compare_scores_attacks_within_the_budget(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:12], digits_batch[1][:12]
    cmp = O.compare(digits_model, x, y, ["fmn", "deepfool", "apgd"], "linf", 200)
    rows = {r["attack"]: r for r in cmp.rows}
    assert set(rows) == {"fmn", "deepfool", "apgd"}
    for r in rows.values():
        assert 0 <= r["optimality"] <= 1 + 1e-9 and r["forwards"] + r["backwards"] <= 200
    ref = cmp.reference
    for name, d in cmp.distances.items():
        assert (d >= ref).all(), name
    # each distance is real: the adversarial point exists at that norm (re-measured on the model inside compare)
    assert rows["fmn"]["success_rate"] == 1.0 and rows["fmn"]["optimality"] > 0.9


def test_compare_refuses_bad_arguments(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:4], digits_batch[1][:4]
    with pytest.raises(AdvlabError, match="unknown attack 'nope'"):
        O.compare(digits_model, x, y, ["fmn", "nope"], "l2", 100)
    with pytest.raises(AdvlabError, match="ddn has no linf version"):
        O.compare(digits_model, x, y, ["ddn"], "linf", 100)
    with pytest.raises(AdvlabError, match="budget must be at least 1"):
        O.compare(digits_model, x, y, ["fmn"], "l2", 0)
    with pytest.raises(AdvlabError, match="foolbox has no 'nope'"):
        O.compare(digits_model, x, y, ["foolbox:nope"], "l2", 100)


def test_bisect_makes_apgd_minimum_norm(digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:12], digits_batch[1][:12]
    res = bisect(attacks.APGD(norm="linf", steps=20), digits_model, x, y, hi=0.5, probes=8)
    with torch.no_grad():
        pred = digits_model(res.x_adv).argmax(1)
    assert torch.equal(pred != y, res.success) and res.success.all()
    assert torch.allclose(res.min_eps, distance(res.x_adv - x, "linf"))
    # far below the first probe: the bisection moved each sample's eps down, to within 2x of FMN's distance
    fmn = attacks.FMN(norm="linf", steps=100)(digits_model, x, y).min_eps
    assert float(res.min_eps.max()) < 0.4 and (res.min_eps < 2 * fmn).all()


def test_random_start_takes_a_per_sample_linf_eps() -> None:
    # the bisection's APGD draws its starts with one eps per sample (this shape bug raised before)
    x = torch.rand(3, 1, 4, 4)
    eps = torch.tensor([0.01, 0.1, 0.5])
    d = random_start(x, eps, "linf")
    assert d.shape == x.shape and (d.flatten(1).abs().amax(1) <= eps).all() and d[2].abs().max() > 0.1


def test_a_peer_that_does_not_import_gets_a_row_not_an_error(
    digits_model, digits_batch, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(__import__("sys").modules, "torchattacks", None)  # import torchattacks now raises ImportError
    x, y = digits_batch[0][:4], digits_batch[1][:4]
    cmp = O.compare(digits_model, x, y, ["deepfool", "torchattacks:deepfool"], "l2", 100)
    rows = {r["attack"]: r for r in cmp.rows}
    assert rows["torchattacks:deepfool"]["note"].startswith("not installed") and "optimality" in rows["deepfool"]
    assert "not installed" in cmp.markdown()
