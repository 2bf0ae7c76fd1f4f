"""Figures: a log x axis labels the values it shows; layer plots name their layers."""

from __future__ import annotations

import matplotlib.pyplot as plt

from advlab.report.figures import line_plot


def _labels(fig, axis: str = "x") -> list[str]:  # noqa: ANN001
    fig.canvas.draw()
    ax = fig.axes[0]
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks if t.get_text()]


def test_a_log_axis_over_one_decade_labels_every_setting() -> None:
    xs = [0.00143, 0.0122, 0.0255, 0.0431, 0.0749]  # research note 003's E sweep: matplotlib alone labels only 10^-2
    fig = line_plot({"clean": [1, 1, 1, 0.9, 0.5]}, "prune E", "accuracy", x=xs, logx=True)
    assert _labels(fig) == ["0.00143", "0.0122", "0.0255", "0.0431", "0.0749"]
    plt.close(fig)


def test_a_long_log_sweep_still_labels_several_ticks() -> None:
    xs = [10 ** (k / 4) for k in range(-20, 1)]  # 21 values over 5 decades
    fig = line_plot({"a": list(range(21))}, "x", "y", x=xs, logx=True)
    assert len(_labels(fig)) >= 5
    plt.close(fig)


def test_layer_names_on_the_x_axis() -> None:
    names = ["input", "normalize", "net.features.0", "net.features.1", "net.classifier.3"]
    fig = line_plot({"rel": [0.1, 0.1, 0.2, 0.3, 0.5]}, "layer", "change", x=list(range(5)), xticklabels=names)
    assert _labels(fig) == names
    plt.close(fig)


def test_many_layers_are_thinned_to_at_most_40_names() -> None:
    names = [f"layer{i}" for i in range(100)]
    fig = line_plot({"rel": [0.1] * 100}, "layer", "change", x=list(range(100)), xticklabels=names)
    shown = _labels(fig)
    assert 25 <= len(shown) <= 40 and shown[0] == "layer0" and set(shown) <= set(names)
    plt.close(fig)
