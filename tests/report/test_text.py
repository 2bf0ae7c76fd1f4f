"""advlab.report.text: the robustness curve and ``advlab attack``'s summary as terminal lines."""

from __future__ import annotations

from advlab.report.text import attack_lines, curve_lines


def test_curve_lines_sorts_by_eps_and_formats_rates_and_eps() -> None:
    curve = [
        {"eps": 0.3, "success_rate": 1.0, "robust_accuracy": 0.0},
        {"eps": 8 / 255, "success_rate": 0.125, "robust_accuracy": 0.875},
        {"eps": 0.1, "success_rate": 0.65625, "robust_accuracy": 0.34375},
    ]
    assert curve_lines(curve) == [
        "robustness curve (3 eps):",
        "  eps 8/255: robust accuracy 87.50%, success 12.50%",
        # 65.625 and 34.375 are exact in binary: the format rounds half to even
        "  eps 0.1: robust accuracy 34.38%, success 65.62%",
        "  eps 0.3: robust accuracy 0.00%, success 100.00%",
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
        "  eps 0.05: robust accuracy 75.00%, success 0.00%",
        "  eps 0.2: robust accuracy 25.00%, success 50.00%",
    ]


def test_an_empty_curve_is_its_header_alone() -> None:
    assert curve_lines([]) == ["robustness curve (0 eps):"]


def test_each_curve_line_carries_the_norms_of_its_own_eps() -> None:
    """The bug this guards against: the curve's headline gave the largest eps's rates with the median norm of
    the successes found at a smaller eps. Every line now holds one eps's numbers only; no success, no norm."""
    metrics = {
        "attack": "pgd",
        "images": 64,
        "targeted": False,
        "clean_accuracy": 1.0,
        "success_rate": 0.984375,
        "robust_accuracy": 0.015625,
        "linf_median": 0.1,  # over every success, most found at eps 0.1: what the old headline put next to 0.2
        "l2_median": 0.672333,
        "curve": [
            {"eps": 0.2, "success_rate": 0.984375, "robust_accuracy": 0.015625, "linf_median": 0.1, "l2_median": 0.7},
            {"eps": 0.05, "success_rate": 0.0, "robust_accuracy": 1.0, "linf_median": None, "l2_median": None},
            {"eps": 0.1, "success_rate": 0.5, "robust_accuracy": 0.5, "linf_median": 0.1, "l2_median": 0.55},
        ],
    }
    lines = attack_lines(metrics)
    assert lines[:2] == [
        "pgd on 64 images, clean accuracy 100.00%; success: changed a correct prediction",
        "robustness curve (3 eps; norms: medians over that eps's successes, each found at the smallest eps that "
        "broke it):",
    ]
    assert lines[2:] == [
        "  eps 0.05: robust accuracy 100.00%, success 0.00%, median L-inf -, median L2 -",
        "  eps 0.1: robust accuracy 50.00%, success 50.00%, median L-inf 0.1, median L2 0.55",
        "  eps 0.2: robust accuracy 1.56%, success 98.44%, median L-inf 0.1, median L2 0.7",
    ]
    assert len(lines) == 5  # no other line: nothing pairs eps 0.2's rates with the median over every success


def test_one_eps_is_one_line() -> None:
    metrics = {
        "attack": "fgsm",
        "images": 8,
        "targeted": True,
        "clean_accuracy": 0.875,
        "success_rate": 0.25,
        "robust_accuracy": 0.75,
        "linf_median": 0.1,
        "l2_median": None,
    }
    assert attack_lines(metrics) == [
        "fgsm on 8 images: success 25.00% (hit the target), clean accuracy 87.50% -> robust 75.00%, "
        "median L-inf 0.1, median L2 -"
    ]
