"""advlab: a laboratory for adversarial examples on image classifiers.

Images are (N, C, H, W) float tensors in [0, 1]; every model takes those and returns logits, with its
mean/std normalization inside. ``advlab.zoo`` builds models, ``advlab.data`` loads data sets,
``advlab.attacks`` and ``advlab.evaluate`` attack and measure them, ``advlab.runs`` writes run
directories; the ``advlab`` command drives them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from advlab import attacks, data, runs, zoo
from advlab.errors import AdvlabError, NotAvailableError
from advlab.evaluation import EvalReport, evaluate

__all__ = ["AdvlabError", "EvalReport", "NotAvailableError", "__version__", "attacks", "data", "evaluate", "runs", "zoo"]
