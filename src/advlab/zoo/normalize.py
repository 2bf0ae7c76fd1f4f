"""Mean/std normalization as a module inside the model, so every advlab model takes images in [0, 1].

Attacks perturb pixels in [0, 1]; the model, not the attack, knows how its network wants them scaled
(research note 002: "perturbation is to be added in the original or unnormalised image").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from advlab.errors import AdvlabError


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; ``x`` is (N, C, H, W) in [0, 1]. Buffers are not saved in state dicts.

    ``mean`` and ``std`` hold one value per channel, or one value for every channel; each must be finite and
    every std positive, or an :class:`~advlab.errors.AdvlabError` (the registry also checks them against the
    model's channel count: :func:`advlab.zoo.registry.normalization`).
    """

    # Registered as non-persistent buffers in __init__, shape (1, C, 1, 1).
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean, std = [float(v) for v in mean], [float(v) for v in std]
        if not mean or not std or (len(mean) != len(std) and 1 not in (len(mean), len(std))):
            raise AdvlabError(
                f"mean has {len(mean)} values but std has {len(std)}; give one per channel (or one for all)"
            )
        if not all(math.isfinite(v) for v in mean + std):
            raise AdvlabError(f"mean and std must be finite numbers, got mean {mean}, std {std}")
        if any(s <= 0 for s in std):
            raise AdvlabError(f"std must be positive, got {std}")
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


class Normalized(nn.Module):
    """A classifier that takes [0, 1] images: ``net(normalize(x))``.

    The wrapped network is ``.net``; load its own checkpoints with ``model.net.load_state_dict(...)``
    (``advlab.zoo.load(..., weights=FILE)`` does that for you).
    """

    def __init__(self, net: nn.Module, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        """Neither ``mean`` nor ``std``: no normalization; only one of them: the other is 0 (mean) or 1 (std)."""
        super().__init__()
        if mean is None and std is None:
            self.normalize: nn.Module = nn.Identity()
        else:
            self.normalize = Normalize((0.0,) if mean is None else mean, (1.0,) if std is None else std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))
