"""Image files to [0, 1] tensors, and resizing, with PIL and torch only (no torchvision)."""

from __future__ import annotations

import os
import stat
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from advlab.data.files import open_regular, show, stat_input
from advlab.errors import AdvlabError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
#: the PIL formats of those suffixes: the only ones opened (PIL knows dozens more; EPS would even run Ghostscript)
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM")

#: Resize the shorter side to ``size / CROP_FRACTION`` before the centre crop (224 -> 256), the usual
#: ImageNet evaluation transform.
CROP_FRACTION = 0.875

#: The most pixels an image file may have (checked from its header, before decoding): 64 megapixels, 8000 x 8000,
#: more than a camera's photo. Decoded it takes at most 256 MB (RGBA), as float32 (C, H, W) 768 MB. Also the
#: most pixels any resize here may produce, and the most an image of a ``tensors:`` file may have.
MAX_IMAGE_PIXELS = 64_000_000
#: The longest side of an image that is resized may be at most this many times its shorter side. Resizing keeps
#: the aspect ratio (shorter side -> 256 for a 224 model), so a 1 x 2,000,000 strip, a few KB as a PNG, would
#: become 256 x 512,000,000 pixels (131 GB as RGB). 16:1 is far beyond any panorama a classifier sees whole.
MAX_ASPECT = 16
#: The largest image file opened, in bytes: an uncompressed 64-megapixel 16-bit RGB TIFF has 384 MB; PIL reads
#: some chunks (a PNG's unknown ones) whole into memory, so the file's size is bounded too.
MAX_IMAGE_FILE_BYTES = 1 << 30

# PIL warns (DecompressionBombWarning, a second line on stderr) in Image.open for images over its own limit of
# 89 megapixels, before advlab can refuse them with its lower one; _open_lazily silences that one warning. The
# lock keeps the threads of a data loader from interleaving their catch_warnings (which is not thread-safe).
_OPEN_LOCK = threading.Lock()


def _open_lazily(fh: BinaryIO) -> Image.Image:
    """``Image.open`` (reads the header only) in the formats of :data:`IMAGE_FORMATS`, without PIL's bomb warning."""
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(fh, formats=IMAGE_FORMATS)


def check_image_size(width: int, height: int, name: str | None = None, size: int | None = None) -> None:
    """Refuse, before decoding, an image of more than :data:`MAX_IMAGE_PIXELS` pixels, or (when it is to be
    resized to ``size`` x ``size``) one whose aspect ratio exceeds :data:`MAX_ASPECT`; ``name`` is shown."""
    what = f"image {name}" if name else "the image"
    if width < 1 or height < 1:
        raise AdvlabError(f"{what} is {width}x{height} pixels: it has no pixels")
    if width * height > MAX_IMAGE_PIXELS:
        raise AdvlabError(
            f"{what} is {width}x{height} pixels, over advlab's limit of {MAX_IMAGE_PIXELS:,} "
            "pixels per image (a decompression bomb? else scale it down first)"
        )
    if size is not None and (width, height) != (size, size) and max(width, height) > MAX_ASPECT * min(width, height):
        raise AdvlabError(
            f"{what} is {width}x{height} pixels, an aspect ratio over {MAX_ASPECT}:1; resizing it "
            f"for a {size}x{size} input would keep that ratio (crop it first)"
        )


#: PIL modes of single-channel images (read with 1 channel when the model does not say how many it takes)
GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16L", "I;16B", "I;16N", "F")


def image_header(path: str | Path) -> tuple[int, int, int]:
    """(width, height, channels) of an image file from its header, without decoding the pixels (PIL opens lazily):
    channels 1 for grey modes (:data:`GREY_MODES`), 3 otherwise. The same refusals as :func:`open_image`."""
    with open_regular(path, "image") as fh:
        with _read_errors(path):
            img = _open_lazily(fh)
        w, h = img.size
        check_image_size(w, h, show(path))
        return w, h, 1 if img.mode in GREY_MODES else 3


