"""Memory layout of a model's convolution weights: channels_last (NHWC strides) or contiguous (NCHW).

The layout changes where numbers sit in memory, never the maths: the model still takes (N, C, H, W) images in
[0, 1] of any layout, and its logits agree with the other layout's to float rounding (efficientnet-lite0: max
difference ~1e-6 on the logits). A convolution whose weight is channels_last runs channels_last whatever the
input's layout (oneDNN on the CPU and cuDNN both pick it), and the feature maps after it stay channels_last, so
converting the weights is enough. Input gradients then come back channels_last too (same values; use
``.reshape``, not ``.view``, to flatten them).

:func:`advlab.zoo.load` lays out each built-in model in the layout measured faster for it on the CPU
(``benchmarks/channels_last.py``; the entry's ``channels_last`` field in :mod:`advlab.zoo.registry`) unless asked
otherwise; a user's model file keeps the layout its factory built unless a format is named.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from advlab.errors import AdvlabError
from advlab.zoo.digits import DigitsCNN

MemoryFormat = Literal["auto", "channels_last", "contiguous"]
#: ``auto``: the layout measured faster for a built-in model (a user model as built); the others force one
MEMORY_FORMATS: tuple[str, ...] = ("auto", "channels_last", "contiguous")


def chosen_format(memory_format: str, faster_channels_last: bool | None) -> str | None:
    """The layout to apply: ``memory_format`` itself unless ``auto``, where it is ``channels_last`` or
    ``contiguous`` by the model's measured default (``faster_channels_last``), or None (leave the model as built)
    when there is none (user models)."""
    if memory_format not in MEMORY_FORMATS:
        raise AdvlabError(f"memory format must be one of {', '.join(MEMORY_FORMATS)}, not {memory_format!r}")
    if memory_format != "auto":
        return memory_format
    if faster_channels_last is None:
        return None
    return "channels_last" if faster_channels_last else "contiguous"


def set_memory_format(model: nn.Module, memory_format: str) -> nn.Module:
    """Lay out every 4-D parameter and buffer of ``model`` channels_last or contiguous (NCHW), in place; returns
    ``model``. ``auto`` leaves it as it is. A :class:`~advlab.zoo.digits.DigitsCNN` inside also converts (or stops
    converting) its input, since its max-pools only run NHWC on a channels_last input. ``state_dict()`` of the
    model and of every module below it holds contiguous copies (the NCHW network's tensors: safetensors refuses
    strided ones), so checkpoints are the same in either layout."""
    fmt = chosen_format(memory_format, None)
    if fmt is None:
        return model
    channels_last = fmt == "channels_last"
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model.to(memory_format=layout)  # type: ignore[call-overload]  # the stub lacks the memory_format keyword
    for module in model.modules():
        if isinstance(module, DigitsCNN):
            module.channels_last = channels_last
        if channels_last and not getattr(module, "_advlab_contiguous_state", False):
            module.register_state_dict_post_hook(_contiguous_state)
            setattr(module, "_advlab_contiguous_state", True)  # noqa: B010 - nn.Module's stub types attributes
    return model


def is_channels_last(model: nn.Module) -> bool:
    """Whether every 4-D parameter of ``model`` is stored channels_last (False for a model with none)."""
    weights = [p for p in model.parameters() if p.ndim == 4]
    return bool(weights) and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)


def _contiguous_state(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, metadata: object) -> None:
    """State-dict post-hook: this module's channels_last tensors become contiguous copies."""
    for k, v in state.items():
        if k.startswith(prefix) and isinstance(v, torch.Tensor) and not v.is_contiguous():
            state[k] = v.contiguous()
