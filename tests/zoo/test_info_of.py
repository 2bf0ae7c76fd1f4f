"""``zoo.info_of``: the typed way to read the facts ``zoo.load`` attached to a model."""

from __future__ import annotations

import pytest
from torch import nn

from advlab import zoo
from advlab.errors import AdvlabError


def test_info_of_a_loaded_model_is_its_spec_facts() -> None:
    model = zoo.load("digits-cnn")
    found = zoo.info_of(model)
    assert found is model.info
    assert (found.name, found.input_size, found.channels, len(found.class_names)) == ("digits-cnn", 8, 1, 10)


def test_info_of_a_model_built_elsewhere_is_a_clear_usage_error() -> None:
    with pytest.raises(AdvlabError, match="Linear carries no advlab ModelInfo: load it with advlab.zoo.load"):
        zoo.info_of(nn.Linear(4, 2))
    stray = nn.Linear(4, 2)
    stray.info = {"name": "not a ModelInfo"}  # type: ignore[assignment]
    with pytest.raises(AdvlabError, match="no advlab ModelInfo"):
        zoo.info_of(stray)
