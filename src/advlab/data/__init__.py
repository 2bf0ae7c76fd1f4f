"""Data specs: one string names a data set for the library and the CLI; images come out in [0, 1].

  digits, digits:train, digits:test   scikit-learn's 8x8 digits (test = indices 0, 3, 6, ...: 599 images)
  samples                             scikit-image's colour photos with hand-checked ImageNet labels
  folder:PATH                         class sub-folders (ImageNet synset names map to the standard indices)
  PATH, 'GLOB'                        image files (labels -1) ; a directory without prefix is a folder
  tensors:FILE                        .npz or .safetensors with x (float in [0, 1] or uint8) and y
  cifar10[:train|test], mnist[:...], svhn[:...]   the official files, from $ADVLAB_DATA (downloaded when online)

``load(spec)`` returns ``(x, y)`` tensors (small sets); ``open(spec)`` streams batches and never holds a
folder's images all at once.
"""

from __future__ import annotations

from advlab.data.classes import imagenet_classes, imagenet_synsets
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

__all__ = ["Batches", "DatasetInfo", "describe", "imagenet_classes", "imagenet_synsets", "item_names", "load", "load_for_model", "open", "spec_names"]
