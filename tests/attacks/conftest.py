from __future__ import annotations

import pytest
import torch

from advlab import data, zoo


@pytest.fixture(scope="session")
def digits_model() -> torch.nn.Module:
    return zoo.load("digits-cnn")


@pytest.fixture(scope="session")
def digits_batch(digits_model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """120 test digits the model classifies correctly (so success means the attack changed a right answer)."""
    x, y = data.load("digits:test")
    with torch.no_grad():
        ok = digits_model(x).argmax(1) == y
    return x[ok][:120], y[ok][:120]
