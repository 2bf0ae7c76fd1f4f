"""Class names: the 1,000 ImageNet classes (bundled) and the small data sets' own."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

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
