"""The seed notes, reproduced on embedded data.

Seed 002: EfficientNet-Lite0 on the sample photos, L-inf eps = 2/255, 30 steps: untargeted PGD changes every
prediction; targeted to class 106 ("wombat") reaches probability > 0.9 on each photo, also on the 8-bit grid.
Seed 004: FGSM against a linear model moves its logit by exactly eps * ||w||_1 (the linearity argument).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import attacks, data, zoo
from advlab.data.classes import imagenet_classes

WOMBAT = 106


@pytest.fixture(scope="module")
def lite0_photos() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = zoo.load("efficientnet-lite0")
    x, y = data.load("samples")
    return model, x, y


def test_seed002_untargeted_changes_every_prediction(lite0_photos) -> None:
    model, x, _ = lite0_photos
    with torch.no_grad():
        clean = model(x).argmax(1)
    res = attacks.PGD(eps=2 / 255, steps=30)(model, x, clean)
    assert (res.prediction != clean).all()
    assert float(res.linf.max()) <= 2 / 255 + 1e-6


def test_seed002_every_photo_becomes_a_wombat_also_as_png(lite0_photos) -> None:
    model, x, y = lite0_photos
    assert imagenet_classes()[WOMBAT] == "wombat"
    res = attacks.PGD(eps=2 / 255, steps=30, quantize=True)(model, x, y, target=WOMBAT)
    png = (res.x_adv * 255).round().to(torch.uint8).float() / 255  # exactly what a saved PNG holds
    with torch.no_grad():
        p = model(png).softmax(1)[:, WOMBAT]
    assert (p > 0.9).all(), p
    assert float((png - x).abs().max()) <= 2 / 255 + 1e-6


def test_seed004_fgsm_moves_a_linear_logit_by_eps_times_l1_norm_of_w() -> None:
    """Logistic regression "3 vs 8" on digits: s(x) = w.x + b, logits (0, s). FGSM against label 1 steps
    along -sign(w), so s drops by eps * ||w||_1 exactly, for images away from the [0, 1] box edges."""
    x, y = data.load("digits:train")
    keep = (y == 3) | (y == 8)
    x, y = x[keep] * 0.5 + 0.25, (y[keep] == 8).long()  # interior pixels: the box never clips a 0.1 step
    lin = nn.Linear(64, 1)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=100)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(lin(x.flatten(1)).squeeze(1), y.float())
        loss.backward()
        return loss

    opt.step(closure)
    model = nn.Sequential(nn.Flatten(), lin, _PrependZero()).eval()
    with torch.no_grad():
        s0 = lin(x.flatten(1)).squeeze(1)
    assert float(((s0 > 0).long() == y).float().mean()) > 0.95
    eps = 0.1
    # the margin loss z_0 - z_1 = -s has gradient -w everywhere; cross-entropy's vanishes in float32 on
    # confidently classified samples (softmax saturates), which would leave those untouched
    res = attacks.FGSM(eps=eps, loss="margin")(model, x, torch.ones_like(y))
    with torch.no_grad():
        s1 = lin(res.x_adv.flatten(1)).squeeze(1)
    w1 = float(lin.weight.detach().abs().sum())
    assert torch.allclose(s0 - s1, torch.full_like(s0, eps * w1), rtol=1e-4)
    # and the relative effect grows with the dimension: eps * ||w||_1 dwarfs a typical logit
    assert eps * w1 > float(s0.abs().median())


class _PrependZero(nn.Module):
    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(s), s], dim=1)
