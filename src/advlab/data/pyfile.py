"""A user's own Python file, imported as a module (their code, run on their word): the one way advlab imports
``file.py:factory`` specs, for models (:mod:`advlab.zoo.registry`) and data sets (``--data file.py:factory``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from advlab.data.files import require_regular, show
from advlab.errors import AdvlabError


def split_spec(spec: str) -> tuple[Path, str] | None:
    """``path/to/file.py:factory`` as (path, factory); None for any other spec."""
    if ".py:" not in spec:
        return None
    path, _, factory = spec.rpartition(":")
    return Path(path), factory


def first_line(e: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def import_file(path: Path, what: str = "model file") -> ModuleType:
    """Import ``path`` as a module named after its resolved path (importing it twice gives the same name); a
    FIFO or device is refused before it could block the import, and anything the code raises is one
    :class:`AdvlabError` line."""
    require_regular(path, what)
    mod_name = f"advlab_user_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise AdvlabError(f"cannot import {show(path)} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything
        sys.modules.pop(mod_name, None)
        raise AdvlabError(f"importing {show(path)} failed: {first_line(e)}") from e
    return module


def call_factory(path: Path, factory: str, what: str = "model file") -> tuple[Any, ModuleType]:
    """``factory()`` of the file at ``path`` and the module it lives in; a missing or failing factory is one
    :class:`AdvlabError` line."""
    module = import_file(path, what)
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise AdvlabError(f"{show(path)} has no callable {factory!r}")
    try:
        return fn(), module
    except Exception as e:  # noqa: BLE001
        raise AdvlabError(f"{show(path)}:{factory}() failed: {first_line(e)}") from e
