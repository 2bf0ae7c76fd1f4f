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


@pytest.mark.parametrize("norm", ["linf", "l2", "l1"])
def test_random_start_is_inside_and_seeded(norm: str) -> None:
    x = torch.rand(8, 3, 5, 5)
    a = random_start(x, 0.1, norm, seed=3)  # type: ignore[arg-type]
    b = random_start(x, 0.1, norm, seed=3)  # type: ignore[arg-type]
    assert torch.equal(a, b) and (distance(a, norm) <= 0.1 + 1e-6).all() and a.abs().sum() > 0
    assert not torch.equal(a, random_start(x, 0.1, norm, seed=4))  # type: ignore[arg-type]
    assert not torch.equal(a, random_start(x, 0.1, norm, seed=3, stream=1))  # type: ignore[arg-type]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_random_start_of_a_sample_depends_on_its_own_pixels_only(norm: str) -> None:
    """A subset, a permutation, a copy in channels_last or float64 gives each image the start it had in the batch."""
    x = torch.rand(10, 3, 5, 5)
    a = random_start(x, 0.1, norm, seed=0)  # type: ignore[arg-type]
    perm = torch.tensor([7, 2, 9, 0])
    assert torch.equal(random_start(x[perm], 0.1, norm, seed=0), a[perm])  # type: ignore[arg-type]
    cl = random_start(x.contiguous(memory_format=torch.channels_last), 0.1, norm, seed=0)  # type: ignore[arg-type]
    assert torch.equal(cl, a)
    assert torch.allclose(random_start(x.double(), 0.1, norm, seed=0).float(), a)  # type: ignore[arg-type]
    other = x.clone()
    other[3, 0, 0, 0] += 1e-3  # one pixel differs: a different start for that image only
    b = random_start(other, 0.1, norm, seed=0)  # type: ignore[arg-type]
    assert not torch.equal(b[3], a[3]) and torch.equal(b[:3], a[:3])


def test_random_start_is_uniform_in_the_linf_cube() -> None:
    """25,600 draws: the sample mean has sd 0.0036 and each tenth's share sd 0.0019, so the bounds sit 5.5 and 5.3
    sd out (over 200 seeds of the images: |mean| up to 0.011, a share off by up to 0.0073, the std by up to 0.0047)."""
    x = torch.rand(
        400, 1, 8, 8, generator=torch.Generator().manual_seed(0)
    )  # not the global stream: the test order moves it
    u = random_start(x, 1.0, "linf", seed=1).flatten()
    assert abs(float(u.mean())) < 0.02 and abs(float(u.std()) - (1 / 3) ** 0.5) < 0.01
    assert float(u.min()) >= -1 and float(u.max()) < 1
    hist = torch.histc(u, bins=10, min=-1, max=1) / len(u)
    assert (hist - 0.1).abs().max() < 0.01


def test_steepest_steps_have_unit_norm() -> None:
    g = torch.randn(4, 10)
    assert torch.allclose(distance(steepest_step(g, "l2"), "l2"), torch.ones(4))
    assert torch.equal(steepest_step(g, "linf"), g.sign())
    # the step maximizes <g, s> over the unit ball of its norm: for L-inf that is ||g||_1
    assert torch.allclose((steepest_step(g, "linf") * g).sum(1), g.abs().sum(1))
