"""Data specs: one string names a data set for the library and the CLI; images come out in [0, 1].

  digits, digits:train, digits:test   scikit-learn's 8x8 digits (test = indices 0, 3, 6, ...: 599 images)
  samples                             scikit-image's colour photos with hand-checked ImageNet labels
  folder:PATH                         class sub-folders (ImageNet synset names map to the standard indices)
  PATH, 'GLOB'                        image files (labels -1) ; a directory without prefix is a folder
  tensors:FILE                        .npz or .safetensors with x (float in [0, 1] or uint8) and y
  path/to/file.py:factory             your own torch Dataset: factory() returns one of (image in [0, 1], label)
  cifar10[:train|test], mnist[:...], svhn[:...]   the official files, from $ADVLAB_DATA (downloaded when online)

``open_for_model(spec, input_size=..., channels=..., class_names=...)`` reads a data set for a model batch by
batch (sizes, channels and labels decided in one place, :mod:`advlab.data.stream`), ``load_for_model`` stacks the
same batches; ``load(spec)`` returns ``(x, y)`` tensors as the data set is, ``open(spec)`` streams them.

Every input is bounded, and anything outside a bound is one :class:`~advlab.errors.AdvlabError` line, raised
before the data is read whole: only regular files are opened (``files.py``: no FIFO, device or directory, never
blocking); an image has at most ``images.MAX_IMAGE_PIXELS`` pixels (from its header) and, to be resized, an
aspect ratio of at most ``images.MAX_ASPECT``:1; a ``tensors:`` file declares at most ``specs.MAX_TENSOR_VALUES``
values, no zero-size dimension, no NaN, Inf or value outside [0, 1]; the official files are checked against the
official shapes from their headers and never inflated further (``official.py``).
"""

from __future__ import annotations

from advlab.data.classes import (
    LABEL_SOURCES,
    imagenet_classes,
    imagenet_synsets,
    labels_for_model,
    map_classes,
    read_class_names,
)
from advlab.data.specs import DatasetInfo, describe, item_names, native_shape, spec_names
from advlab.data.stream import Batches, load, load_for_model, open, open_for_model, read_subset

__all__ = [
    "LABEL_SOURCES",
    "Batches",
    "DatasetInfo",
    "describe",
    "imagenet_classes",
    "imagenet_synsets",
    "item_names",
    "labels_for_model",
    "load",
    "load_for_model",
    "map_classes",
    "native_shape",
    "open",
    "open_for_model",
    "read_class_names",
    "read_subset",
    "spec_names",
]
