"""Trap models: classifiers whose gradients are obfuscated (Athalye, Carlini & Wagner 2018, "Obfuscated gradients
give a false sense of security"), each wrapping an honest twin network.

Every trap takes (N, C, H, W) images in [0, 1] like any advlab model, makes (almost) the twin's decisions on clean
inputs, and hides its gradients in one of the ways that paper lists, so that a naive gradient attack over-reports
its robustness. They are the test bench of the adaptive evaluation (:mod:`advlab.evaluation.diagnostics`,
:mod:`advlab.evaluation.bpda`) and of ``benchmarks/traps.py``; ``.twin`` is the honest network, the one an
adaptive reference attack (BPDA through the twin, EOT, transfer) differentiates. Any [0, 1] image classifier can
be a twin (the tests use the shipped digits CNN); a trap keeps the twin's ``.info`` and train/eval mode.

Quantizers (``levels`` + 1 grey levels, the grid k / levels, k = 0..levels, each pixel to its nearest level):
  :class:`RoundQuantized`      ``torch.round``                     (zero gradient almost everywhere)
  :class:`ThresholdQuantized`  sum_k [x > t_k] as float / levels   (comparisons cast to float: no gradient at all)
  :class:`IntCastQuantized`    (x * levels + 1/2) cast to an int    (the cast has no gradient)
Others:
  :class:`NumpyPreprocessed`   preprocessing in NumPy               (no gradient path to the input)
  :class:`NoisyInput`          fresh Gaussian noise at every call   (randomized: one gradient is one draw's)
  :class:`ProbabilityOutputs`  a final softmax                      (probabilities, not logits: CE saturates)
  :class:`NaNLogits`           NaN logits on some inputs            (every accuracy meaningless)
  :class:`HighFrequency`       logits + a small, fast-oscillating term (gradients large but useless)
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class Trap(nn.Module):
    """The base of the traps: ``twin`` (the honest network, a submodule), its ``info`` and train/eval mode."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.twin = net
        self.info = getattr(net, "info", None)
        self.train(net.training)


def _check_levels(levels: int, most: int | None = None) -> int:
    if not isinstance(levels, int) or levels < 1 or (most is not None and levels > most):
        raise ValueError(f"levels must be an int in [1, {most or 'inf'}], got {levels!r}")
    return levels


class RoundQuantized(Trap):
    """Obfuscates by an input quantizer written with ``torch.round``: ``twin(round(x * levels) / levels)``, zero
    gradient almost everywhere (shattered gradients)."""

    def __init__(self, net: nn.Module, levels: int = 15) -> None:
        super().__init__(net)
        self.levels = _check_levels(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin(torch.round(x * self.levels) / self.levels)


class ThresholdQuantized(Trap):
    """Obfuscates by an input quantizer built from comparisons cast to float: ``q = sum_k [x > t_k] / levels`` with
    thresholds ``t_k = (k - 1/2) / levels``, k = 1..levels (the nearest grey level, as :class:`RoundQuantized` but
    for ties), then ``twin(q)``; a bool cast to float has no gradient at all."""

    def __init__(self, net: nn.Module, levels: int = 15) -> None:
        super().__init__(net)
        self.levels = _check_levels(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = sum((x > (k - 0.5) / self.levels).float() for k in range(1, self.levels + 1)) / self.levels
        return self.twin(q)


class IntCastQuantized(Trap):
    """Obfuscates by clamping to the grid through an integer cast: ``(x * levels + 1/2).to(dtype).to(float) /
    levels`` (truncation of a non-negative number: round half up), then ``twin``; a cast to an integer dtype has no
    gradient. ``dtype``: ``torch.uint8`` (levels <= 255) or a wider integer type (``torch.long``...)."""

    def __init__(self, net: nn.Module, levels: int = 15, dtype: torch.dtype = torch.uint8) -> None:
        super().__init__(net)
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise ValueError(f"dtype must be an integer dtype, got {dtype}")
        self.levels, self.dtype = _check_levels(levels, 255 if dtype == torch.uint8 else None), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = (x.clamp(0, 1) * self.levels + 0.5).to(self.dtype).to(x.dtype) / self.levels
        return self.twin(q)


class NumpyPreprocessed(Trap):
    """Obfuscates by preprocessing in NumPy (a gamma curve ``x ** gamma``; the default 1.0 maps every image to
    itself): the twin's decisions, but no gradient path from the outputs to the input."""

    def __init__(self, net: nn.Module, gamma: float = 1.0) -> None:
        super().__init__(net)
        self.gamma = float(gamma)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = torch.from_numpy(np.clip(x.detach().cpu().numpy(), 0, 1) ** self.gamma).to(x)
        return self.twin(pre)


class NoisyInput(Trap):
    """Obfuscates by randomness: ``twin(clip(x + sigma * n, 0, 1))`` with fresh Gaussian noise n at every call
    (sigma in [0, 1] pixel units), drawn from a generator seeded with ``seed`` at the first call on each device
    (the sequence of draws is reproducible; two calls differ)."""

    def __init__(self, net: nn.Module, sigma: float = 0.25, seed: int = 0) -> None:
        super().__init__(net)
        self.sigma, self.seed = float(sigma), int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = self._generators.get(x.device)
        if gen is None:
            gen = self._generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return self.twin((x + self.sigma * noise).clamp(0, 1))


class ProbabilityOutputs(Trap):
    """Obfuscates by returning probabilities: ``softmax(twin(x))`` (the same argmax; the cross-entropy of
    probabilities saturates and its gradients vanish)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin(x).softmax(1)


class NaNLogits(Trap):
    """Obfuscates by NaN logits (a division by zero) on the images whose top-left pixel is above ``bright`` (on
    the 8x8 digits that pixel is almost always 0); the twin's logits elsewhere."""

    def __init__(self, net: nn.Module, bright: float = 0.05) -> None:
        super().__init__(net)
        self.bright = float(bright)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.twin(x)
        hit = (x[:, 0, 0, 0] > self.bright)[:, None]
        return torch.where(hit, torch.zeros_like(z) / 0, z)


class HighFrequency(Trap):
    """Obfuscates by a deterministic high-frequency term (gradients large but useless):

        logits_k(x) = twin(x)_k + amplitude * s_k * h(x),   h(x) = (1 / sqrt(P)) sum_p b_p sin(frequency * x_p)

    over the P = C * H * W pixels, with fixed random signs s_k (per class) and b_p (per pixel) drawn from ``seed``.
    |h| is about 1/sqrt(2), so the logits move by about ``amplitude``; the input gradient of the term is
    ``amplitude * frequency / sqrt(P)`` per pixel (62 for the defaults on 8x8 digits), and it changes sign every
    pi / frequency (0.003 pixel units), so a gradient step of any useful size goes in a random direction.
    """

    def __init__(self, net: nn.Module, amplitude: float = 0.5, frequency: float = 1000.0, seed: int = 0) -> None:
        super().__init__(net)
        self.amplitude, self.frequency, self.seed = float(amplitude), float(frequency), int(seed)

    def _signs(self, n: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 2 + offset)
        return (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(like)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.twin(x)
        flat = x.flatten(1)
        b = self._signs(flat.shape[1], 0, z)
        h = (torch.sin(self.frequency * flat.to(z.dtype)) * b).sum(1) / math.sqrt(flat.shape[1])
        return z + self.amplitude * h[:, None] * self._signs(z.shape[1], 1, z)
