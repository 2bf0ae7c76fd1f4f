"""The data forms of an evaluation (advlab.evaluation.inputs): batches of a spec read for a zoo model, and the
model's clean predictions used as labels (``--labels predicted``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.evaluation.inputs import batches, predicted_labels


def test_predicted_labels_are_the_clean_argmax_batch_by_batch(
    model: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    with torch.no_grad():
        expected = model(x).argmax(1)
    for batch_size in (7, 80, 256):
        got = predicted_labels(model, x, batch_size)
        assert got.dtype == torch.long and got.device.type == "cpu" and torch.equal(got, expected)
    assert predicted_labels(model, x[:0]).shape == (0,)


def test_predicted_labels_refuse_nan_logits() -> None:
    nan = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    with torch.no_grad():
        nan[1].bias.fill_(float("nan"))
    with pytest.raises(AdvlabError, match="NaN or infinite"):
        predicted_labels(nan, torch.rand(3, 1, 8, 8))


def test_a_spec_is_read_for_a_zoo_model_with_its_labels(
    model: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits
    got = list(batches(model, "digits:test", batch_size=32, limit=80))
    assert [len(b[0]) for b in got] == [32, 32, 16]
    assert torch.equal(torch.cat([b[0] for b in got]), x) and torch.equal(torch.cat([b[1] for b in got]), y)
