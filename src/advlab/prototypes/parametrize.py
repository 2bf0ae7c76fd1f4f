"""Parametrizations of the image being evolved: the variable p that the step moves, and the image x(p) in [0, 1].

    pixels    x = p, the box [0, 1] (and the eps ball) kept by the step's projection (today's pixel PGD)
    fourier   x = sigmoid(C * irfft2(s * p)): decorrelated colour C and a 1/f-scaled Fourier spectrum s
              (Olah et al. 2017, "Feature Visualization"); p holds complex coefficients as (..., 2) reals
    phase     x = sigmoid(b + C * irfft2(M * exp(i phi))): only the Fourier phase phi moves, the magnitude M is
              fixed to the mean spectrum of natural photos (MACO, Fel et al. 2023)

Every parametrization starts at its own transform of the start image x0, so that "alienate from a picture"
keeps its meaning and every distance is measured from x0 in pixel units: ``fourier`` inverts the map
(p0 = irfft2^-1(C^-1 logit x0) / s, exact up to clamping x0 into [1e-3, 1 - 1e-3] before the logit);
``phase`` draws a seeded random phase phi0 per pair and sets b = logit x0 - C * irfft2(M exp(i phi0)), so
x(phi0) = x0 and the change from the start is the difference of two fields with natural magnitude spectra.

C is the square root of the ImageNet colour covariance (the 3 x 3 matrix Lucid publishes, its columns scaled
to a largest norm of 1); for 1-channel images C = 1. s(f) = 1 / max(f, 1 / max(H, W)) in cycles per pixel,
scaled to a root-mean-square of 1, so a step of size alpha in p changes the logit image by about alpha per
pixel. Every map is differentiable; images are (N, C, H, W) in [0, 1].
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

PARAMS = ("pixels", "fourier", "phase")

#: square root of the ImageNet colour covariance (Olah et al. 2017; the published numbers), rows = RGB
_COLOR_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))
_EDGE = 1e-3  # starts are clamped into [_EDGE, 1 - _EDGE] before the logit


def color_matrix(channels: int, device: torch.device | None = None) -> torch.Tensor:
    """The colour-decorrelation matrix C (channels x channels): Lucid's, columns scaled to max norm 1; identity
    for anything but 3 channels."""
    if channels != 3:
        return torch.eye(channels, device=device)
    m = torch.tensor(_COLOR_SQRT, device=device)
    return m / m.norm(dim=0).max()


def _mix(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Apply a channels x channels matrix to every pixel of (N, C, H, W)."""
    return torch.einsum("cd,ndhw->nchw", m.to(x), x)


def spectrum_scale(h: int, w: int, device: torch.device | None = None, decay: float = 1.0) -> torch.Tensor:
    """s(f) = 1 / max(f, 1/max(h, w))^decay over the (h, w // 2 + 1) rfft2 grid, scaled to an RMS of 1."""
    fy = torch.fft.fftfreq(h, device=device)[:, None]
    fx = torch.fft.rfftfreq(w, device=device)[None, :]
    s = 1.0 / (fy**2 + fx**2).sqrt().clamp_min(1.0 / max(h, w)) ** decay
    return s / s.pow(2).mean().sqrt()


def logit(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp(_EDGE, 1 - _EDGE)
    return (x / (1 - x)).log()


@functools.lru_cache(maxsize=8)
def natural_magnitude(size: int, channels: int) -> torch.Tensor:
    """M: the mean Fourier magnitude (channels, size, size // 2 + 1) of the sample photos (advlab's ``samples``,
    resized to ``size``), in the decorrelated logit space the ``phase`` parametrization works in; DC set to 0."""
    from advlab.data import sets

    x, _, _ = sets.samples(size, channels)
    lx = _mix(logit(x.clamp(0.02, 0.98)), torch.linalg.inv(color_matrix(channels)))
    mag = torch.fft.rfft2(lx - lx.mean((-2, -1), keepdim=True), norm="ortho").abs().mean(0)
    mag[:, 0, 0] = 0
    return mag


@dataclass
class Parametrization:
    """A parametrization bound to one batch of starts (what :func:`bind` returns): ``p0`` the start's parameters
    (N, ...), ``image(p, rows)`` the images of parameters ``p`` of the batch ``rows`` (None: all), and ``free``: True
    when p is unconstrained (the step does not project it onto [0, 1]; the map keeps images in the box)."""

    name: str
    p0: torch.Tensor
    free: bool
    _scale: torch.Tensor | None = None
    _color: torch.Tensor | None = None
    _offset: torch.Tensor | None = None
    _magnitude: torch.Tensor | None = None
    _size: tuple[int, int] = (0, 0)

    def image(self, p: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """x(p) in [0, 1], differentiable in p."""
        if self.name == "pixels":
            return p
        assert self._color is not None
        if self.name == "fourier":
            assert self._scale is not None
            spec = torch.view_as_complex(p.contiguous()) * self._scale
            return torch.sigmoid(_mix(torch.fft.irfft2(spec, s=self._size, norm="ortho"), self._color))
        assert self._magnitude is not None and self._offset is not None
        field = torch.fft.irfft2(torch.polar(self._magnitude.expand_as(p), p), s=self._size, norm="ortho")
        offset = self._offset if rows is None else self._offset[rows]
        return torch.sigmoid(offset + _mix(field, self._color))


def bind(name: str, x0: torch.Tensor, seed: int = 0, magnitude: torch.Tensor | None = None) -> Parametrization:
    """Bind parametrization ``name`` (one of :data:`PARAMS`) to the starts ``x0`` (N, C, H, W, in [0, 1]).

    ``seed`` draws ``phase``'s start phases (a CPU generator, so the same on every device); ``magnitude``
    overrides its natural spectrum M (default :func:`natural_magnitude` of the start size).
    """
    if name not in PARAMS:
        raise ValueError(f"param must be one of {', '.join(PARAMS)}, got {name!r}")
    if name == "pixels":
        return Parametrization("pixels", x0, free=False)
    n, c, h, w = x0.shape
    dev = x0.device
    color = color_matrix(c, dev)
    lx = _mix(logit(x0), torch.linalg.inv(color))
    if name == "fourier":
        scale = spectrum_scale(h, w, dev)
        p0 = torch.view_as_real(torch.fft.rfft2(lx, norm="ortho") / scale).contiguous()
        return Parametrization("fourier", p0, True, _scale=scale, _color=color, _size=(h, w))
    mag = (magnitude if magnitude is not None else natural_magnitude(h, c)).to(dev, x0.dtype)
    if mag.shape[-2:] != (h, w // 2 + 1):
        raise ValueError(f"the magnitude spectrum is {tuple(mag.shape)}, the images need (..., {h}, {w // 2 + 1})")
    gen = torch.Generator().manual_seed(seed)
    phi0 = ((torch.rand((n, c, h, w // 2 + 1), generator=gen) * 2 - 1) * math.pi).to(dev, x0.dtype)
    field0 = _mix(torch.fft.irfft2(torch.polar(mag.expand_as(phi0), phi0), s=(h, w), norm="ortho"), color)
    return Parametrization("phase", phi0, True, _color=color, _offset=logit(x0) - field0, _magnitude=mag, _size=(h, w))
