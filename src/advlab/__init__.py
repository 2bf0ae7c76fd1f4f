"""advlab: a laboratory for adversarial examples on image classifiers.

Images are (N, C, H, W) float tensors in [0, 1]; every model takes those and returns logits, with its
mean/std normalization inside. ``advlab.zoo`` builds models, ``advlab.data`` loads data sets,
``advlab.runs`` writes run directories; the ``advlab`` command drives them.
"""

from __future__ import annotations

__version__ = "0.1.0"

from advlab import data, runs, zoo
from advlab.errors import AdvlabError, NotAvailableError

__all__ = ["AdvlabError", "NotAvailableError", "__version__", "data", "runs", "zoo"]
