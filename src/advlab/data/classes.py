"""Class names: the 1,000 ImageNet classes (bundled) and the small data sets' own, and the one mapping of a
data set's labels onto a model's classes by name (:func:`labels_for_model`), used by the library and the CLI."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import cache
from importlib.resources import files

import torch

SYNSET_RE = re.compile(r"^n\d{8}$")


@cache
def _imagenet_rows() -> tuple[tuple[str, str, str], ...]:
    text = files("advlab.data").joinpath("imagenet_classes.tsv").read_text(encoding="utf-8")
    rows = [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]
    return tuple((r[1], r[2], r[3]) for r in rows)


def imagenet_classes() -> list[str]:
    """Short names of the ImageNet-1k classes in the standard index order (0 = "tench", 106 = "wombat")."""
    return [r[1] for r in _imagenet_rows()]


def imagenet_synsets() -> list[str]:
    """WordNet ids of the ImageNet-1k classes in index order (0 = "n01440764")."""
    return [r[0] for r in _imagenet_rows()]


@cache
def imagenet_synset_index() -> dict[str, int]:
    """WordNet id -> class index, for ImageNet folders named by synset (``n01440764/``...)."""
    return {s: i for i, s in enumerate(imagenet_synsets())}


def imagenet_full_names() -> list[str]:
    """All WordNet names of each class, comma-separated ("tabby, tabby cat")."""
    return [r[2] for r in _imagenet_rows()]


DIGIT_CLASSES = [str(i) for i in range(10)]


def labels_for_model(y: torch.Tensor, data_classes: Sequence[str] | None, model_classes: Sequence[str]) -> torch.Tensor:
    """Labels ``y`` (N,) in the model's class indices: a data set with its own class names (a folder of cats/ and
    dogs/, or of 3/ and 7/) is mapped by name, label i -> the index of ``data_classes[i]`` in ``model_classes``,
    and a class the model does not have becomes -1 (unlabelled), never another class. Unlabelled samples (-1)
    stay -1; ``y`` is returned as it is when the data set has no class names or its names are the first ones of
    the model's (digits on the digits CNN, the ImageNet photos on an ImageNet model)."""
    if data_classes is None or list(data_classes) == list(model_classes[: len(data_classes)]):
        return y
    lookup = {name: i for i, name in enumerate(model_classes)}
    remap = torch.tensor([lookup.get(name, -1) for name in data_classes], dtype=torch.long)
    return torch.where(y >= 0, remap[y.clamp(min=0)], y)
