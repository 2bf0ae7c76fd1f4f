"""A safetensors file written block by block, so that a run's per-sample tensors (every image and its adversarial
example) never have to be in memory at once.

The safetensors format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype, shape
and byte range, then the tensors' bytes back to back. When the shapes are known before the first row is computed
the header can be written first and each block of rows written at its offset as it comes; readers
(``safetensors.torch.load_file``) see an ordinary file. Like :func:`advlab.runs.rundir.atomic_write`, the file is
written under a temporary name next to its place and renamed there only when every row was written: a reader
never sees half of it, and a link or a non-regular file at the place is refused, never replaced.
"""

from __future__ import annotations

import json
import math
import os
import struct
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

from advlab.errors import AdvlabError
from advlab.runs.rundir import _make_folder, _umask, check_writable

#: torch dtypes and their safetensors names
_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}

Spec = tuple[tuple[int, ...], torch.dtype]


class TensorFileWriter:
    """Rows of the tensors declared in ``specs`` ({name: (shape, dtype)}), written at their offsets by
    :meth:`write`; the first dimension of every tensor counts rows (samples)."""

    def __init__(self, fd: int, specs: Mapping[str, Spec], data_start: int, offsets: dict[str, int]) -> None:
        self._fd = fd
        self.specs, self._start, self._offsets = dict(specs), data_start, offsets
        self._rows: dict[str, int] = {name: 0 for name in specs}

    def write(self, name: str, first_row: int, rows: torch.Tensor) -> None:
        """Write ``rows`` (shape ``(k, *shape[1:])``, the declared dtype) as rows ``first_row .. first_row + k - 1``
        of tensor ``name``."""
        shape, dtype = self.specs[name]
        if tuple(rows.shape[1:]) != tuple(shape[1:]) or rows.dtype != dtype:
            raise ValueError(f"{name}: rows of shape {tuple(rows.shape)} {rows.dtype}, declared {shape} {dtype}")
        if first_row < 0 or first_row + len(rows) > shape[0]:
            raise ValueError(f"{name}: rows {first_row}..{first_row + len(rows) - 1} outside 0..{shape[0] - 1}")
        row_bytes = math.prod(shape[1:]) * rows.element_size()
        data = rows.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        os.pwrite(self._fd, data, self._start + self._offsets[name] + first_row * row_bytes)
        self._rows[name] += len(rows)

    def missing(self) -> list[str]:
        """The tensors with fewer rows written than declared (rows written twice count twice: write each once)."""
        return [name for name, (shape, _) in self.specs.items() if self._rows[name] < shape[0]]


def _header(specs: Mapping[str, Spec], metadata: Mapping[str, str]) -> tuple[bytes, dict[str, int], int]:
    """The header bytes (padded to 8), each tensor's offset in the data part, and the data part's length."""
    entries: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offsets, at = {}, 0
    for name, (shape, dtype) in specs.items():
        if dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {dtype} has no safetensors name")
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        entries[name] = {"dtype": _DTYPES[dtype], "shape": list(shape), "data_offsets": [at, at + size]}
        offsets[name], at = at, at + size
    text = json.dumps(entries, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, offsets, at


@contextmanager
def tensor_file(
    path: str | Path, specs: Mapping[str, Spec], metadata: Mapping[str, str] | None = None
) -> Iterator[TensorFileWriter]:
    """Write the safetensors file ``path`` block by block: ``with tensor_file(p, {"x": ((n, 3, 32, 32),
    torch.float32)}) as w: w.write("x", 0, rows)``. The file appears at ``path`` when the block ends and every
    declared row was written; on an error (or rows missing) nothing appears and the temporary file is removed."""
    path = Path(path)
    check_writable(path)
    _make_folder(path.parent)
    head, offsets, size = _header(specs, metadata or {})
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise AdvlabError(f"cannot write {str(path)!r}: {e.strerror or type(e).__name__}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        os.pwrite(fd, head, 0)
        os.ftruncate(fd, len(head) + size)
        writer = TensorFileWriter(fd, specs, len(head), offsets)
        yield writer
        if writer.missing():
            raise ValueError(f"{path.name}: rows of {', '.join(writer.missing())} were never written")
        os.fsync(fd)
        os.close(fd)
        fd = -1
        check_writable(path)  # right before the rename: nothing was put there meanwhile
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        Path(tmp).unlink(missing_ok=True)
        raise
