"""Analysis of what attacks do inside a model and what its units mean.

* ``layers``: layer outputs (``features``) and their changes under an attack (``layer_changes``; seed 003).
* ``units``: the images that most activate single units versus random directions of a layer
  (``unit_top_images``, ``label_purity``; Szegedy et al. 2013, section 3).
* ``linearity``: FGSM accuracy-vs-eps curves (``fgsm_curve``), a linear digits model
  (``linear_digits_model``) and the identity behind Goodfellow et al. 2015's linearity explanation
  (``fgsm_margin_shift``, ``affine_map``, ``linear_flip_eps``).

Compute only: these functions return data (dataclasses, plain rows) and never print, plot or write files;
``report/`` and the CLI render them.
"""

from __future__ import annotations

from advlab.analysis.layers import (
    METRICS,
    LayerChange,
    changes_table,
    features,
    layer_changes,
    peak,
)
from advlab.analysis.linearity import (
    affine_map,
    check_eps_list,
    fgsm_curve,
    fgsm_margin_shift,
    linear_digits_model,
    linear_flip_eps,
)
from advlab.analysis.units import (
    Probe,
    UnitAnalysis,
    activations,
    chance_purity,
    default_layer,
    label_purity,
    majority_label,
    most_varying_units,
    probe_activations,
    probes_table,
    purities,
    purity_summary,
    random_directions,
    unit_top_images,
)

__all__ = [
    "METRICS", "LayerChange", "changes_table", "features", "layer_changes", "peak",
    "affine_map", "check_eps_list", "fgsm_curve", "fgsm_margin_shift", "linear_digits_model", "linear_flip_eps",
    "Probe", "UnitAnalysis", "activations", "chance_purity", "default_layer", "label_purity", "majority_label",
    "most_varying_units", "probe_activations", "probes_table", "purities", "purity_summary", "random_directions", "unit_top_images",
]  # fmt: skip
