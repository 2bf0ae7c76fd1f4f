"""Image files: read at their real bit depth, and left alone when already at the size asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from advlab.data.images import pil_to_tensor, read_image
from advlab.errors import AdvlabError


def _png16(path: Path, h: int = 24, w: int = 20) -> np.ndarray:
    """A 16-bit grey PNG (PIL mode I;16) with levels spread over 0..40000, so 8-bit clipping would saturate it."""
    a = (np.arange(h * w).reshape(h, w) * (40000 // (h * w))).astype(np.uint16)
    Image.fromarray(a).save(path)
    assert Image.open(path).mode == "I;16"
    return a


def test_a_16_bit_png_is_read_at_its_real_range(tmp_path: Path) -> None:
    a = _png16(tmp_path / "deep.png")
    x = read_image(tmp_path / "deep.png", None, 1)
    assert x.shape == (1, 24, 20) and x.dtype == torch.float32
    assert torch.allclose(x[0].double(), torch.from_numpy(a / 65535.0), atol=1e-7)
    assert float(x.max()) < 0.62  # not all white
    rgb = read_image(tmp_path / "deep.png", None, 3)
    assert rgb.shape == (3, 24, 20) and torch.equal(rgb[0], rgb[2]) and torch.equal(rgb[1], x[0])


def test_a_16_bit_png_resized_keeps_its_range(tmp_path: Path) -> None:
    a = _png16(tmp_path / "deep.png")
    x = read_image(tmp_path / "deep.png", 16, 3)
    assert x.shape == (3, 16, 16) and 0 <= float(x.min()) and float(x.max()) <= 1
    assert abs(float(x.mean()) - float(a[2:22, :].mean() / 65535)) < 0.05  # the centre crop's mean brightness


def test_an_out_of_range_float_image_is_refused() -> None:
    img = Image.fromarray(np.full((4, 4), 3.5, dtype=np.float32))  # mode "F"
    with pytest.raises(AdvlabError, match="float images in \\[0, 1\\]"):
        pil_to_tensor(img, 1)


@pytest.mark.parametrize(("side", "channels"), [(8, 1), (32, 3), (224, 3)])
def test_an_image_at_the_input_size_goes_in_unchanged(tmp_path: Path, side: int, channels: int) -> None:
    """No resize to side / 0.875 and centre crop: that blurs the pixels (and undoes a saved adversarial example)."""
    rng = np.random.default_rng(side)
    a = rng.integers(0, 256, (side, side) if channels == 1 else (side, side, 3), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "x.png")
    x = read_image(tmp_path / "x.png", side, channels)
    expected = torch.from_numpy(a).float().div(255)
    expected = expected[None] if channels == 1 else expected.permute(2, 0, 1)
    assert torch.equal(x, expected)


def test_other_sizes_are_still_resized_and_centre_cropped(tmp_path: Path) -> None:
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    assert read_image(tmp_path / "x.png", 32, 3).shape == (3, 32, 32)
