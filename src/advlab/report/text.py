"""Plain-text renderings of results for the terminal (the HTML report has its own)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from advlab.threat import eps_text


def curve_lines(curve: Sequence[dict[str, Any]]) -> list[str]:
    """A robustness curve, one line per eps (smallest first): the attack's success rate and the robust accuracy
    at that eps, e.g. ``  eps 0.1: success 65.62%, robust accuracy 34.38%``."""
    lines = [f"robustness curve ({len(curve)} eps):"]
    for point in sorted(curve, key=lambda c: c["eps"]):
        lines.append(
            f"  eps {eps_text(point['eps'])}: success {point['success_rate']:.2%}, "
            f"robust accuracy {point['robust_accuracy']:.2%}"
        )
    return lines
