"""Reading weights without executing code: safetensors, or ``torch.load(..., weights_only=True)``.

Everything about a checkpoint file is checked before it reaches the model, each failure one
:class:`~advlab.errors.AdvlabError` line naming the file (and the tensor): it must be a non-empty regular file of
at most :data:`MAX_CHECKPOINT_BYTES` (see :mod:`advlab.data.files`: no FIFO, device or directory is opened); a
``.pt`` zip may not inflate past :data:`ZIP_INFLATE_RATIO` times its size; pickles that would run code are
refused; the result must be a dict of names to dense CPU tensors; and :func:`load_weights` wants every key to fit
the model by name, shape and kind of dtype (floating-point weights for floating-point parameters, integers for
integer buffers such as BatchNorm's ``num_batches_tracked``), and every weight finite.
"""

from __future__ import annotations

import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

from advlab.data.files import descriptor_path, open_regular, show
from advlab.errors import AdvlabError

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net")

#: the largest checkpoint file read: its tensors are all loaded into memory
MAX_CHECKPOINT_BYTES = 8 << 30
#: the members of a ``.pt`` zip may hold at most this many times the file's size: torch.save stores them
#: uncompressed (about 1x); a zip bomb inflates a thousandfold
ZIP_INFLATE_RATIO = 4


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, on the CPU.

    ``.safetensors`` is read with safetensors; anything else (``.pt``, ``.pth``, ``.bin``) with
    ``torch.load(weights_only=True)``, which refuses pickles that would run code. A bare state dict is
    taken as is; one nested under ``"state_dict"``, ``"model"``, ``"model_state_dict"`` or ``"net"`` is
    unwrapped. A ``"module."`` prefix (DataParallel/DDP) is stripped. Every value must be a dense CPU tensor.
    """
    path = Path(path)
    with open_regular(path, "checkpoint file") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            raise AdvlabError(f"checkpoint {show(path)} is an empty file")
        if size > MAX_CHECKPOINT_BYTES:
            raise AdvlabError(
                f"checkpoint {show(path)} has {size:,} bytes, over advlab's limit of {MAX_CHECKPOINT_BYTES:,}"
            )
        sd = _read_safetensors(fh, path) if path.suffix == ".safetensors" else _read_torch(fh, path, size)
    return _state_dict(sd, path)


def _read_safetensors(fh: BinaryIO, path: Path) -> object:
    from safetensors.torch import load_file

    try:
        return load_file(descriptor_path(fh, path), device="cpu")  # the header is checked against the file's size
    except Exception as e:  # noqa: BLE001 - SafetensorError, and whatever an odd dtype raises
        raise AdvlabError(f"cannot read safetensors checkpoint {show(path)}: {_first_line(e)}") from e


def _read_torch(fh: BinaryIO, path: Path, size: int) -> object:
    """``torch.load(weights_only=True)`` of an open file, after checking a zip's members cannot inflate past
    :data:`ZIP_INFLATE_RATIO` x ``size`` (legacy non-zip files hold their storages raw: bounded by the file)."""
    if fh.read(4) == b"PK\x03\x04":
        fh.seek(0)
        _check_zip(fh, path, size)
    fh.seek(0)
    try:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": noise around a one-line verdict
            warnings.simplefilter("ignore")
            return torch.load(fh, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from e
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files (RuntimeError, KeyError, ...)
        raise AdvlabError(
            f"cannot read checkpoint {show(path)} ({type(e).__name__}: {_first_line(e)}); "
            "not a torch checkpoint, or truncated?"
        ) from e


def _refusal(path: Path, e: pickle.UnpicklingError) -> AdvlabError:
    """One line for what torch's weights-only unpickler refused: a global (code it would import and call), or
    an opcode it does not read (a pickle of another protocol, which may also carry code, or not a pickle)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    detail = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[-1] if lines else "")
    if "GLOBAL" in detail:
        return AdvlabError(
            f"refusing to load {show(path)}: it holds pickled objects that could run code "
            f"({detail.rstrip('.')}); only tensors and plain containers are loaded: "
            "re-save it as a state dict or .safetensors"
        )
    return AdvlabError(
        f"refusing to load {show(path)}: torch's safe unpickler cannot read it ({detail.rstrip('.')}): "
        "not a checkpoint, or pickled objects that could run code"
    )


