"""advlab: a laboratory for adversarial examples on image classifiers.

Images are (N, C, H, W) float tensors in [0, 1]; every model takes those and returns logits, with its
mean/std normalization inside. ``advlab.zoo`` builds models, ``advlab.data`` loads data sets,
``advlab.attacks`` attacks them, ``advlab.evaluation`` (``advlab.evaluate``) measures robustness with one set
of metrics (``advlab.evaluation.metrics``), ``advlab.prototypes`` evolves inputs into classes (research note 000),
``advlab.defenses`` and ``advlab.experiments`` (the pruning study, transfer, the layer and unit analyses) ask
whether pruning defends and where an attack acts (research note 003), ``advlab.runs`` writes run directories; the
``advlab`` command drives them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

from advlab.errors import AdvlabError, NotAvailableError

if TYPE_CHECKING:  # what a type checker sees; at run time PEP 562's __getattr__ imports each on first use
    from advlab import (
        attacks,
        data,
        defenses,
        evaluation,
        experiments,
        prototypes,
        runs,
        zoo,
    )
    from advlab.evaluation import EvalConfig, EvalReport, evaluate

#: the parts imported on first use (``advlab.zoo``): ``import advlab`` (and ``advlab --help``) loads no torch
_PARTS = frozenset({"attacks", "data", "defenses", "evaluation", "experiments", "prototypes", "runs", "zoo"})
#: names re-exported from a part, imported with it on first use
_FROM = {"EvalConfig": "advlab.evaluation", "EvalReport": "advlab.evaluation", "evaluate": "advlab.evaluation"}

__all__ = [
    "AdvlabError",
    "EvalConfig",
    "EvalReport",
    "NotAvailableError",
    "__version__",
    "attacks",
    "data",
    "defenses",
    "evaluate",
    "evaluation",
    "experiments",
    "prototypes",
    "runs",
    "zoo",
]


def __getattr__(name: str) -> Any:
    """``advlab.zoo``, ``advlab.evaluate``, ...: imported on first use (PEP 562)."""
    if name in _PARTS:
        return importlib.import_module(f"advlab.{name}")
    if name in _FROM:
        value = getattr(importlib.import_module(_FROM[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'advlab' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
