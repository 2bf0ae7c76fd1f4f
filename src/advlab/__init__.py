"""advlab: a laboratory for adversarial examples on image classifiers.

Images are (N, C, H, W) float tensors in [0, 1]; every model takes those and returns logits, with its
mean/std normalization inside. ``advlab.zoo`` builds models, ``advlab.data`` loads data sets,
``advlab.attacks`` and ``advlab.evaluate`` attack and measure them, ``advlab.prototypes`` evolves inputs
into classes (seed 000), ``advlab.defenses``, ``advlab.study`` and ``advlab.analysis`` ask whether pruning
defends and where an attack acts (seed 003), ``advlab.runs`` writes run directories; the ``advlab``
command drives them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from advlab import analysis, attacks, data, defenses, prototypes, runs, study, zoo
from advlab.errors import AdvlabError, NotAvailableError
from advlab.evaluation import EvalReport, evaluate

__all__ = ["AdvlabError", "EvalReport", "NotAvailableError", "__version__", "analysis", "attacks", "data", "defenses", "evaluate",
           "prototypes", "runs", "study", "zoo"]  # fmt: skip
