"""Analysis of what attacks do inside a model: layer outputs (``features``) and their changes (``layer_changes``).

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

__all__ = ["METRICS", "LayerChange", "changes_table", "features", "layer_changes", "peak"]
