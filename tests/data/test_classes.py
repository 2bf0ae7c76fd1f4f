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


CIFAR = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_the_four_rules_in_order() -> None:
    from advlab.data import map_classes

    by_name = map_classes(["cat", "dog"], CIFAR)
    assert (by_name.remap, by_name.source, by_name.note) == ((3, 5), "names", None)
    numbers = map_classes(["2", "9"], CIFAR)  # integer folders are class indices, whatever the model's names
    assert (numbers.remap, numbers.source) == ((2, 9), "indices")
    order = map_classes(["circle", "cross", "square"], None)  # a model without names: ImageFolder's sorted index
    assert (order.remap, order.source, order.note) == (None, "folder order", None)
    assert map_classes(["3", "7"], None).remap == (3, 7)
    none = map_classes(["cats", "dogs"], CIFAR)  # named model, no name in common: no labels, and why
    assert none.remap == (-1, -1) and none.source == "none" and "--class-names" in none.note
    assert map_classes(None, CIFAR).source == "indices"
    assert map_classes(imagenet_classes(), imagenet_classes(), order="synsets").source == "synsets"


def test_partial_match_is_one_note_naming_the_missing() -> None:
    from advlab.data import map_classes

    m = map_classes(["cat", "unicorn", "dog", "yeti"], CIFAR)
    assert m.remap == (3, -1, 5, -1) and m.source == "names"
    assert m.note is not None and "\n" not in m.note and "'unicorn', 'yeti'" in m.note and "2 of 4" in m.note
    assert m.apply(torch.tensor([0, 1, 2, 3, -1])).tolist() == [3, -1, 5, -1, -1]


def test_classes_the_model_cannot_have_are_refused() -> None:
    import pytest

    from advlab.data import map_classes
    from advlab.errors import AdvlabError

    with pytest.raises(AdvlabError, match="class index 12, but the model has 10"):
        map_classes(["12"], CIFAR)


def test_class_names_file(tmp_path) -> None:  # noqa: ANN001
    import pytest

    from advlab.data import read_class_names
    from advlab.errors import AdvlabError

    f = tmp_path / "names.txt"
    f.write_text("\ufeffcat \n\n dog\nbird\n", encoding="utf-8")
    assert read_class_names(f) == ["cat", "dog", "bird"]
    f.write_text("cat\ndog\ncat\n")
    with pytest.raises(AdvlabError, match="names 'cat' twice"):
        read_class_names(f)
    f.write_text("\n \n")
    with pytest.raises(AdvlabError, match="names no class"):
        read_class_names(f)
