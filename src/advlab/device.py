"""Where a model lives: the one place that answers "which device does this module compute on?"."""

from __future__ import annotations

import itertools

import torch
from torch import nn


def device_of(module: nn.Module, default: torch.device | str = "cpu") -> torch.device:
    """The device of ``module``'s first parameter or buffer; ``default`` for a module that has neither
    (a parameter-free model such as a fixed filter bank, where ``next(model.parameters())`` would raise)."""
    t = next(itertools.chain(module.parameters(), module.buffers()), None)
    return t.device if t is not None else torch.device(default)
