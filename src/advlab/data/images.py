"""Image files to [0, 1] tensors, and resizing, with PIL and torch only (no torchvision)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from advlab.errors import AdvlabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

#: Resize the shorter side to ``size / CROP_FRACTION`` before the centre crop (224 -> 256), the usual
#: ImageNet evaluation transform.
CROP_FRACTION = 0.875


def open_image(path: str | Path) -> Image.Image:
    """Open and fully decode an image file; one clear :class:`AdvlabError` for every way it can fail."""
    path = Path(path)
    if not path.exists():
        raise AdvlabError(f"no such file: {path}")
    if path.is_dir():
        raise AdvlabError(f"{path} is a directory, not an image (use folder:{path} for a class-folder data set)")
    try:
        img = Image.open(path)
        img.load()
    except UnidentifiedImageError as e:
        raise AdvlabError(f"{path} is not an image file PIL can read") from e
    except Image.DecompressionBombError as e:
        raise AdvlabError(f"{path} claims to be larger than PIL's safety limit (a decompression bomb?): {e}") from e
    except (OSError, SyntaxError, ValueError) as e:
        raise AdvlabError(f"cannot read image {path}: {e} (truncated or corrupt file?)") from e
    return img


#: PIL modes of single-channel images deeper than 8 bits, and the value of their full scale
_DEEP_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0, "F": 1.0}


def _deep_to_float(img: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit integer / float) grey image as a PIL "F" image in [0, 1]: 16-bit levels 0..65535 map
    to [0, 1] (PIL's convert("L") would clip them to 255, every pixel white); 32-bit integer images are read as
    16-bit PNGs are (values up to 65535), float images must already be in [0, 1]."""
    a = np.asarray(img, dtype=np.float64)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    scale = _DEEP_MODES[img.mode]
    if lo < 0 or hi > scale:
        raise AdvlabError(f"image has {img.mode} pixels in [{lo:g}, {hi:g}]; advlab reads 16-bit images as 0..65535 and float "
                          "images in [0, 1] (rescale it, or save it as an 8-bit PNG)")  # fmt: skip
    return Image.fromarray((a / scale).astype(np.float32))  # float32 (H, W): mode "F"


def pil_to_tensor(img: Image.Image, channels: int = 3) -> torch.Tensor:
    """A PIL image as a float32 (C, H, W) tensor in [0, 1]; ``channels`` 3 gives RGB (alpha dropped), 1 gives luminance.

    8-bit images are k / 255; single-channel images of more bits (PIL modes "I;16", "I", "F") are read at their
    own range (16-bit: k / 65535), grey replicated to 3 channels when asked.
    """
    if channels not in (1, 3):
        raise AdvlabError(f"images can be read with 1 or 3 channels, not {channels}")
    if img.mode in _DEEP_MODES:
        t = torch.from_numpy(np.array(_deep_to_float(img), dtype=np.float32, copy=True))[None]
        return t.expand(channels, -1, -1).contiguous()
    img = img.convert("RGB" if channels == 3 else "L")
    a = np.array(img, dtype=np.uint8, copy=True)
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a).permute(2, 0, 1).float().div_(255.0)


def resize_center_crop(img: Image.Image, size: int, crop_fraction: float = CROP_FRACTION) -> Image.Image:
    """Resize the shorter side to ``round(size / crop_fraction)`` (bicubic), then crop the centre ``size`` x ``size``.

    An image that is ``size`` x ``size`` already is returned unchanged: it is taken to be prepared for the model
    (e.g. an adversarial example saved by ``advlab attack``), and resizing it to 256 and cropping would undo it.
    """
    w, h = img.size
    if (w, h) == (size, size):
        return img
    if img.mode in _DEEP_MODES:  # resample 16-bit and float images in float, at their own range
        img = _deep_to_float(img)
    short = round(size / crop_fraction)
    scale = short / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    out = img.crop((left, top, left + size, top + size))
    if out.mode == "F":  # bicubic overshoots: back into [0, 1]
        out = Image.fromarray(np.clip(np.asarray(out, dtype=np.float32), 0, 1))
    return out


def read_image(path: str | Path, size: int | None = None, channels: int = 3) -> torch.Tensor:
    """Read an image file as (C, H, W) float32 in [0, 1], resized and centre-cropped to ``size`` if given
    (see :func:`resize_center_crop`: an image of exactly ``size`` x ``size`` pixels goes in unchanged)."""
    img = open_image(path)
    if size is not None:
        img = resize_center_crop(img, size)
    return pil_to_tensor(img, channels)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a batch (N, C, H, W) in [0, 1] to ``size`` x ``size`` (bilinear, antialiased when shrinking)."""
    if x.shape[-2:] == (size, size):
        return x
    shrink = size < min(x.shape[-2:])
    y = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=shrink)
    return y.clamp_(0.0, 1.0)


def convert_channels(x: torch.Tensor, channels: int | None) -> torch.Tensor:
    """Grey -> RGB by repetition, RGB -> grey by ITU-R 601 luminance (as PIL's "L"); ``None`` keeps ``x``."""
    if channels is None or x.shape[1] == channels:
        return x
    if x.shape[1] == 1 and channels == 3:
        return x.expand(-1, 3, -1, -1).contiguous()
    if x.shape[1] == 3 and channels == 1:
        w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return (x * w).sum(1, keepdim=True)
    raise AdvlabError(f"cannot convert images with {x.shape[1]} channels to {channels}")


def to_uint8_image(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) in [0, 1] to an (H, W, C) or (H, W) uint8 array, rounding to the nearest 8-bit level."""
    a = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().permute(1, 2, 0).numpy()
    return a[:, :, 0] if a.shape[2] == 1 else a


def save_image(x: torch.Tensor, path: str | Path) -> None:
    """Save one (C, H, W) [0, 1] image as PNG (lossless: reading it back gives the 8-bit rounding of ``x``)."""
    Image.fromarray(to_uint8_image(x)).save(path)
