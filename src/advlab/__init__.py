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

__version__ = "0.1.0"

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
from advlab.errors import AdvlabError, NotAvailableError
from advlab.evaluation import EvalConfig, EvalReport, evaluate

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
