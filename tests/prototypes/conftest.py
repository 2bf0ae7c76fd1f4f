"""Shared fixtures for the prototype tests: the 8x8 digits CNN, loaded once per session."""

from __future__ import annotations

import pytest
import torch

from advlab import zoo


@pytest.fixture(scope="session")
def digits() -> torch.nn.Module:
    return zoo.load("digits-cnn")
