"""A small CNN for scikit-learn's 8x8 digits (1 channel, [0, 1] pixels, 10 classes)."""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A four-layer CNN for 8x8 digits.

    conv3x3(1->32) - ReLU - conv3x3(32->64) - ReLU - maxpool2 - conv3x3(64->128) - ReLU - maxpool2 -
    fc(512->128) - ReLU - fc(128->10).

    Takes (N, 1, 8, 8) images in [0, 1] (no normalization needed) and returns 10 logits. ~0.2 M parameters.

    Memory layout: with ``channels_last`` (the default) the convolution weights are stored channels_last
    (NHWC strides) and every input is made channels_last before the first convolution, so the feature maps
    and max-pools run in NHWC, which oneDNN computes faster on the CPU (an NCHW max-pool was 20% of PGD's
    time; forward + backward ~27% faster). The input's shape, the maths and the state-dict keys are those of
    the NCHW network: logits agree with ``channels_last=False`` to float rounding (~1e-6), and the flatten
    before the classifier reads the values in (C, H, W) order whatever the layout. ``model.to(memory_format=
    ...)`` still converts the weights; the input is made channels_last in either case. ``state_dict()`` holds
    contiguous (NCHW) copies of channels_last weights, so it saves with safetensors like any other model's.
    """

    def __init__(self, num_classes: int = 10, width: int = 32, *, channels_last: bool = True) -> None:
        super().__init__()
        w = width
        self.channels_last = bool(channels_last)
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 4 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(4 * w * 2 * 2, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )
        if self.channels_last:
            self.features.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.register_state_dict_post_hook(_contiguous_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last and x.ndim == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.classifier(self.features(x))


def _contiguous_state(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, metadata: object) -> None:
    """State-dict post-hook: channels_last weights become contiguous copies (safetensors refuses strided tensors)."""
    for k, v in state.items():
        if isinstance(v, torch.Tensor) and not v.is_contiguous():
            state[k] = v.contiguous()
