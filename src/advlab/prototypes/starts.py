"""Where a prototype run starts: a constant image, random noise, or real pictures (the three experiments of
research note 000).

    blank:gray | blank:black | blank:white | blank:red ...   a constant image (named colours)
    blank:0.25                                               a constant grey level in [0, 1]
    blank:R,G,B                                              a constant colour, in [0, 1] or 0..255 if any value > 1
    noise:gaussian[:MEAN,STD]                                N(mean, std^2) per pixel, clipped to [0, 1]
                                                             (default 0.5, 0.25)
    noise:uniform[:LOW,HIGH]                                 U(low, high) per pixel (default 0, 1)
    noise:...@K                                              K independent noise images (default 1)
    any data spec (digits:test, samples, svhn, folder:PATH)  each image is a start ("alienate from a given picture")

Noise is drawn from a generator seeded with ``seed``, so the same seed gives the same starts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from advlab.errors import AdvlabError

COLORS: dict[str, tuple[float, float, float]] = {
    "black": (0.0, 0.0, 0.0),
    "white": (1.0, 1.0, 1.0),
    "gray": (0.5, 0.5, 0.5),
    "grey": (0.5, 0.5, 0.5),
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
}


@dataclass
class Starts:
    """Start images ``x`` (S, C, H, W) in [0, 1], each one's label in its own data set (-1 when it has none),
    a readable name per image, and a short ``kind`` for run names ("blank", "noise", or the data set's name)."""

    x: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    kind: str


def _floats(text: str, spec: str, n: int | None = None) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise AdvlabError(f"start {spec!r}: expected numbers separated by commas, got {text!r}") from None
    if n is not None and len(values) != n:
        raise AdvlabError(f"start {spec!r}: expected {n} numbers, got {len(values)}")
    return values


def blank(color: str, channels: int, size: int) -> torch.Tensor:
    """One constant (1, C, H, W) image for a colour name, a grey level, or R,G,B (0..1, or 0..255 if any > 1)."""
    spec = f"blank:{color}"
    if color in COLORS:
        rgb = list(COLORS[color])
    else:
        if not any(c.isdigit() for c in color):
            raise AdvlabError(
                f"start {spec!r}: unknown colour; give a colour name ({', '.join(COLORS)}), a grey level or R,G,B"
            )
        rgb = _floats(color, spec)
        if len(rgb) not in (1, 3):
            raise AdvlabError(f"start {spec!r}: give a colour name ({', '.join(COLORS)}), one grey level or R,G,B")
        if any(v > 1 for v in rgb):
            rgb = [v / 255 for v in rgb]
        if any(not 0 <= v <= 1 for v in rgb):
            raise AdvlabError(f"start {spec!r}: colour values must be in [0, 1] or 0..255")
        rgb = rgb * 3 if len(rgb) == 1 else rgb
    value = torch.tensor([sum(rgb) / 3] if channels == 1 else rgb[:channels] + [rgb[-1]] * (channels - 3))
    return value.view(1, channels, 1, 1).expand(1, channels, size, size).clone()


def noise(kind: str, params: str, count: int, channels: int, size: int, seed: int) -> torch.Tensor:
    """``count`` noise images (count, C, H, W) in [0, 1] from a generator seeded with ``seed``."""
    spec = f"noise:{kind}"
    gen = torch.Generator().manual_seed(seed)
    shape = (count, channels, size, size)
    if kind == "gaussian":
        mean, std = _floats(params, spec, 2) if params else (0.5, 0.25)
        if std < 0:
            raise AdvlabError(f"start {spec!r}: std must be >= 0")
        return (mean + std * torch.randn(shape, generator=gen)).clamp(0, 1)
    if kind == "uniform":
        lo, hi = _floats(params, spec, 2) if params else (0.0, 1.0)
        if not 0 <= lo <= hi <= 1:
            raise AdvlabError(f"start {spec!r}: need 0 <= low <= high <= 1")
        return lo + (hi - lo) * torch.rand(shape, generator=gen)
    raise AdvlabError(f"start {spec!r}: noise is 'gaussian' or 'uniform'")


def parse_start(spec: str, channels: int, size: int, seed: int = 0, limit: int | None = None) -> Starts:
    """Resolve a start spec (see the module docstring) into images the model (``channels``, ``size``) takes."""
    head, _, rest = spec.partition(":")
    if head == "blank":
        if not rest:
            raise AdvlabError("start 'blank' needs a colour, e.g. blank:gray")
        return Starts(blank(rest, channels, size), torch.tensor([-1]), [f"blank {rest}"], "blank")
    if head == "noise":
        body, _, count_text = rest.partition("@")
        kind, _, params = body.partition(":")
        try:
            count = int(count_text) if count_text else 1
        except ValueError:
            raise AdvlabError(f"start {spec!r}: the count after @ must be an integer") from None
        if count < 1:
            raise AdvlabError(f"start {spec!r}: the count after @ must be >= 1")
        x = noise(kind, params, count, channels, size, seed)
        return Starts(x, torch.full((count,), -1), [f"{kind} noise {i}" for i in range(count)], "noise")
    from advlab import data

    # a start is only a picture to begin from: any data set is fitted to the model (svhn into ImageNet classes)
    x, y = data.load(spec, size, channels=channels, limit=limit)
    if len(x) == 0:
        raise AdvlabError(f"start {spec!r} holds no images")
    return Starts(x, y, data.item_names(spec, limit=len(x)), data.describe(spec).dataset)
