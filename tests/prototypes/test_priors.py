"""priors: the BatchNorm-statistics prior (DeepInversion) lowers the BN loss and composes with the target terms;
its hooks are removed after a run; the Lp and blur priors do what they say."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import prototypes
from advlab.prototypes import Config, bn_loss, bn_statistics, cross_entropy
from advlab.prototypes.priors import batchnorm_layers, blur_prior, lp


@pytest.fixture(scope="module")
def bn_net() -> nn.Module:
    """A small BatchNorm CNN trained on the digits for a second (its running statistics are the digits')."""
    from advlab import data

    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(16 * 64, 10),
    )
    x, y = data.load("digits:train", 8, channels=1)
    opt = torch.optim.Adam(net.parameters(), 3e-3)
    for i in range(80):
        idx = torch.arange(i * 64, i * 64 + 64) % len(x)
        opt.zero_grad()
        nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net.eval()


def test_bn_matching_lowers_the_bn_loss_next_to_the_target_term(bn_net) -> None:
    net = bn_net
    x0 = torch.full((10, 1, 8, 8), 0.5)
    t = torch.arange(10)
    plain = prototypes.evolve(net, x0, t, Config(steps=60, alpha=0.01))
    matched = prototypes.evolve(
        net, x0, t, Config(steps=60, alpha=0.01, objective=cross_entropy() + 0.5 * bn_statistics())
    )
    start = bn_loss(net, x0)
    assert bn_loss(net, matched.x) < 0.6 * start and bn_loss(net, matched.x) < 0.6 * bn_loss(net, plain.x)
    assert (matched.final_top1 == t).all()  # the target term still acts next to the prior
    assert all(not m._forward_hooks for m in batchnorm_layers(net))  # the hooks are gone after the run
    cfg = prototypes.recipe("natural", net, bn=0.5)  # the recipes take it as an ingredient
    assert repr(cfg.minimized()) == "cross_entropy() + 0.5 * bn_statistics()"


def test_bn_prior_needs_batchnorm_and_its_hooks(digits) -> None:
    with pytest.raises(ValueError, match="needs a model with BatchNorm"):
        prototypes.evolve(
            digits,
            torch.full((1, 1, 8, 8), 0.5),
            torch.tensor([3]),
            Config(steps=2, objective=cross_entropy() + bn_statistics()),
        )
    with pytest.raises(ValueError, match="without its hooks"):
        bn_statistics()(torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="BatchNorm"):
        prototypes.recipe("natural", digits, bn=0.1)


def test_lp_and_blur_priors() -> None:
    x = torch.rand(3, 1, 8, 8)
    assert torch.allclose(lp(2)(x), (x - 0.5).flatten(1).norm(dim=1))
    assert torch.allclose(lp(1, center=0)(x), x.flatten(1).sum(1))
    smooth = torch.linspace(0, 1, 8).view(1, 1, 1, 8).expand(3, 1, 8, 8)
    assert (blur_prior(1.0)(smooth) < 0.1 * blur_prior(1.0)(x)).all()
    with pytest.raises(ValueError, match="p >= 1"):
        lp(0.5)
