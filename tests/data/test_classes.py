"""The one mapping of a data set's labels onto a model's classes, by class name (advlab.data.labels_for_model)."""

from __future__ import annotations

import torch

from advlab import data
from advlab.data.classes import DIGIT_CLASSES, imagenet_classes


def test_labels_are_mapped_by_name_and_unknown_classes_become_unlabelled() -> None:
    y = torch.tensor([0, 1, 2, -1, 1])
    mapped = data.labels_for_model(y, ["7", "3", "cat"], DIGIT_CLASSES)
    assert mapped.tolist() == [7, 3, -1, -1, 3]  # "cat" is no digit: unlabelled, never another class
    assert y.tolist() == [0, 1, 2, -1, 1]  # the input is left alone


def test_labels_already_in_the_models_order_are_kept() -> None:
    y = torch.tensor([0, 5, 9, -1])
    assert data.labels_for_model(y, None, DIGIT_CLASSES) is y  # no class names: nothing to map by
    assert data.labels_for_model(y, DIGIT_CLASSES, DIGIT_CLASSES) is y
    assert data.labels_for_model(y, ["0", "1", "2"], DIGIT_CLASSES) is y  # the model's first classes
    photos = torch.tensor([281, 967])
    assert data.labels_for_model(photos, imagenet_classes(), imagenet_classes()) is photos
