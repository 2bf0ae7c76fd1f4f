"""Rendering: pictures and HTML pages from results. Compute modules never import this; the CLI does."""

from __future__ import annotations

from advlab.report.figures import (
    adversarial_grid,
    heatmap,
    histogram,
    image_grid,
    line_plot,
    perturbation_image,
)
from advlab.report.html import write_report

__all__ = ["adversarial_grid", "heatmap", "histogram", "image_grid", "line_plot", "perturbation_image", "write_report"]
