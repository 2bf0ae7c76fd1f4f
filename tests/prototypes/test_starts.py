"""Where prototype runs start: constant images, seeded noise, and real pictures fitted to the model."""

from __future__ import annotations

import pytest
import torch

from advlab import prototypes
from advlab.errors import AdvlabError


def test_starts() -> None:
    gray = prototypes.parse_start("blank:gray", 3, 16).x
    assert gray.shape == (1, 3, 16, 16) and torch.all(gray == 0.5)
    red = prototypes.parse_start("blank:255,0,0", 3, 4).x
    assert red[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert torch.all(prototypes.parse_start("blank:0.25", 1, 4).x == 0.25)
    g = prototypes.parse_start("noise:gaussian:0.5,0.1@4", 1, 32, seed=1).x
    assert g.shape == (4, 1, 32, 32) and abs(float(g.mean()) - 0.5) < 0.02 and abs(float(g.std()) - 0.1) < 0.02
    assert torch.equal(g, prototypes.parse_start("noise:gaussian:0.5,0.1@4", 1, 32, seed=1).x)
    u = prototypes.parse_start("noise:uniform:0.2,0.4", 3, 32).x
    assert float(u.min()) >= 0.2 and float(u.max()) <= 0.4
    photos = prototypes.parse_start("samples", 3, 32)
    assert photos.x.shape[1:] == (3, 32, 32) and photos.kind == "imagenet" and "coffee" in photos.names
    digits3 = prototypes.parse_start("digits:test", 3, 32, limit=2)  # fitted to the model: 8x8 grey -> 32x32 RGB
    assert digits3.x.shape == (2, 3, 32, 32) and digits3.kind == "digits"
    for bad in (
        "blank:",
        "blank:purple",
        "blank:2,3",
        "noise:pink",
        "noise:gaussian:1",
        "noise:uniform@0",
        "noise:uniform:0.5,0.1",
    ):
        with pytest.raises(AdvlabError):
            prototypes.parse_start(bad, 3, 8)
