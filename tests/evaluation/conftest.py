"""Shared fixtures of the evaluation tests: the digits CNN (``model``, and ``twin`` for the traps) and 80 test
digits."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import data, zoo


@pytest.fixture(scope="package")
def model() -> nn.Module:
    return zoo.load("digits-cnn")


@pytest.fixture(scope="package")
def twin() -> nn.Module:
    """The honest digits CNN that the trap models of :mod:`advlab.zoo.traps` wrap (not modified by any test)."""
    return zoo.load("digits-cnn")


@pytest.fixture(scope="package")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.load("digits:test")
    return x[:80], y[:80]


class Scaled(nn.Module):
    """The same classifier with its logits multiplied: softmax saturates, CE gradients vanish in float32."""

    def __init__(self, net: nn.Module, factor: float) -> None:
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.factor
