"""ResNet-18 (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016).

Two variants share one block class and one network class; only the stem differs:

* ``resnet18``: the ImageNet network. Stem is a 7x7 stride-2 conv (64 channels, no bias),
  batch norm, ReLU and a 3x3 stride-2 max pool; then four stages of two BasicBlocks with
  64/128/256/512 channels and strides 1/2/2/2, global average pooling and a linear layer.
* ``cifar_resnet18``: the usual variant for 32x32 inputs. Stem is a 3x3 stride-1 conv
  (64 channels, no bias), batch norm and ReLU, with no max pool; the rest is the same.

A BasicBlock is conv3x3-BN-ReLU-conv3x3-BN plus a shortcut, then ReLU. Where the shape
changes, the shortcut is a 1x1 stride-s conv followed by BN (``downsample``), otherwise identity.

Module names, registration order and parameter shapes match torchvision's ``resnet18``,
so its ``state_dict`` keys (``conv1.weight``, ``bn1.*``, ``layerN.M.conv1.weight``,
``layerN.0.downsample.{0,1}.*``, ``fc.*``, ...) are identical and its checkpoints load
with ``load_state_dict(strict=True)`` without torchvision installed.

Inputs are (N, 3, H, W) floats, already normalised; outputs are logits (N, num_classes).
"""

from __future__ import annotations

import torch
from torch import nn

STAGE_CHANNELS: tuple[int, ...] = (64, 128, 256, 512)
STAGE_STRIDES: tuple[int, ...] = (1, 2, 2, 2)
BLOCKS_PER_STAGE: int = 2


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and a residual shortcut (1x1 conv + BN if shape changes)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    """ResNet-18 body with a configurable stem (conv1 kernel/stride, optional max pool)."""

    # The four stages are registered by name in __init__ (setattr keeps torchvision's order and keys).
    layer1: nn.Sequential
    layer2: nn.Sequential
    layer3: nn.Sequential
    layer4: nn.Sequential

    def __init__(
        self,
        num_classes: int,
        stem_kernel: int,
        stem_stride: int,
        stem_maxpool: bool,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, stem_kernel, stride=stem_stride, padding=stem_kernel // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module | None = None
        if stem_maxpool:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_channels = 64
        for index, (channels, stride) in enumerate(zip(STAGE_CHANNELS, STAGE_STRIDES, strict=True), start=1):
            blocks = [BasicBlock(in_channels, channels, stride)]
            blocks += [BasicBlock(channels, channels) for _ in range(BLOCKS_PER_STAGE - 1)]
            setattr(self, f"layer{index}", nn.Sequential(*blocks))
            in_channels = channels
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.maxpool is not None:
            x = self.maxpool(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(num_classes: int = 1000) -> nn.Module:
    """ImageNet ResNet-18; state-dict compatible with torchvision's ``resnet18``."""
    return ResNet(num_classes, stem_kernel=7, stem_stride=2, stem_maxpool=True)


def cifar_resnet18(num_classes: int = 10) -> nn.Module:
    """CIFAR ResNet-18 for 32x32 inputs: 3x3 stride-1 conv1 and no max pool."""
    return ResNet(num_classes, stem_kernel=3, stem_stride=1, stem_maxpool=False)
