"""Running a model in reduced precision for speed, with float32 logits out.

Attacks only need the model's gradients to point the right way; the verdict (did the prediction change?)
must come from the model as it is deployed. :func:`advlab.evaluate` therefore runs its attacks on
``Autocast(model)`` when asked (``attack_model=``) and re-checks every success on ``model`` in float32 (a
claimed success that float32 does not confirm is searched again in float32): the evaluation never counts an
adversarial example the float32 model does not show, and the search may get a little weaker (measured by
``benchmarks/amp_strength.py``).
"""

from __future__ import annotations

import torch
from torch import nn


class Autocast(nn.Module):
    """``model``'s forward under ``torch.autocast(device_type=x.device.type, dtype=dtype)``; logits in float32.

    bfloat16 (the default) has float32's exponent range, so no loss scaling is needed for input gradients;
    float16 may underflow small gradients. ``.info`` (a zoo model's :class:`~advlab.zoo.ModelInfo`) is kept.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype
        if hasattr(model, "info"):
            self.info = model.info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.model(x)
        return out.float()