def _check_zip(fh: BinaryIO, path: Path, size: int) -> None:
    try:
        with zipfile.ZipFile(fh) as zf:
            inflated = sum(member.file_size for member in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise AdvlabError(
            f"cannot read checkpoint {show(path)}: not a complete zip archive, truncated? ({_first_line(e)})"
        ) from e
    if inflated > ZIP_INFLATE_RATIO * size:
        raise AdvlabError(
            f"checkpoint {show(path)}: its zip members inflate to {inflated:,} bytes from a "
            f"{size:,}-byte file (a zip bomb? torch.save stores them uncompressed)"
        )


def _state_dict(sd: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict in a loaded checkpoint: unwrapped, checked to map names to dense CPU tensors."""
    for key in _NESTED_KEYS:
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    not_sd = f"checkpoint {show(path)} is not a state dict of named tensors"
    if not isinstance(sd, dict):
        raise AdvlabError(f"{not_sd} (it holds a {type(sd).__name__})")
    for k, v in sd.items():
        if not isinstance(k, str):
            raise AdvlabError(f"{not_sd}: a key is not a string but {type(k).__name__}")
        if not isinstance(v, torch.Tensor):
            raise AdvlabError(f"{not_sd}: {show(k)} holds a {type(v).__name__}")
        if v.layout != torch.strided or v.is_quantized or v.device.type != "cpu":
            what = "quantized" if v.is_quantized else f"on {v.device.type}" if v.layout == torch.strided else v.layout
            raise AdvlabError(
                f"checkpoint {show(path)}: tensor {show(k)} is {what}; advlab loads dense CPU tensors only"
            )
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    return sd


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "boolean"
    if t.is_complex():
        return "complex"
    return "floating-point" if t.is_floating_point() else "integer"


def load_weights(net: nn.Module, path: str | Path) -> None:
    """Load a checkpoint into ``net`` strictly: every key must fit by name and shape, every tensor must have the
    kind of dtype of the parameter or buffer it fills (a bool or complex weight is refused, not cast), and every
    floating-point tensor must be finite (NaN or Inf weights make every output meaningless), or a clear error."""
    sd = read_state_dict(path)
    own = net.state_dict()
    _check_keys(sd, own, path)
    kinds = [(k, sd[k], mine) for k, mine in own.items() if k in sd and _kind(sd[k]) != _kind(mine)]
    if kinds:
        k, v, mine = kinds[0]
        raise AdvlabError(
            f"checkpoint {show(path)}: tensor {show(k)} is {v.dtype} ({_kind(v)}) but the model's is "
            f"{mine.dtype} ({_kind(mine)}), in {len(kinds)} of {len(sd)} tensors; floating-point weights "
            "need floating-point tensors, integer buffers integer ones"
        )
    bad = [show(k) for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise AdvlabError(
            f"checkpoint {show(path)} holds NaN or infinite values in {len(bad)} of {len(sd)} tensors "
            f"(e.g. {', '.join(bad[:3])}): a diverged training run? refusing weights that give no "
            "meaningful output"
        )
    net.load_state_dict(sd, strict=True)


def _check_keys(sd: dict[str, torch.Tensor], own: dict[str, torch.Tensor], path: str | Path) -> None:
    """Every key of the model in the checkpoint (BatchNorm's counters may be absent), none other, shapes equal."""
    # BatchNorm fills in num_batches_tracked itself; checkpoints older than PyTorch 0.4.1 lack it.
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    wrong = [
        f"{k} {tuple(sd[k].shape)} vs {tuple(v.shape)}" for k, v in own.items() if k in sd and sd[k].shape != v.shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(map(show, unexpected[:3]))})")
        if wrong:
            parts.append(f"{len(wrong)} of the wrong shape (e.g. {'; '.join(wrong[:2])})")
        raise AdvlabError(f"checkpoint {show(path)} does not fit the model: keys {', '.join(parts)}")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
