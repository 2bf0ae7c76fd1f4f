"""Transformation robustness (Olah et al. 2017): the model sees randomly moved copies of the image at every step,
so that a prototype has to be one of its class from several viewpoints, not one fragile pixel pattern.

Each of the ``copies`` views of each image is an independent random similarity transform, applied with
``affine_grid`` + ``grid_sample`` (bilinear, reflection padding; differentiable in the image):

    shift   (dx, dy) uniform in [-jitter, jitter] pixels
    zoom    z uniform in [1 - scale, 1 + scale] (z > 1 zooms in: a random crop resized to the full image)
    rotate  r uniform in [-rotate, rotate] degrees

The output pixel at normalized position u samples the input at A(u) = R(r) u / z + 2 (dx / W, dy / H). Draws
come from a CPU ``torch.Generator`` (the same on every device); the views are made on the images' device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Transforms:
    """``copies`` random views per image and step: shifts up to ``jitter`` pixels, zoom by up to +-``scale``
    (a fraction), rotations up to +-``rotate`` degrees."""

    jitter: float = 0.0
    scale: float = 0.0
    rotate: float = 0.0
    copies: int = 1

    def validate(self) -> None:
        if self.jitter < 0 or self.rotate < 0 or not 0 <= self.scale < 1:
            raise ValueError(f"transforms need jitter >= 0, rotate >= 0 and 0 <= scale < 1, got {self}")
        if self.copies < 1:
            raise ValueError(f"transforms_per_step must be >= 1, got {self.copies}")

    @property
    def identity(self) -> bool:
        return self.jitter == 0 and self.scale == 0 and self.rotate == 0

    def matrices(self, n: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
        """(copies * n, 2, 3) affine matrices of the views, copy-major (view v of image i is row v * n + i)."""
        m = self.copies * n
        u = torch.rand(m, 4, generator=gen) * 2 - 1
        zoom = 1 + self.scale * u[:, 0]
        angle = math.radians(self.rotate) * u[:, 1]
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        tx, ty = 2 * self.jitter * u[:, 2] / w, 2 * self.jitter * u[:, 3] / h
        return torch.stack((torch.stack((cos, -sin, tx), 1), torch.stack((sin, cos, ty), 1)), 1)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """The (copies * N, C, H, W) views of ``x`` (N, C, H, W), copy-major; ``x`` repeated when identity."""
        n, _, h, w = x.shape
        if self.identity:
            return x if self.copies == 1 else x.repeat(self.copies, 1, 1, 1)
        theta = self.matrices(n, h, w, gen).to(x)
        xs = x if self.copies == 1 else x.repeat(self.copies, 1, 1, 1)
        grid = F.affine_grid(theta, list(xs.shape), align_corners=False)
        return F.grid_sample(xs, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
