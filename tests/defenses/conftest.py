"""Fixtures of the defense tests: digits-cnn, digits:test and its undefended accuracy (98.66% when written)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import data, zoo
from tests.defenses.helpers import accuracy


@pytest.fixture(scope="module")
def digits() -> nn.Module:
    return zoo.load("digits-cnn")


@pytest.fixture(scope="module")
def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    return data.load("digits:test")


@pytest.fixture(scope="module")
def base_accuracy(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> float:
    return accuracy(digits, *digits_data)
