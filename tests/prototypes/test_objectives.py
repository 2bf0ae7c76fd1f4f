"""Objectives compose (+, -, scalar *) into the weighted sum of their terms, each minimized by evolve: a class
logit objective raises that logit, a TV objective lowers TV, and the default is the old CE (+ tv * TV)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from advlab import prototypes
from advlab.errors import AdvlabError
from advlab.prototypes import (
    Config,
    class_logit,
    cross_entropy,
    l2,
    margin,
    target_logit,
    total_variation,
)


def _batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 8, 8, generator=gen), torch.randn(6, 10, generator=gen), torch.tensor([0, 3, 5, 9, 1, 2])


def test_terms_state_their_maths() -> None:
    x, z, t = _batch()
    zt = z.gather(1, t[:, None]).squeeze(1)
    assert torch.allclose(cross_entropy()(x, z, t), F.cross_entropy(z, t, reduction="none"))
    assert torch.allclose(margin()(x, z, t), z.scatter(1, t[:, None], -torch.inf).amax(1) - zt)
    assert torch.allclose(
        margin(kappa=0.5)(x, z, t), (z.scatter(1, t[:, None], -torch.inf).amax(1) - zt).clamp(min=-0.5)
    )
    assert torch.equal(class_logit(4)(x, z, t), -z[:, 4]) and torch.equal(target_logit()(x, z, t), -zt)
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((1, 2, 3))
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((1, 2, 3))
    assert (
        torch.allclose(total_variation()(x), dh + dw) and (total_variation()(torch.full((2, 3, 5, 5), 0.3)) == 0).all()
    )
    assert torch.allclose(l2()(x), (x - 0.5).flatten(1).norm(dim=1)) and torch.allclose(
        l2(0.0)(x), x.flatten(1).norm(dim=1)
    )
    with pytest.raises(ValueError, match="cross_entropy\\(\\) needs the logits"):
        cross_entropy()(x)


def test_composition_is_the_weighted_sum() -> None:
    x, z, t = _batch()
    ce, tv, m = cross_entropy()(x, z, t), total_variation()(x), margin()(x, z, t)
    combo = cross_entropy() + 0.5 * total_variation() - margin() * 2
    assert torch.allclose(combo(x, z, t), ce + 0.5 * tv - 2 * m)
    assert torch.allclose((-cross_entropy())(x, z, t), -ce)
    assert torch.allclose((total_variation() / 4)(x, z, t), tv / 4)
    assert torch.allclose(sum([cross_entropy(), total_variation()])(x, z, t), ce + tv)
    assert torch.allclose((3 * (cross_entropy() + total_variation()))(x, z, t), 3 * ce + 3 * tv)
    assert repr(combo) == "cross_entropy() + 0.5 * total_variation() - 2 * margin()"
    assert repr(-class_logit(3) + l2()) == "-class_logit(3) + l2()"
    assert cross_entropy() + 0.5 * total_variation() == cross_entropy() + 0.5 * total_variation()  # configs compare
    with pytest.raises(TypeError):
        cross_entropy() * "2"  # type: ignore[operator]
    with pytest.raises(TypeError):
        cross_entropy() + 1  # type: ignore[operator]


def test_the_default_objective_is_cross_entropy_plus_tv() -> None:
    assert (
        Config().minimized() == cross_entropy()
        and Config(tv=0.5).minimized() == cross_entropy() + 0.5 * total_variation()
    )
    assert Config(objective=margin()).minimized() == margin()
    with pytest.raises(ValueError, match="tv applies to the default objective"):
        Config(tv=0.5, objective=margin()).validate()
    with pytest.raises(ValueError, match="objective must be an Objective"):
        Config(objective=lambda x, z, t: x).validate()  # type: ignore[arg-type]


def test_an_explicit_objective_gives_the_same_prototypes_as_the_tv_option(digits) -> None:
    a = prototypes.generate(digits, "noise:uniform", "all", Config(steps=40, tv=2.0)).evolution
    b = prototypes.generate(
        digits, "noise:uniform", "all", Config(steps=40, objective=cross_entropy() + 2.0 * total_variation())
    ).evolution
    assert torch.equal(a.x, b.x) and torch.equal(a.grad_norm, b.grad_norm)


def test_a_class_logit_objective_raises_that_logit(digits) -> None:
    """Whatever the pair's target, minimizing -z_3 raises logit 3 until class 3 wins."""
    x0 = torch.full((2, 1, 8, 8), 0.5)
    ev = prototypes.evolve(digits, x0, torch.tensor([0, 7]), Config(steps=40, objective=class_logit(3)))
    with torch.no_grad():
        before, after = digits(x0), digits(ev.x)
    assert (after[:, 3] > before[:, 3] + 5).all() and (after.argmax(1) == 3).all()
    assert (ev.final_top1 != ev.target).all()  # the records still judge the pair's own target


def test_a_tv_objective_lowers_tv_and_margin_reaches_the_target(digits) -> None:
    start = prototypes.parse_start("noise:uniform@4", 1, 8, seed=0).x
    smooth = prototypes.evolve(
        digits, start, torch.zeros(4, dtype=torch.long), Config(steps=80, alpha=0.005, objective=total_variation())
    )
    tv = total_variation()
    assert (tv(smooth.x) < 0.5 * tv(start)).all()
    ev = prototypes.evolve(digits, start, torch.tensor([2, 4, 6, 8]), Config(steps=60, objective=margin(kappa=5.0)))
    assert (ev.final_top1 == ev.target).all() and (ev.margin[:, -1] > 0).all()
    centered = prototypes.evolve(
        digits, start, torch.zeros(4, dtype=torch.long), Config(steps=30, alpha=0.02, objective=l2())
    )
    assert (l2()(centered.x) < 0.5 * l2()(start)).all()


def test_generate_reports_a_bad_objective_as_an_advlab_error(digits) -> None:
    with pytest.raises(AdvlabError, match="tv applies"):
        prototypes.generate(digits, "blank:gray", "0", Config(tv=1.0, objective=cross_entropy()))
