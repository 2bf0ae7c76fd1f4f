"""The report pieces of single commands: html_table (Markdown to HTML), the detect run's sections and its ROC
figure, and the prototypes run's tables."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from advlab.report.detector import detector_sections
from advlab.report.figures import roc_figure
from advlab.report.html import html_table
from advlab.report.prototypes import recognizability_table


def test_html_table_escapes_every_cell_and_keeps_the_note_under_the_table() -> None:
    md = "| model | rate |\n|---|---|\n| <lite0> | 50% |\n| a&b | 1% |\nnote: rates over 3 images"
    out = html_table(md)
    assert out.startswith("<table><tr><th>model</th><th>rate</th></tr>")
    assert "<td>&lt;lite0&gt;</td><td>50%</td>" in out and "<td>a&amp;b</td>" in out
    assert out.endswith("</table><p>note: rates over 3 images</p>")


def _detect_metrics() -> dict:
    row = {"success_rate": 0.6, "auc": 0.9123, "auc_all": 0.8, "detected_at_threshold": 0.5}
    return {
        "held_out": {
            "pgd@0.1 (training attack)": {**row, "success_not_flagged": 0.29},
            "<none>": {
                **row,
                "auc": None,
                "detected_at_threshold": None,
                "success_rate": 0.0,
                "success_not_flagged": 0,
            },
        },
        "non_adaptive": {"success_without_detector": 0.6, "success_not_flagged": 0.29},
        "adaptive": {"success": 0.46, "misclassified": 0.505, "flagged": 0.1},
        "threshold": 0.7321,
        "fpr_test": 0.045,
        "fpr_target": 0.05,
    }


def test_detector_sections_show_rates_as_percentages_and_n_a_where_nothing_succeeded() -> None:
    (h1, table), (h2, point) = detector_sections(_detect_metrics())
    assert h1 == "Held-out attacks" and "research note 004" in h2
    assert "<td>pgd@0.1 (training attack)</td><td>60.0%</td><td>0.912</td><td>0.800</td><td>50.0%</td>" in table
    assert "<td>&lt;none&gt;</td><td>0.0%</td><td>n/a</td><td>0.800</td><td>n/a</td><td>0.0%</td>" in table
    assert "succeeds on 60.0%" in point and "29.0%" in point and "succeeds on 46.0%" in point
    assert "Threshold 0.7321 flags 4.5%" in point and "(target 5%" in point


def test_roc_figure_draws_one_curve_per_attack_the_chance_line_and_the_target_rate() -> None:
    f = torch.tensor([0.0, 0.5, 1.0])
    curves = {"pgd": (f, torch.tensor([0.0, 0.9, 1.0]), f), "fgsm": (f, f, f)}
    fig = roc_figure(curves, {"pgd": 0.9, "fgsm": 0.5}, 0.05, "a title")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labels = [line.get_label() for line in ax.get_lines()]
    assert labels[:3] == ["pgd (AUC 0.900)", "fgsm (AUC 0.500)", "chance"] and "target FPR 0.05" in labels
    assert ax.get_title() == "a title"


def test_recognizability_table_lists_the_run_and_the_compared_recipe() -> None:
    verdict = {"top1_agreement": 0.5, "target_probability_mean": 0.25, "inception_score": 2.0}
    seen = {"self": verdict, "judges": {"lite1": verdict}}
    out = recognizability_table({"recipe": "natural", **seen, "compare": {"recipe": "adversarial", **seen}})
    assert out.count("<td>natural</td>") == 2 and out.count("<td>adversarial</td>") == 2
    assert "<td>judge lite1</td><td>50.0%</td><td>0.250</td><td>2.00</td>" in out
    assert "judge ensemble" not in recognizability_table({"recipe": "natural", **seen})
