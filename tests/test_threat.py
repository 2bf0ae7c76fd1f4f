"""Lp balls: projections land in the ball and are the closest point; random starts are inside."""

from __future__ import annotations

import pytest
import torch

from advlab.threat import distance, project, random_start, steepest_step


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_projection_lands_in_ball_and_fixes_points_inside(norm: str) -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(16, 1, 4, 4, generator=g)
    eps = 0.5
    p = project(d, eps, norm)  # type: ignore[arg-type]
    assert (distance(p, norm) <= eps + 1e-5).all()
    inside = d * (0.1 / distance(d, norm).view(-1, 1, 1, 1))
    assert torch.allclose(project(inside, eps, norm), inside)  # type: ignore[arg-type]


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_projection_is_the_closest_point(norm: str) -> None:
    """No random point of the ball is closer (in L2) to the original than its projection."""
    g = torch.Generator().manual_seed(1)
    d = torch.randn(1, 20, generator=g) * 2
    p = project(d, 1.0, norm)  # type: ignore[arg-type]
    cands = project(torch.randn(2000, 20, generator=g), 1.0, norm)  # type: ignore[arg-type]
    assert (cands - d).norm(dim=1).min() >= (p - d).norm() - 1e-5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_is_inside_and_seeded(norm: str) -> None:
    x = torch.rand(8, 3, 5, 5)
    a = random_start(x, 0.1, norm, torch.Generator().manual_seed(3))  # type: ignore[arg-type]
    b = random_start(x, 0.1, norm, torch.Generator().manual_seed(3))  # type: ignore[arg-type]
    assert torch.equal(a, b) and (distance(a, norm) <= 0.1 + 1e-6).all() and a.abs().sum() > 0


def test_steepest_steps_have_unit_norm() -> None:
    g = torch.randn(4, 10)
    assert torch.allclose(distance(steepest_step(g, "l2"), "l2"), torch.ones(4))
    assert torch.equal(steepest_step(g, "linf"), g.sign())
    # the step maximizes <g, s> over the unit ball of its norm: for L-inf that is ||g||_1
    assert torch.allclose((steepest_step(g, "linf") * g).sum(1), g.abs().sum(1))
