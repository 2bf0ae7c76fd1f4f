"""parametrize: every parametrization starts at its own transform of the start, maps any parameters to images in
[0, 1], is differentiable, and works batched for 1- and 3-channel images; transforms keep shape and device."""

from __future__ import annotations

import pytest
import torch

from advlab import prototypes
from advlab.prototypes import Config, Transforms, bind
from advlab.prototypes.parametrize import (
    color_matrix,
    natural_magnitude,
    spectrum_scale,
)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", ["pixels", "fourier", "phase"])
def test_round_trip_valid_images_and_gradients(name: str, channels: int) -> None:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand(3, channels, 16, 16, generator=gen).clamp(0.01, 0.99)
    x0[1] = 0.5  # a blank start next to two photo-like ones
    mag = torch.rand(channels, 16, 9, generator=gen) if name == "phase" else None
    b = bind(name, x0, seed=1, magnitude=mag)
    assert torch.allclose(b.image(b.p0), x0, atol=1e-4)  # the start is its own transform
    p = (b.p0 + 3 * torch.randn(b.p0.shape, generator=gen)).requires_grad_(True)  # far from the start
    x = b.image(p)
    if name == "pixels":
        assert b.free is False  # the step's projection keeps pixels in the box
    else:
        assert b.free and x.shape == x0.shape and float(x.detach().min()) >= 0 and float(x.detach().max()) <= 1
    (g,) = torch.autograd.grad((x * torch.randn(x.shape, generator=gen)).sum(), p)
    assert g.shape == p.shape and torch.isfinite(g).all() and float(g.abs().sum()) > 0
    rows = torch.tensor([2, 0])  # a subset of the batch maps with its own start's constants
    assert torch.allclose(b.image(b.p0[rows], rows), x0[rows], atol=1e-4)


def test_phase_and_fourier_are_seeded_and_the_helpers_hold() -> None:
    x0 = torch.full((2, 3, 16, 16), 0.5)
    a, b, c = bind("phase", x0, seed=3), bind("phase", x0, seed=3), bind("phase", x0, seed=4)
    assert torch.equal(a.p0, b.p0) and not torch.equal(a.p0, c.p0)
    assert torch.equal(color_matrix(1), torch.eye(1)) and float(color_matrix(3).norm(dim=0).max()) == pytest.approx(1.0)
    s = spectrum_scale(16, 16)
    assert s.shape == (16, 9) and float(s.pow(2).mean()) == pytest.approx(1.0) and float(s[0, 0]) > float(s[8, 8])
    m = natural_magnitude(16, 3)  # the sample photos' mean spectrum falls with frequency, as natural images do
    assert (
        m.shape == (3, 16, 9)
        and float(m[:, 0, 0].abs().max()) == 0
        and float(m[:, 1, 1].mean()) > float(m[:, 8, 8].mean())
    )
    with pytest.raises(ValueError, match="param must be one of"):
        bind("wavelets", x0)


@pytest.mark.parametrize(
    "t",
    [
        Transforms(jitter=2),
        Transforms(scale=0.2),
        Transforms(rotate=15),
        Transforms(2, 0.1, 10, copies=3),
        Transforms(copies=2),
    ],
)
def test_transforms_keep_shape_device_and_gradient(t: Transforms) -> None:
    x = torch.rand(4, 3, 12, 12, requires_grad=True)
    v = t(x, torch.Generator().manual_seed(0))
    assert v.shape == (4 * t.copies, 3, 12, 12) and v.device == x.device and v.dtype == x.dtype
    (g,) = torch.autograd.grad(v.sum(), x)
    assert float(g.abs().sum()) > 0
    if not t.identity:  # random views differ from the image and from one another
        assert not torch.allclose(v[:4], x)
        again = t(x, torch.Generator().manual_seed(0))
        assert torch.equal(v, again)


def test_evolve_in_every_parametrization_records_image_distances(digits) -> None:
    for param in ("fourier", "phase"):
        cfg = Config(param=param, method="mifgsm", alpha=0.05, momentum=0.9, steps=40, tol=0)
        ev = prototypes.generate(digits, "digits:test", "0-4", cfg, limit=1).evolution
        assert float(ev.x.min()) >= 0 and float(ev.x.max()) <= 1
        assert float(ev.l2[:, 0].max()) < 0.05  # step 0 is the start itself (clamped into [1e-3, 1 - 1e-3])
        d = (ev.x - prototypes.parse_start("digits:test", 1, 8, limit=1).x).flatten(1).norm(dim=1)
        assert torch.allclose(
            ev.l2[:, -1], d, atol=0.01
        )  # distances from x(p0), the start clamped by <= 1e-3 per pixel
        assert (ev.final_prob > ev.prob[:, 0]).all()
        if param == "fourier":  # the phase alone moves less: its magnitude stays the photos'
            assert (ev.final_top1 == ev.target).all()
    with pytest.raises(ValueError, match="eps and blur act on pixels"):
        Config(param="fourier", eps=0.1).validate()
