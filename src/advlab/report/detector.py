"""What a detect run's report.html adds to its metrics: the held-out attacks table and the lecture's point.

``metrics`` is the run's metrics.json (:func:`advlab.defenses.detection.evaluate_detector` and
:func:`~advlab.defenses.detection.train_on_attack`): rates in [0, 1] are shown as percentages, AUCs with three
decimals, "n/a" where no attack succeeded.
"""

from __future__ import annotations

import html
from typing import Any


def _auc(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.1%}"


def held_out_table(metrics: dict[str, Any]) -> str:
    """An HTML table: per held-out attack, its success, the detector's ROC AUC (successful vs clean, and all), the
    share flagged at the threshold and the share that succeeds unflagged."""
    head = (
        "<tr><th>held-out attack</th><th>success</th><th>ROC AUC (successful vs clean)</th><th>AUC (all)</th>"
        "<th>flagged at threshold</th><th>success and not flagged</th></tr>"
    )
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{r['success_rate']:.1%}</td><td>{_auc(r['auc'])}</td>"
        f"<td>{r['auc_all']:.3f}</td><td>{_pct(r['detected_at_threshold'])}</td>"
        f"<td>{r['success_not_flagged']:.1%}</td></tr>"
        for k, r in metrics["held_out"].items()
    )
    return f"<table>{head}{body}</table>"


def adaptive_paragraph(metrics: dict[str, Any]) -> str:
    """The lecture's point in one paragraph: the training attack's success without and past the detector, against
    the adaptive attack's, and what the threshold flags."""
    na, ad = metrics["non_adaptive"], metrics["adaptive"]
    return (
        f"<p>Without the detector the training attack succeeds on {na['success_without_detector']:.1%} of the test "
        f"images; counted only where the detector does not flag it, {na['success_not_flagged']:.1%}. The adaptive "
        f"attack, which must fool classifier and detector at once, succeeds on {ad['success']:.1%} (misclassified "
        f"{ad['misclassified']:.1%}, flagged {ad['flagged']:.1%}). Threshold {metrics['threshold']:.4g} flags "
        f"{metrics['fpr_test']:.1%} of the clean test images (target {metrics['fpr_target']:.0%} on held-out clean "
        "training images).</p>"
    )


def detector_sections(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The (heading, HTML) sections of a detect run's report.html."""
    return [
        ("Held-out attacks", held_out_table(metrics)),
        ("Adaptive vs non-adaptive (research note 004)", adaptive_paragraph(metrics)),
    ]
