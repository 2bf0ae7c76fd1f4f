"""Rendering: pictures and HTML pages from results. Compute modules never import this; the CLI does."""

from __future__ import annotations

from advlab.report.figures import image_grid, line_plot
from advlab.report.html import write_report

__all__ = ["image_grid", "line_plot", "write_report"]
