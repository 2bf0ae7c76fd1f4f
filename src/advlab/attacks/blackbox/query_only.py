"""The model as a black-box attack may see it: outputs for inputs, and no gradient of any kind.

``Attack._run`` wraps the model in :class:`QueryOnly` for every attack with ``white_box = False`` (random
noise, NES, SPSA, Square), so that a query-only attack which asked for a gradient by mistake fails loudly
instead of quietly turning into a white-box attack. This module imports nothing from the attacks, so
``advlab.attacks.base`` can import it without a cycle.
"""

from __future__ import annotations

import torch
from torch import nn


class QueryOnly(nn.Module):
    """Wrap ``model`` so that it answers queries (``forward`` under ``torch.no_grad()``) and refuses gradients.

    ``forward(x)`` raises :class:`RuntimeError` when ``x`` requires grad (someone wants d output / d x),
    and its output never carries an autograd graph, so ``backward`` through it cannot reach the model's
    parameters either. The wrapped model's mode (train/eval) and flags are left as they are.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad:
            raise RuntimeError(
                "this model is wrapped for a black-box attack: it answers queries only, and no gradient "
                "with respect to its input (or its parameters) is available"
            )
        with torch.no_grad():
            out: torch.Tensor = self.model(x)
        return out
