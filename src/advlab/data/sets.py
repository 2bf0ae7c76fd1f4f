"""The embedded data sets: scikit-learn's digits and scikit-image's sample photos."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from advlab.data.images import pil_to_tensor, resize_center_crop
from advlab.errors import AdvlabError

#: digits:test is every sample whose index is a multiple of DIGITS_TEST_EVERY (i % 3 == 0: 599 images);
#: digits:train is the other 1,198. Fixed and documented so numbers are comparable across runs.
DIGITS_TEST_EVERY = 3


def digits(split: str = "all") -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 handwritten digits as (N, 1, 8, 8) float32 in [0, 1] (grey levels 0..16 / 16) and
    labels 0-9.

    ``split``: ``"train"`` (1,198 images), ``"test"`` (599: indices 0, 3, 6, ...) or ``"all"``.
    """
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    y = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    idx = torch.arange(len(y))
    if split == "all":
        return x, y
    if split == "test":
        keep = idx % DIGITS_TEST_EVERY == 0
    elif split == "train":
        keep = idx % DIGITS_TEST_EVERY != 0
    else:
        raise AdvlabError(f"digits has splits train, test and all, not {split!r}")
    return x[keep].contiguous(), y[keep].contiguous()


@dataclass(frozen=True)
class SamplePhoto:
    """One of scikit-image's colour photos with the ImageNet class we established for it by hand."""

    name: str
    label: int  # ImageNet-1k index
    note: str

    def load(self) -> np.ndarray:
        import skimage.data

        if self.name == "motorcycle":
            return skimage.data.stereo_motorcycle()[0]
        return getattr(skimage.data, self.name)()


#: The ``samples`` set. The astronaut portrait and the microscopy/astronomy images have no fitting
#: ImageNet class and are left out.
SAMPLE_PHOTOS = (
    SamplePhoto(
        "chelsea",
        281,
        "Chelsea the cat, a tabby (281 'tabby'; 282 'tiger cat' and 285 'Egyptian cat' are the usual confusions)",
    ),
    SamplePhoto("coffee", 967, "a cup of espresso on a saucer (967 'espresso')"),
    SamplePhoto("rocket", 657, "a Falcon 9 on its launch pad at night (657 'missile'; ImageNet has no 'rocket')"),
    SamplePhoto(
        "motorcycle", 665, "a red motorcycle in a garage (665 'moped', the nearest class; ImageNet has no 'motorcycle')"
    ),
)


def samples(size: int = 224, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """The sample photos resized (shorter side to size/0.875, bicubic) and centre-cropped to ``size``; labels are
    ImageNet indices."""
    from PIL import Image

    xs = [pil_to_tensor(resize_center_crop(Image.fromarray(p.load()), size), channels) for p in SAMPLE_PHOTOS]
    y = torch.tensor([p.label for p in SAMPLE_PHOTOS], dtype=torch.int64)
    return torch.stack(xs), y, [p.name for p in SAMPLE_PHOTOS]
