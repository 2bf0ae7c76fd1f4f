"""Content fingerprints: what a resumed run must match besides its settings.

A run's config.json records the spec strings (``--data x.npz``, ``--weights w.safetensors``); overwriting those
files between an interruption and ``--resume`` would mix batches of the old data with the new. So the runner
also records a hash of the content itself: of each tensor's dtype, shape and bytes, of a module's state_dict
(every parameter and buffer, by name). BLAKE2b over the raw bytes runs at about 1 GB/s on one core.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"tensor {t.dtype} {tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, Mapping):
        for k in sorted(obj, key=str):
            h.update(f"key {k!s};".encode())
            _feed(h, obj[k])
    elif isinstance(obj, (list, tuple)):
        h.update(f"seq {len(obj)};".encode())
        for v in obj:
            _feed(h, v)
    else:
        h.update(f"value {obj!r};".encode())


def content_hash(obj: Any) -> str:
    """A 16-hex-digit hash of ``obj``: a tensor, a module (its state_dict), or mappings / sequences of them."""
    h = hashlib.blake2b(digest_size=8)
    _feed(h, obj)
    return h.hexdigest()


def fingerprint(inputs: Mapping[str, Any]) -> dict[str, str]:
    """``{name: content_hash(thing)}`` for each named input (``{"model": model, "data": (x, y)}``)."""
    return {name: content_hash(thing) for name, thing in inputs.items()}


def changed(saved: Mapping[str, Any] | None, now: Mapping[str, str]) -> list[str]:
    """The names whose hash differs from ``saved`` (the fingerprint in config.json; a run started before
    fingerprints were recorded has none and is taken as matching)."""
    if not isinstance(saved, Mapping):
        return []
    return [k for k, v in now.items() if k in saved and saved[k] != v]
