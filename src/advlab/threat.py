"""Lp threat models on [0, 1] images: distances, projections onto the eps-ball, random starts, steps.

All functions work per sample on (N, ...) tensors; ``eps`` is a float or a (N,) tensor, in [0, 1]-pixel
units (8/255 means eight 8-bit grey levels). Norms: ``"linf"`` (max |d|), ``"l2"`` (sqrt(sum d^2)),
``"l1"`` (sum |d|), ``"l0"`` (number of changed values).
"""

from __future__ import annotations

import math
from typing import Literal, cast

import torch

Norm = Literal["linf", "l2", "l1"]
NORMS: tuple[str, ...] = ("linf", "l2", "l1")
#: the exponent q of each norm's dual (1/p + 1/q = 1: ||.||_1 for L-inf, ||.||_2 for L2, ||.||_inf for L1), for
#: linear estimates of the distance to a decision boundary; L0, not a norm, borrows L2's
DUAL = {"linf": 1.0, "l2": 2.0, "l1": math.inf, "l0": 2.0}
_TINY = 1e-12


def eps_text(eps: float) -> str:
    """An eps as people write it: 0.2 stays 0.2, 0.0313725... (a whole number of 8-bit levels) becomes "8/255"."""
    k = eps * 255
    if eps != float(f"{eps:.3g}") and abs(k - round(k)) < 1e-6 and round(k) > 0:
        return f"{round(k)}/255"
    return f"{eps:.4g}"


def check_norm(norm: str) -> Norm:
    """``norm`` as a :data:`Norm`, or ValueError if it is none of :data:`NORMS`."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    return cast(Norm, norm)


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


def random_start(
    x: torch.Tensor, eps: float | torch.Tensor, norm: Norm, seed: int = 0, stream: int = 0
) -> torch.Tensor:
    """A random ``delta`` inside the ball for each sample: L-inf uniform in the cube; L2/L1 a random direction
    scaled to radius eps * U^(1/d) (for L2: uniform in the ball).

    Sample i's draw is a function of (``seed``, ``stream``, the pixels of ``x[i]``) alone (see :func:`sample_keys`),
    not of the other samples in the batch, their order or the batch size: attacking a subset, another shard or
    a different batch gives the same image the same start. ``stream`` separates independent draws (an attack's
    restarts). The random bits are integer arithmetic, identical on every device.
    """
    keys = sample_keys(x, seed, stream)
    d = x[0].numel() if len(x) else 0
    if norm == "linf":
        u = _uniform(_stream(keys, d))
        return (2 * u - 1).to(x.dtype).view(x.shape) * _view(eps, x)  # shaped first: a (N,) eps broadcasts per sample
    bits = _stream(keys, d + 1)
    g = _normal(bits[:, :d]).to(x.dtype)
    if norm == "l1":
        g = g.abs().neg().exp().mul(g.sign())  # Laplace-like direction
    direction = g / (g.norm(p=2 if norm == "l2" else 1, dim=1, keepdim=True) + _TINY)
    r = _uniform(bits[:, d]).to(x.dtype) ** (1.0 / max(d, 1))
    return (direction * r[:, None]).view(x.shape) * _view(eps, x)


# ---------------------------------------------------------------- per-sample random bits (splitmix64 in int64)
def _signed(c: int) -> int:
    c &= (1 << 64) - 1
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN, _MIX1, _MIX2 = _signed(0x9E3779B97F4A7C15), _signed(0xBF58476D1CE4E5B9), _signed(0x94D049BB133111EB)


def _shr(z: torch.Tensor, s: int) -> torch.Tensor:
    """Logical right shift of int64 bit patterns (torch's >> is arithmetic)."""
    return (z >> s) & ((1 << (64 - s)) - 1)


def _mix(z: torch.Tensor) -> torch.Tensor:
    """splitmix64's finalizer: a bijection of 64-bit words that scatters every input bit over the output."""
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    return z ^ _shr(z, 31)


def _mix_int(v: int) -> int:
    """:func:`_mix` of one Python integer (taken modulo 2^64)."""
    m = (1 << 64) - 1
    z = v & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return _signed(z ^ (z >> 31))


def sample_keys(x: torch.Tensor, seed: int, stream: int = 0) -> torch.Tensor:
    """One 64-bit key (int64, (N,)) per sample: a hash of the sample's own pixels, ``seed`` and ``stream``.

    The pixels are hashed as float32 bit patterns in logical (N, C, H, W) order, so the key does not depend
    on the memory layout (channels_last), the device, or the rest of the batch; equal images get equal keys.
    """
    bits = x.detach().float().flatten(1).contiguous().view(torch.int32).to(torch.int64)
    pos = _mix(torch.arange(1, bits.shape[1] + 1, device=x.device, dtype=torch.int64) * _GOLDEN)
    h = _mix(bits + pos).sum(1)
    return _mix(_mix(h + _mix_int(seed)) + _mix_int(stream + 1))


def _stream(keys: torch.Tensor, n: int) -> torch.Tensor:
    """(N, n) random 64-bit words: word j of sample i is splitmix64's j-th output from seed keys[i]."""
    j = torch.arange(1, n + 1, device=keys.device, dtype=torch.int64) * _GOLDEN
    return _mix(keys[:, None] + j)


def _uniform(bits: torch.Tensor) -> torch.Tensor:
    """Uniform float32 in [0, 1) from the top 24 bits of each word (exact on every device)."""
    return _shr(bits, 40).float() * 2.0**-24


def _normal(bits: torch.Tensor) -> torch.Tensor:
    """Standard normal float32 by Box-Muller, from the top and the bottom 24 bits of each word."""
    u1 = _uniform(bits)
    u2 = (bits & ((1 << 24) - 1)).float() * 2.0**-24
    return (-2 * torch.log1p(-u1)).sqrt() * torch.cos(2 * math.pi * u2)


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