@contextmanager
def _read_errors(path: str | Path) -> Iterator[None]:
    """Every way PIL fails to open or decode ``path`` as one :class:`AdvlabError` (an AdvlabError passes)."""
    try:
        yield
    except UnidentifiedImageError as e:
        raise AdvlabError(f"{show(path)} is not an image file advlab reads ({', '.join(IMAGE_FORMATS)})") from e
    except Image.DecompressionBombError as e:
        raise AdvlabError(
            f"image {show(path)} is over PIL's limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels "
            "(a decompression bomb?)"
        ) from e
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        if isinstance(e, AdvlabError):
            raise
        raise AdvlabError(f"cannot read image {show(path)}: {_first_line(e)} (truncated or corrupt file?)") from e


def _resized_side(size: int, crop_fraction: float) -> int:
    """The shorter side before the centre crop; refused when even a square image would exceed the pixel budget."""
    if size < 1 or round(size / crop_fraction) ** 2 > MAX_IMAGE_PIXELS // MAX_ASPECT:
        raise AdvlabError(
            f"cannot resize images to {size}x{size}: sizes from 1 to "
            f"{int((MAX_IMAGE_PIXELS // MAX_ASPECT) ** 0.5 * crop_fraction)} are supported"
        )
    return round(size / crop_fraction)


def open_image(path: str | Path, size: int | None = None) -> Image.Image:
    """Open and fully decode an image file; one clear :class:`AdvlabError` for every way it can fail.

    Only a regular file of at most :data:`MAX_IMAGE_FILE_BYTES` is opened (see :mod:`advlab.data.files`), only in
    the formats of :data:`IMAGE_FORMATS`, and its size in pixels is checked (:func:`check_image_size`, with the
    ``size`` it will be resized to) before decoding.
    """
    path = Path(path)
    st = stat_input(path, "image")
    if st is None:
        raise AdvlabError(f"no such file: {show(path)}")
    if stat.S_ISDIR(st.st_mode):
        raise AdvlabError(f"{show(path)} is a directory, not an image (use folder:PATH for a class-folder data set)")
    with open_regular(path, "image") as fh:
        if (nbytes := os.fstat(fh.fileno()).st_size) > MAX_IMAGE_FILE_BYTES:
            raise AdvlabError(
                f"image {show(path)} has {nbytes:,} bytes, over advlab's limit of {MAX_IMAGE_FILE_BYTES:,}"
            )
        with _read_errors(path):
            img = _open_lazily(fh)
            check_image_size(*img.size, show(path), size)
            img.load()
    return img


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


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
        raise AdvlabError(
            f"image has {img.mode} pixels in [{lo:g}, {hi:g}]; advlab reads 16-bit images as 0..65535 and float "
            "images in [0, 1] (rescale it, or save it as an 8-bit PNG)"
        )
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
    short = _resized_side(size, crop_fraction)
    check_image_size(w, h, None, size)  # open_image checked a file's image already, with its name
    if img.mode in _DEEP_MODES:  # resample 16-bit and float images in float, at their own range
        img = _deep_to_float(img)
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
    (see :func:`resize_center_crop`: an image of exactly ``size`` x ``size`` pixels goes in unchanged). An image
    of more than :data:`MAX_IMAGE_PIXELS`, or one to be resized with an aspect ratio over :data:`MAX_ASPECT`, is
    refused before it is decoded."""
    if size is not None:
        _resized_side(size, CROP_FRACTION)
    img = open_image(path, size)
    if size is not None:
        img = resize_center_crop(img, size)
    return pil_to_tensor(img, channels)


def resize_batch(x: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a batch (N, C, H, W) in [0, 1] to ``size`` x ``size`` (bilinear, antialiased when shrinking); the
    output, like any image here, has at most :data:`MAX_IMAGE_PIXELS` pixels per image."""
    if x.shape[-2:] == (size, size):
        return x
    if size < 1 or size * size > MAX_IMAGE_PIXELS:
        raise AdvlabError(f"cannot resize images to {size}x{size}: at most {MAX_IMAGE_PIXELS:,} pixels per image")
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
