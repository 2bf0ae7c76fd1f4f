"""Experiments built on the evaluation: the questions of the seeds, answered with attacks, defenses and metrics.

* :mod:`~advlab.experiments.study`: defense sweeps (research note 003, "does pruning defend?"): one row per setting,
  with Wilson intervals and McNemar tests (``sweep``, ``measure``, ``default_settings``, ``table``, ``markdown``).
* :mod:`~advlab.experiments.transfer`: transfer matrices (Szegedy et al. 2014): adversarials crafted on
  surrogates, scored on victims (``transfer_matrix``, ``TransferMatrix``, ``Ensemble``, ``Resized``).
* :mod:`~advlab.experiments.layers`: where an attack acts inside a network (``layer_changes``, ``peak``,
  ``change_summary``; research note 003).
* :mod:`~advlab.experiments.units`: units versus random directions (Szegedy et al. 2013, section 3;
  ``units_vs_directions``).
* :mod:`~advlab.experiments.linearity`: FGSM curves and Goodfellow et al. 2015's linearity identity.

Every rate comes from :mod:`advlab.evaluation.metrics`; layer hooks from :mod:`advlab.hooks`. Compute only:
these functions return data and never print, plot or write files; ``report/`` and the CLI render them.
"""

from __future__ import annotations

from advlab.experiments import layers, linearity, study, transfer, units

__all__ = ["layers", "linearity", "study", "transfer", "units"]
