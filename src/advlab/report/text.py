"""Plain-text renderings of results for the terminal (the HTML report has its own)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from advlab.threat import eps_text


def _norm(value: float | None) -> str:
    """A norm in [0, 1] pixel units to 4 significant digits; "-" when there is none (nothing succeeded)."""
    return "-" if value is None else f"{value:.4g}"


def curve_lines(curve: Sequence[Mapping[str, Any]]) -> list[str]:
    """A robustness curve, one line per eps (smallest first), every number of a line at that eps: the robust
    accuracy, the attack's success rate and, when the curve has them, the median L-inf and L2 norms of the
    successes at that eps, e.g. ``  eps 0.1: robust accuracy 34.38%, success 65.62%, median L-inf 0.1, median
    L2 0.6723``."""
    with_norms = any("linf_median" in point for point in curve)
    note = (
        "; norms: medians over that eps's successes, each found at the smallest eps that broke it" if with_norms else ""
    )
    lines = [f"robustness curve ({len(curve)} eps{note}):"]
    for point in sorted(curve, key=lambda c: c["eps"]):
        norms = "".join(
            f", median {name} {_norm(point[key])}"
            for key, name in (("linf_median", "L-inf"), ("l2_median", "L2"))
            if key in point
        )
        lines.append(
            f"  eps {eps_text(point['eps'])}: robust accuracy {point['robust_accuracy']:.2%}, "
            f"success {point['success_rate']:.2%}{norms}"
        )
    return lines


def attack_lines(metrics: Mapping[str, Any]) -> list[str]:
    """What ``advlab attack`` prints from its metrics: for one eps one line (success, clean -> robust accuracy,
    the median L-inf and L2 norms of the successes); for an eps list (``curve``) a line for the run and then
    :func:`curve_lines`' line per eps, so no line mixes the rates of one eps with the norms of another."""
    goal = "hit the target" if metrics["targeted"] else "changed a correct prediction"
    run = f"{metrics['attack']} on {metrics['images']} images"
    if "curve" in metrics:
        return [
            f"{run}, clean accuracy {metrics['clean_accuracy']:.2%}; success: {goal}",
            *curve_lines(metrics["curve"]),
        ]
    return [
        f"{run}: success {metrics['success_rate']:.2%} ({goal}), clean accuracy {metrics['clean_accuracy']:.2%} -> "
        f"robust {metrics['robust_accuracy']:.2%}, median L-inf {_norm(metrics['linf_median'])}, "
        f"median L2 {_norm(metrics['l2_median'])}"
    ]
