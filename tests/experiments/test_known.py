"""The known answers are right (closed form without the box, feasible and tight with it), and the self-test
passes on advlab's attacks and fails on a deliberately broken one."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from advlab import attacks
from advlab.experiments import known


@pytest.mark.parametrize(("norm", "dual"), [("l2", 2.0), ("linf", 1.0), ("l1", float("inf"))])
def test_halfspace_distance_is_the_closed_form_when_the_box_does_not_bind(norm: str, dual: float) -> None:
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(8, 3, 64, generator=gen, dtype=torch.float64)
    m = 0.01 * torch.rand(8, 3, generator=gen, dtype=torch.float64)  # small margins: the box stays far away
    x = torch.full((8, 64), 0.5, dtype=torch.float64)
    got = known.halfspace_distance(v, m, x, norm)
    assert torch.allclose(got, m / v.norm(p=dual, dim=2), rtol=1e-9)


@pytest.mark.parametrize("norm", ["l2", "linf", "l1", "l0"])
def test_linear_truth_is_reachable_and_nothing_smaller_is(norm: str) -> None:
    # with the box binding (images near 0 and 1), check the answer against the model: a point at the true distance
    # exists (every attack that reaches it is adversarial) and no attack ever goes below it
    p = known.linear_problem(n=32, seed=3)
    truth = p.truth(norm)
    assert torch.isfinite(truth).all() and (truth > 0).all()
    r = known.ratios(attacks.FMN(norm=norm, steps=150), p)
    assert float(r.min()) > 1 - 1e-3
    assert float(r.median()) < 1.01


def test_maxout_truth_is_the_nearest_piece() -> None:
    p = known.maxout_problem(n=16)
    with torch.no_grad():
        assert (p.model(p.x).argmax(1) == 0).all()
    r = known.ratios(attacks.FMN(norm="l2", steps=150), p)
    assert float(r.min()) > 1 - 1e-3 and float(r.median()) < 1.01


def test_selftest_passes() -> None:
    checks = known.selftest(["fmn", "ddn", "deepfool"], n=48)
    assert checks and all(c.passed for c in checks), [c.to_dict() for c in checks if not c.passed]


@pytest.mark.parametrize("bug", ["no projection", "three steps"])
def test_selftest_fails_on_a_broken_attack(monkeypatch: pytest.MonkeyPatch, bug: str) -> None:
    # (a tiny step size is no bug on a linear model: tiny steps along the right direction inside a growing ball
    # cross the boundary at its nearest point)
    if bug == "no projection":  # delta is never brought back into the eps-ball
        monkeypatch.setattr("advlab.attacks.fmn.project", lambda delta, eps, norm: delta)
    else:
        factory, norms, expect = known.SUITE["fmn"]
        monkeypatch.setitem(
            known.SUITE, "fmn", (lambda norm: dataclasses.replace(factory(norm), steps=3), norms, expect)
        )
    checks = known.selftest(["fmn"], n=48)
    assert all(not c.passed for c in checks if c.problem == "linear")
