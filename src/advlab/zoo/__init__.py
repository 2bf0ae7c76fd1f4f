"""The model zoo: every model takes (N, C, H, W) float32 images in [0, 1] and returns logits.

``zoo.load(spec)`` gives an ``nn.Module`` in eval mode with the mean/std normalization inside it;
``zoo.info(spec)`` says what it expects (input size, channels, classes, normalization).

Specs:
  efficientnet-lite0        ImageNet-pretrained, offline (weights ship in a pip package); -lite1/-lite2 with [zoo]
  digits-cnn                small CNN for scikit-learn's 8x8 digits, weights shipped (rebuild: advlab train)
  resnet18                  ImageNet ResNet-18 with torchvision's state-dict keys; random init unless weights given
  cifar-resnet18            CIFAR-style ResNet-18 (3x3 stem, no max-pool), 10 classes, random init unless weights given
  torchvision:NAME[:WEIGHTS]  any torchvision classifier, when torchvision imports (WEIGHTS e.g. DEFAULT)
  timm:NAME[:pretrained]    any timm model, when timm imports (its own weights with :pretrained, if cached)
  path/to/file.py:factory   your own model: factory() returns an nn.Module; pass weights=FILE and mean/std if needed;
                            input_size / in_channels / class_names attributes (or load(input_size=, class_names=))
                            declare its input and classes; without an input size the data keep their own size
"""

from __future__ import annotations

from advlab.zoo.precision import Autocast
from advlab.zoo.registry import (
    ModelInfo,
    available,
    check_input,
    check_labels,
    check_output,
    info,
    info_of,
    load,
    names,
    open_data,
)

__all__ = [
    "Autocast",
    "ModelInfo",
    "available",
    "check_input",
    "check_output",
    "check_labels",
    "info",
    "info_of",
    "load",
    "names",
    "open_data",
]
