"""image_grid: every image at a fixed place in its cell (aspect kept, no overlap), its title above it."""

from __future__ import annotations

import matplotlib.pyplot as plt
import torch

from advlab.report.figures import image_grid


def test_each_image_keeps_its_aspect_in_its_own_cell_under_its_title() -> None:
    x = torch.rand(7, 3, 8, 16)  # wider than tall
    titles = [f"class {i}\np=0.{i}" for i in range(7)]
    fig = image_grid(x, titles, ncols=3, cell=2.0, title_colors=["red"] * 7)
    (ax,) = fig.axes
    assert tuple(fig.get_size_inches()) == (6.0, 3 * 2.5)
    images, texts = ax.get_images(), ax.texts
    assert len(images) == 7 and [t.get_text() for t in texts] == titles
    boxes = [im.get_extent() for im in images]  # (left, right, bottom, top) in inches
    for i, ((left, right, bottom, top), text) in enumerate(zip(boxes, texts, strict=True)):
        row, col = divmod(i, 3)
        assert abs((right - left) / (top - bottom) - 2.0) < 1e-9  # 16 x 8 pixels
        assert col * 2.0 <= left < right <= (col + 1) * 2.0
        assert 7.5 - (row + 1) * 2.5 <= bottom < top <= 7.5 - row * 2.5 - 0.5  # 0.5 inch left for the title
        tx, ty = text.get_position()
        assert abs(tx - (left + right) / 2) < 1e-9 and top < ty < top + 0.5 and text.get_color() == "red"
    assert (images[0].get_array()[..., 0] == (x[0, 0] * 255).round().to(torch.uint8).numpy()).all()
    plt.close(fig)


def test_a_long_title_gets_a_smaller_font_and_a_short_one_stays_at_8() -> None:
    fig = image_grid(torch.rand(2, 1, 8, 8), ["7", "clean: astronaut: suit 45%, space shuttle 12% (long)"], cell=2.4)
    short, long = fig.axes[0].texts
    assert short.get_fontsize() == 8 and 5 <= long.get_fontsize() < 8
    fig.canvas.draw()
    width = long.get_window_extent().width / fig.dpi
    assert width <= 2.4  # inches: within its cell
    plt.close(fig)
