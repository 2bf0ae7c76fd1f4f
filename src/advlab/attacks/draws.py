"""Random numbers drawn per sample, so that an attack's result for an image depends only on the seed and the image.

A ``torch.Generator`` hands out numbers in batch order: the draws of image i depend on how many images came before
it in its batch, so the same seed gives other results at another ``--batch-size``, shard count, or subset. Here
every number of row i is a function of (``seed``, ``stream``, the pixels of ``x[i]``, a ``tag``) alone, keyed by
:func:`advlab.threat.sample_keys` (the random starts of PGD and APGD use the same keys). ``tag`` names one draw of
an attack (its iteration and purpose); the same tag gives the same numbers, so a loop passes a fresh tag per
iteration and per use, and rows that drop out of the loop (early stop) change nothing for the others.

Two sources, chosen by the size of one sample's draw (never by the batch): a few numbers per sample (Square's
window positions) come from the counter-based splitmix64 stream of :mod:`advlab.threat`, vectorized over the
batch on its device; :data:`PER_ROW` or more (an image-sized direction of NES or SPSA, a noise try) from one CPU
``torch.Generator`` per sample seeded with its key, 15x faster on a CPU than the integer stream for images.
Both are identical on every device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# the bit machinery of threat.random_start, shared so that both draw from one definition of a sample's stream
from advlab.threat import _mix, _mix_int, _normal, _stream, _uniform, sample_keys

Tag = int | Sequence[int]

#: the streams of the attacks' draws, apart from each other and from the random starts' (streams 0, 1, ...: restarts)
NOISE_STREAM, ESTIMATE_STREAM, SQUARE_STREAM, TARGET_STREAM = (k << 20 for k in range(1, 5))
#: per-sample draws of at least this many numbers come from a generator per sample (see the module docstring)
PER_ROW = 1024
_U64 = (1 << 64) - 1


def _tag_word(tag: Tag) -> int:
    word = 0
    for part in (tag,) if isinstance(tag, int) else tag:
        word = _mix_int(word + _mix_int(int(part) + 1))
    return word


def _size(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


class SampleDraws:
    """Per-sample random numbers for the batch ``x`` (see the module docstring). Every method takes ``rows``
    (indices into the batch; None for all of it), a ``tag`` and a per-sample ``shape``, and returns a
    (len(rows), *shape) tensor on ``x``'s device."""

    def __init__(self, x: torch.Tensor, seed: int, stream: int = 0) -> None:
        self.keys = sample_keys(x, seed, stream)

    def _keys(self, rows: torch.Tensor | None, tag: Tag) -> torch.Tensor:
        keys = self.keys if rows is None else self.keys[rows.to(self.keys.device)]
        return _mix(keys + _tag_word(tag))

    def _per_row(
        self, rows: torch.Tensor | None, tag: Tag, shape: Sequence[int], fill: Callable[[torch.Generator], torch.Tensor]
    ) -> torch.Tensor:
        keys = self._keys(rows, tag)
        out = [fill(torch.Generator().manual_seed(k & _U64)) for k in keys.tolist()]
        return torch.stack(out).to(keys.device) if out else torch.empty(0, *shape, device=keys.device)

    def bits(self, rows: torch.Tensor | None, tag: Tag, shape: Sequence[int]) -> torch.Tensor:
        """Random 64-bit words (int64), from the counter-based stream."""
        keys = self._keys(rows, tag)
        return _stream(keys, _size(shape)).view(len(keys), *shape)

    def uniform(self, rows: torch.Tensor | None, tag: Tag, shape: Sequence[int]) -> torch.Tensor:
        """Uniform float32 in [0, 1)."""
        if _size(shape) >= PER_ROW:
            return self._per_row(rows, tag, shape, lambda g: torch.rand(tuple(shape), generator=g))
        return _uniform(self.bits(rows, tag, shape))

    def normal(self, rows: torch.Tensor | None, tag: Tag, shape: Sequence[int]) -> torch.Tensor:
        """Standard normal float32."""
        if _size(shape) >= PER_ROW:
            return self._per_row(rows, tag, shape, lambda g: torch.randn(tuple(shape), generator=g))
        return _normal(self.bits(rows, tag, shape))

    def signs(self, rows: torch.Tensor | None, tag: Tag, shape: Sequence[int]) -> torch.Tensor:
        """-1.0 or +1.0 with probability 1/2 each (float32)."""
        return (self.uniform(rows, tag, shape) < 0.5).float() * 2 - 1

    def integers(
        self, rows: torch.Tensor | None, tag: Tag, low: int, high: int, shape: Sequence[int] = ()
    ) -> torch.Tensor:
        """Integers uniform in [low, high) (int64; from 24 random bits, so ``high - low`` well below 2^24)."""
        u = self.uniform(rows, tag, shape).double()
        return (low + (u * (high - low)).floor().long()).clamp(max=high - 1)
