"""Lp threat models on [0, 1] images: distances, projections onto the eps-ball, random starts, steps.

All functions work per sample on (N, ...) tensors; ``eps`` is a float or a (N,) tensor, in [0, 1]-pixel
units (8/255 means eight 8-bit grey levels). Norms: ``"linf"`` (max |d|), ``"l2"`` (sqrt(sum d^2)),
``"l1"`` (sum |d|), ``"l0"`` (number of changed values).
"""

from __future__ import annotations

from typing import Literal

import torch

Norm = Literal["linf", "l2", "l1"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1")
_TINY = 1e-12


def check_norm(norm: str) -> Norm:
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return norm  # type: ignore[return-value]


def _view(eps: float | torch.Tensor, like: torch.Tensor) -> float | torch.Tensor:
    if isinstance(eps, torch.Tensor):
        return eps.to(like).view(-1, *([1] * (like.ndim - 1)))
    return eps


def distance(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample norm of ``delta`` (N, ...) -> (N,). ``"l0"`` counts entries with |d| > 1e-7."""
    flat = delta.detach().flatten(1).float()
    if norm == "linf":
        return flat.abs().amax(1)
    if norm == "l2":
        return flat.norm(p=2, dim=1)
    if norm == "l1":
        return flat.abs().sum(1)
    if norm == "l0":
        return (flat.abs() > 1e-7).sum(1).float()
    raise ValueError(f"unknown norm {norm!r}")


def project(delta: torch.Tensor, eps: float | torch.Tensor, norm: Norm) -> torch.Tensor:
    """The closest point to ``delta`` in the ``norm`` ball of radius ``eps`` (L1: the sort-based exact projection)."""
    if norm == "linf":
        e = _view(eps, delta)
        return torch.maximum(torch.minimum(delta, e), -e) if isinstance(e, torch.Tensor) else delta.clamp(-e, e)
    n = delta.flatten(1).norm(p=2 if norm == "l2" else 1, dim=1)
    e = eps if isinstance(eps, torch.Tensor) else torch.full_like(n, float(eps))
    if norm == "l2":
        factor = torch.clamp(e / (n + _TINY), max=1.0)
        return delta * factor.view(-1, *([1] * (delta.ndim - 1)))
    # L1 (Duchi et al. 2008): soft-threshold |d| at the theta that makes the L1 norm eps.
    flat = delta.flatten(1)
    a = flat.abs()
    outside = n > e
    if not outside.any():
        return delta
    srt, _ = a.sort(dim=1, descending=True)
    cum = srt.cumsum(1)
    k = torch.arange(1, a.shape[1] + 1, device=a.device, dtype=a.dtype)
    cond = srt - (cum - e[:, None]) / k > 0
    rho = cond.float().cumsum(1).argmax(1, keepdim=True)  # last index where cond holds
    theta = ((cum.gather(1, rho) - e[:, None]) / (rho + 1).to(a.dtype)).clamp(min=0)
    shrunk = flat.sign() * (a - theta).clamp(min=0)
    return torch.where(outside[:, None], shrunk, flat).view_as(delta)


def random_start(x: torch.Tensor, eps: float | torch.Tensor, norm: Norm, generator: torch.Generator | None) -> torch.Tensor:
    """A random ``delta`` inside the ball: L-inf uniform in the cube; L2/L1 a random direction scaled to radius eps * U^(1/d)
    (uniform in the L2 ball). Drawn on the CPU from ``generator`` so the same seed gives the same start on any device."""
    shape, dev = x.shape, x.device
    if norm == "linf":
        u = torch.rand(shape, generator=generator, device="cpu").to(dev, x.dtype)
        return (2 * u - 1) * _view(eps, x)
    g = torch.randn(shape, generator=generator, device="cpu").to(dev, x.dtype)
    if norm == "l1":
        g = g.abs().neg().exp().mul(g.sign())  # Laplace-like direction
    direction = g / (g.flatten(1).norm(p=2 if norm == "l2" else 1, dim=1).view(-1, *([1] * (x.ndim - 1))) + _TINY)
    d = x[0].numel()
    r = torch.rand(shape[0], generator=generator, device="cpu").to(dev, x.dtype) ** (1.0 / d)
    return direction * r.view(-1, *([1] * (x.ndim - 1))) * _view(eps, x)


def steepest_step(grad: torch.Tensor, norm: Norm) -> torch.Tensor:
    """The unit-norm direction of steepest ascent for ``norm``: sign(g) for L-inf, g/||g||_2 for L2,
    and for L1 the sign of the largest-|g| coordinates (top 1% of entries, at least one)."""
    if norm == "linf":
        return grad.sign()
    flat = grad.flatten(1)
    if norm == "l2":
        return (flat / (flat.norm(dim=1, keepdim=True) + _TINY)).view_as(grad)
    k = max(1, flat.shape[1] // 100)
    top = flat.abs().topk(k, dim=1).indices
    step = torch.zeros_like(flat).scatter_(1, top, flat.gather(1, top).sign())
    return (step / k).view_as(grad)
