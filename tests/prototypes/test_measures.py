"""What a prototype run measures: the Inception-Score-style number, judges, and probabilities on any model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import prototypes


def test_inception_score_and_judges() -> None:
    eye = torch.eye(10)
    assert prototypes.inception_score(eye) == pytest.approx(10, rel=1e-6)
    assert prototypes.inception_score(eye[[3] * 10]) == pytest.approx(1, rel=1e-6)
    assert prototypes.inception_score(torch.full((5, 10), 0.1)) == pytest.approx(1, rel=1e-6)
    v = prototypes.judge(eye[[0, 1, 2, 2]], torch.tensor([0, 1, 2, 3]))
    assert v["top1_agreement"] == 0.75 and v["target_probability_mean"] == 0.75


def test_class_probabilities_on_a_parameter_free_model() -> None:
    """The device comes from advlab.device.device_of: a model without parameters (here: the 4 pixels are
    the logits) is judged on the CPU instead of raising StopIteration."""
    x = torch.rand(5, 1, 2, 2)
    p = prototypes.class_probabilities(nn.Flatten(), x, batch_size=2)
    assert p.shape == (5, 4) and torch.allclose(p, x.flatten(1).softmax(1))
    assert torch.allclose(p.sum(1), torch.ones(5))
