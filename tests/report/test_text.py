"""advlab.report.text: the robustness curve as terminal lines."""

from __future__ import annotations

from advlab.report.text import curve_lines


def test_curve_lines_sorts_by_eps_and_formats_rates_and_eps() -> None:
    curve = [
        {"eps": 0.3, "success_rate": 1.0, "robust_accuracy": 0.0},
        {"eps": 8 / 255, "success_rate": 0.125, "robust_accuracy": 0.875},
        {"eps": 0.1, "success_rate": 0.65625, "robust_accuracy": 0.34375},
    ]
    assert curve_lines(curve) == [
        "robustness curve (3 eps):",
        "  eps 8/255: success 12.50%, robust accuracy 87.50%",
        # 65.625 and 34.375 are exact in binary: the format rounds half to even
        "  eps 0.1: success 65.62%, robust accuracy 34.38%",
        "  eps 0.3: success 100.00%, robust accuracy 0.00%",
    ]


def test_curve_lines_leaves_the_curve_in_its_order_and_ignores_other_keys() -> None:
    curve = [
        {"eps": 0.2, "success_rate": 0.5, "robust_accuracy": 0.25, "clean_accuracy": 0.75},
        {"eps": 0.05, "success_rate": 0.0, "robust_accuracy": 0.75, "clean_accuracy": 0.75},
    ]
    before = [dict(point) for point in curve]
    lines = curve_lines(curve)
    assert curve == before
    assert lines[1:] == [
        "  eps 0.05: success 0.00%, robust accuracy 75.00%",
        "  eps 0.2: success 50.00%, robust accuracy 25.00%",
    ]


def test_an_empty_curve_is_its_header_alone() -> None:
    assert curve_lines([]) == ["robustness curve (0 eps):"]
