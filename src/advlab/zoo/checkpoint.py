"""Reading weights without executing code: safetensors, or ``torch.load(..., weights_only=True)``."""

from __future__ import annotations

import pickle
import warnings
from pathlib import Path

import torch
from torch import nn

from advlab.errors import AdvlabError

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, on the CPU.

    ``.safetensors`` is read with safetensors; anything else (``.pt``, ``.pth``, ``.bin``) with
    ``torch.load(weights_only=True)``, which refuses pickles that would run code. A bare state dict is
    taken as is; one nested under ``"state_dict"``, ``"model"``, ``"model_state_dict"`` or ``"net"`` is
    unwrapped. A ``"module."`` prefix (DataParallel/DDP) is stripped.
    """
    path = Path(path)
    if not path.is_file():
        raise AdvlabError(f"no such checkpoint file: {path}")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            sd: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise AdvlabError(f"cannot read safetensors checkpoint {path}: {_first_line(e)}") from e
    else:
        try:
            with warnings.catch_warnings():  # e.g. "pickle protocol 4": noise around a one-line verdict
                warnings.simplefilter("ignore")
                sd = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise AdvlabError(
                f"refusing to load {path}: it holds pickled objects that could run code "
                "(only tensors and plain containers are loaded; re-save it as a state dict or .safetensors)"
            ) from e
        except (RuntimeError, EOFError, OSError, ValueError) as e:
            raise AdvlabError(f"cannot read checkpoint {path}: {_first_line(e)}") from e
    for key in _NESTED_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in sd.items()):
        raise AdvlabError(f"checkpoint {path} is not a state dict of named tensors")
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_weights(net: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into ``net`` strictly: every key must fit by name and shape, and every floating-point
    tensor must be finite (NaN or Inf weights make every output meaningless), or a clear error."""
    sd = read_state_dict(path)
    own = net.state_dict()
    # BatchNorm fills in num_batches_tracked itself; checkpoints older than PyTorch 0.4.1 lack it.
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {'; '.join(wrong[:2])})")
        raise AdvlabError(f"checkpoint {path} does not fit the model: keys {', '.join(parts)}")
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise AdvlabError(f"checkpoint {path} holds NaN or infinite values in {len(bad)} of {len(sd)} tensors "
                          f"(e.g. {', '.join(bad[:3])}): a diverged training run? refusing weights that give no meaningful output")  # fmt: skip
    net.load_state_dict(sd, strict=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
