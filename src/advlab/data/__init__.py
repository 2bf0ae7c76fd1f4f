"""Data specs: one string names a data set for the library and the CLI; images come out in [0, 1].

  digits, digits:train, digits:test   scikit-learn's 8x8 digits (test = indices 0, 3, 6, ...: 599 images)
  samples                             scikit-image's colour photos with hand-checked ImageNet labels
  folder:PATH                         class sub-folders (ImageNet synset names map to the standard indices)
  PATH, 'GLOB'                        image files (labels -1) ; a directory without prefix is a folder
  tensors:FILE                        .npz or .safetensors with x (float in [0, 1] or uint8) and y
  cifar10[:train|test], mnist[:...], svhn[:...]   the official files, from $ADVLAB_DATA (downloaded when online)

``load(spec)`` returns ``(x, y)`` tensors (small sets); ``open(spec)`` streams batches and never holds a
folder's images all at once.

Every input is bounded, and anything outside a bound is one :class:`~advlab.errors.AdvlabError` line, raised
before the data is read whole: only regular files are opened (``files.py``: no FIFO, device or directory, never
blocking); an image has at most ``images.MAX_IMAGE_PIXELS`` pixels (from its header) and, to be resized, an
aspect ratio of at most ``images.MAX_ASPECT``:1; a ``tensors:`` file declares at most ``specs.MAX_TENSOR_VALUES``
values, no zero-size dimension, no NaN, Inf or value outside [0, 1]; the official files are checked against the
official shapes from their headers and never inflated further (``official.py``).
"""

from __future__ import annotations

from advlab.data.classes import imagenet_classes, imagenet_synsets, labels_for_model
from advlab.data.specs import (
    Batches,
    DatasetInfo,
    describe,
    item_names,
    load,
    load_for_model,
    open,
    spec_names,
)

__all__ = [
    "Batches",
    "DatasetInfo",
    "describe",
    "imagenet_classes",
    "imagenet_synsets",
    "item_names",
    "labels_for_model",
    "load",
    "load_for_model",
    "open",
    "spec_names",
]
