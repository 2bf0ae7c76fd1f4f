"""Class names: the 1,000 ImageNet classes (bundled), the small data sets' own, a model's from a text file
(:func:`read_class_names`), and the one mapping of a data set's labels onto a model's classes (:func:`map_classes`:
by name, integer names as indices, else the sorted folder index), used by the library and the CLI."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from pathlib import Path

import torch

from advlab.data.files import open_regular, read_at_most, show
from advlab.errors import AdvlabError

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
    """Labels ``y`` (N,) of a data set with class names ``data_classes`` in the model's class indices, by
    :func:`map_classes` (by name; integer names as indices; -1 for a class the model does not have). ``y`` itself
    when nothing maps."""
    return map_classes(data_classes, model_classes).apply(y)


#: how the labels of a data set were put onto a model's classes (``DatasetInfo.label_source``, in config.json)
LABEL_SOURCES = ("names", "synsets", "indices", "folder order", "none")
#: the most class names a ``--class-names`` file may hold (ImageNet-21k has 21,841)
MAX_CLASS_NAMES = 100_000
#: the most unmatched names a note lists before "and N more"
NOTE_NAMES = 5


@dataclass(frozen=True)
class LabelMapping:
    """Data label i -> model class ``remap[i]`` (-1: the model has no such class, the sample is unlabelled);
    ``remap`` None keeps the labels as they are. ``source`` is one of :data:`LABEL_SOURCES`; ``note`` is one line
    for the user when some classes did not map (None when all did)."""

    remap: tuple[int, ...] | None
    source: str
    note: str | None = None

    def apply(self, y: torch.Tensor) -> torch.Tensor:
        """``y`` (N,) in the model's classes; unlabelled samples (-1) stay -1; ``y`` itself when nothing maps."""
        if self.remap is None:
            return y
        table = torch.tensor(self.remap, dtype=torch.long)
        return torch.where(y >= 0, table[y.clamp(min=0, max=max(len(table) - 1, 0))], y)


def _listed(names: Sequence[str]) -> str:
    shown = ", ".join(repr(n) for n in names[:NOTE_NAMES])
    return shown + (f" and {len(names) - NOTE_NAMES} more" if len(names) > NOTE_NAMES else "")


def _numbers(names: Sequence[str]) -> bool:
    return all(n.isascii() and n.isdigit() and len(n) < 10 for n in names)


def map_classes(
    data_classes: Sequence[str] | None, model_classes: Sequence[str] | None, *, order: str = "folder order"
) -> LabelMapping:
    """How a data set's labels become a model's class indices, in this order:

    1. a data set without class names (a tensors file's own indices), or whose names are the model's first ones
       (digits on the digits CNN, ImageNet synset folders on an ImageNet model): the labels as they are;
    2. by name, when the data's class names (folder names) are the model's ("cat" -> the index of "cat"); names
       the model lacks become -1 (unlabelled), told in ``note``;
    3. integer names ("0", "7") are class indices, whatever the model calls its classes;
    4. otherwise, for a model without class names (``model_classes`` None), the data's own order: the sorted
       folder index, as torchvision's ImageFolder does; a model with names that match none of the data's gets no
       labels (-1), told in ``note``.

    ``order``: the source of labels kept in the data's own order ("folder order" for class folders, "synsets" for
    ImageNet synset folders, "indices" for data sets that carry class indices). An integer name outside the
    model's classes is one :class:`AdvlabError` line."""
    if data_classes is None:
        return LabelMapping(None, "indices")
    numbers = _numbers(data_classes)
    if model_classes is None:
        return LabelMapping(tuple(int(n) for n in data_classes), "indices") if numbers else LabelMapping(None, order)
    if list(data_classes) == list(model_classes[: len(data_classes)]):
        return LabelMapping(None, "indices" if numbers else "synsets" if order == "synsets" else "names")
    lookup = {name: i for i, name in enumerate(model_classes)}
    remap = tuple(lookup.get(name, -1) for name in data_classes)
    missing = [n for n, r in zip(data_classes, remap, strict=True) if r < 0]
    if len(missing) < len(data_classes):
        note = None
        if missing:
            note = (
                f"{len(missing)} of {len(data_classes)} class names of the data are not classes of the model: "
                f"{_listed(missing)} (their images are unlabelled)"
            )
        return LabelMapping(remap, "synsets" if order == "synsets" else "indices" if numbers else "names", note)
    if numbers:
        k = len(model_classes)
        too_big = [n for n in data_classes if int(n) >= k]
        if too_big:
            raise AdvlabError(
                f"class {too_big[0]!r} of the data is class index {int(too_big[0])}, but the model has {k}"
            )
        return LabelMapping(tuple(int(n) for n in data_classes), "indices")
    return LabelMapping(
        (-1,) * len(data_classes),
        "none",
        f"none of the data's class names ({_listed(list(data_classes))}) is a class of the model: no labels "
        "(name the model's classes with --class-names, or use --labels predicted)",
    )


def read_class_names(path: str | Path) -> list[str]:
    """A model's class names from a text file, one per line (UTF-8; surrounding spaces and empty lines dropped):
    line k names class k. A name given twice, or no name, is one :class:`AdvlabError` line."""
    with open_regular(path, "class names file") as fh:
        raw = read_at_most(fh, 64 * MAX_CLASS_NAMES, path, "class names file")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise AdvlabError(f"class names file {show(path)} is not UTF-8 text") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise AdvlabError(f"class names file {show(path)} names no class (one name per line)")
    seen: set[str] = set()
    twice = next((n for n in names if n in seen or seen.add(n)), None)  # type: ignore[func-returns-value]
    if twice is not None:
        raise AdvlabError(f"class names file {show(path)} names {twice!r} twice")
    return names
