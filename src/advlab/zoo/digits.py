"""A small CNN for scikit-learn's 8x8 digits (1 channel, [0, 1] pixels, 10 classes)."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """conv3x3(1->32) - ReLU - conv3x3(32->64) - ReLU - maxpool2 - conv3x3(64->128) - ReLU - maxpool2 - fc(512->128) - ReLU - fc(128->10).

    Takes (N, 1, 8, 8) images in [0, 1] (no normalization needed) and returns 10 logits. ~0.2 M parameters.
    """

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(4 * w * 2 * 2, 128), nn.ReLU(), nn.Linear(128, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))
