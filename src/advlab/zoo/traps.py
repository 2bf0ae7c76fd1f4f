"""Trap models: classifiers whose gradients are obfuscated (Athalye, Carlini & Wagner 2018, "Obfuscated gradients
give a false sense of security"), each wrapping an honest twin network.

Every trap takes (N, C, H, W) images in [0, 1] like any advlab model, makes (almost) the twin's decisions on clean
inputs, and hides its gradients in one of the ways that paper lists, so that a naive gradient attack over-reports
its robustness. They are the test bench of the adaptive evaluation (:mod:`advlab.evaluation.diagnostics`,
:mod:`advlab.evaluation.bpda`) and of ``benchmarks/traps.py``; ``.twin`` is the honest network, the one an
adaptive reference attack (BPDA through the twin, EOT, transfer) differentiates. Any [0, 1] image classifier can
be a twin (the tests use the shipped digits CNN); a trap keeps the twin's ``.info`` and train/eval mode.

Quantizers (``levels`` + 1 grey levels, the grid k / levels, k = 0..levels, each pixel to its nearest level):
  :class:`RoundQuantized`      ``torch.round``                     (zero gradient almost everywhere)
  :class:`ThresholdQuantized`  sum_k [x > t_k] as float / levels   (comparisons cast to float: no gradient at all)
  :class:`IntCastQuantized`    (x * levels + 1/2) cast to an int    (the cast has no gradient)
Others:
  :class:`NumpyPreprocessed`   preprocessing in NumPy               (no gradient path to the input)
  :class:`NumpyLogits`         the whole model outside autograd     (no gradient path at all)
  :class:`NoisyInput`          fresh Gaussian noise at every call   (randomized: one gradient is one draw's)
  :class:`ProbabilityOutputs`  a final softmax                      (probabilities, not logits: CE saturates)
  :class:`NaNLogits`           NaN logits on some inputs            (every accuracy meaningless)
  :class:`HighFrequency`       logits + a small, fast-oscillating term (gradients large but useless)
Inside the net, around it, and in autograd:
  :class:`KWinnersTakeAll`     top-k of every ReLU output (Xiao 2020)  (discontinuous; honest gradients)
  :class:`SteepStaircase`      a smooth staircase on the last ReLU    (vanishing/exploding gradients, no flagged op)
  :class:`GradModeDecoy`       another forward when autograd is on    (attacks fight a decoy)
  :class:`RandomResizePad`     random resize and pad (Xie 2018)       (randomized, per sample)
  :class:`CustomBackward`      identity Function, lying backward      (zero, negated or noisy gradients)
  :class:`RejectOffGrid`       a detector with an extra reject output (K + 1 outputs; the gate has no gradient)
  :class:`JpegPurified`        DCT coefficients rounded (JPEG-like)   (purification: zero gradient)
  :class:`InputSeededNoise`    noise seeded by the pixels             (deterministic, yet fresh noise per change)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn


class Trap(nn.Module):
    """The base of the traps: ``twin`` (the honest network, a submodule), its ``info`` and train/eval mode."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.twin = net
        self.info = getattr(net, "info", None)
        self.train(net.training)


def _check_levels(levels: int, most: int | None = None) -> int:
    if not isinstance(levels, int) or levels < 1 or (most is not None and levels > most):
        raise ValueError(f"levels must be an int in [1, {most or 'inf'}], got {levels!r}")
    return levels


class RoundQuantized(Trap):
    """Obfuscates by an input quantizer written with ``torch.round``: ``twin(round(x * levels) / levels)``, zero
    gradient almost everywhere (shattered gradients)."""

    def __init__(self, net: nn.Module, levels: int = 15) -> None:
        super().__init__(net)
        self.levels = _check_levels(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin(torch.round(x * self.levels) / self.levels)


class ThresholdQuantized(Trap):
    """Obfuscates by an input quantizer built from comparisons cast to float: ``q = sum_k [x > t_k] / levels`` with
    thresholds ``t_k = (k - 1/2) / levels``, k = 1..levels (the nearest grey level, as :class:`RoundQuantized` but
    for ties), then ``twin(q)``; a bool cast to float has no gradient at all."""

    def __init__(self, net: nn.Module, levels: int = 15) -> None:
        super().__init__(net)
        self.levels = _check_levels(levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = sum((x > (k - 0.5) / self.levels).float() for k in range(1, self.levels + 1)) / self.levels
        return self.twin(q)


class IntCastQuantized(Trap):
    """Obfuscates by clamping to the grid through an integer cast: ``(x * levels + 1/2).to(dtype).to(float) /
    levels`` (truncation of a non-negative number: round half up), then ``twin``; a cast to an integer dtype has no
    gradient. ``dtype``: ``torch.uint8`` (levels <= 255) or a wider integer type (``torch.long``...)."""

    def __init__(self, net: nn.Module, levels: int = 15, dtype: torch.dtype = torch.uint8) -> None:
        super().__init__(net)
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise ValueError(f"dtype must be an integer dtype, got {dtype}")
        self.levels, self.dtype = _check_levels(levels, 255 if dtype == torch.uint8 else None), dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = (x.clamp(0, 1) * self.levels + 0.5).to(self.dtype).to(x.dtype) / self.levels
        return self.twin(q)


class NumpyPreprocessed(Trap):
    """Obfuscates by preprocessing in NumPy (a gamma curve ``x ** gamma``; the default 1.0 maps every image to
    itself): the twin's decisions, but no gradient path from the outputs to the input. ``layout``: how the NumPy
    part hands the images back to torch, which puts them in (N, C, H, W) again: "image" as they came, "flat" one row
    per image (N, C*H*W), "channels-last" (N, H, W, C) as OpenCV and PIL keep them, "per-image" one array per image
    (a loop over the batch, then ``torch.stack``), "pil" one image at a time as PIL hands it over (H, W, C, 8-bit:
    the pixels rounded to 1/255), each put in (C, H, W) by torch before the stack."""

    LAYOUTS = ("image", "flat", "channels-last", "per-image", "pil")

    def __init__(self, net: nn.Module, gamma: float = 1.0, layout: str = "image") -> None:
        super().__init__(net)
        if layout not in self.LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(self.LAYOUTS)}, got {layout!r}")
        self.gamma, self.layout = float(gamma), layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = np.clip(x.detach().cpu().numpy(), 0, 1) ** self.gamma
        if self.layout == "flat":
            back = torch.from_numpy(pre.reshape(len(pre), -1)).to(x).view(x.shape)
        elif self.layout == "channels-last":
            back = torch.from_numpy(np.ascontiguousarray(pre.transpose(0, 2, 3, 1))).to(x).permute(0, 3, 1, 2)
        elif self.layout == "per-image":
            back = torch.stack([torch.from_numpy(np.ascontiguousarray(image)) for image in pre]).to(x)
        elif self.layout == "pil":  # (a grey image comes back (H, W), as PIL's mode "L" hands it over)
            hwc = [np.round(image.transpose(1, 2, 0) * 255).astype(np.uint8) for image in pre]
            pil = [image[..., 0] if image.shape[-1] == 1 else image for image in hwc]
            chw = [t.permute(2, 0, 1) if t.ndim == 3 else t[None] for t in (torch.from_numpy(i / 255.0) for i in pil)]
            back = torch.stack(chw).to(x)
        else:
            back = torch.from_numpy(pre).to(x)
        return self.twin(back)


class NumpyLogits(Trap):
    """Obfuscates by serving the model outside autograd: the twin runs under ``torch.no_grad`` and its logits come
    back through NumPy (a scikit-learn, ONNX or remote model behind a torch wrapper). The twin's decisions, and no
    gradient path at all: only queries (black-box attacks) or a differentiable twin reach it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self.twin(x.detach()).cpu().numpy()
        return torch.from_numpy(logits.copy()).to(x)


class NoisyInput(Trap):
    """Obfuscates by randomness: ``twin(clip(x + sigma * n, 0, 1))`` with fresh Gaussian noise n at every call
    (sigma in [0, 1] pixel units), drawn from a generator seeded with ``seed`` at the first call on each device
    (the sequence of draws is reproducible; two calls differ)."""

    def __init__(self, net: nn.Module, sigma: float = 0.25, seed: int = 0) -> None:
        super().__init__(net)
        self.sigma, self.seed = float(sigma), int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = self._generators.get(x.device)
        if gen is None:
            gen = self._generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        noise = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
        return self.twin((x + self.sigma * noise).clamp(0, 1))


class ProbabilityOutputs(Trap):
    """Obfuscates by returning probabilities: ``softmax(twin(x))`` (the same argmax; the cross-entropy of
    probabilities saturates and its gradients vanish)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin(x).softmax(1)


class NaNLogits(Trap):
    """Obfuscates by NaN logits (a division by zero) on the images whose top-left pixel is above ``bright`` (on
    the 8x8 digits that pixel is almost always 0); the twin's logits elsewhere."""

    def __init__(self, net: nn.Module, bright: float = 0.05) -> None:
        super().__init__(net)
        self.bright = float(bright)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.twin(x)
        hit = (x[:, 0, 0, 0] > self.bright)[:, None]
        return torch.where(hit, torch.zeros_like(z) / 0, z)


class HighFrequency(Trap):
    """Obfuscates by a deterministic high-frequency term (gradients large but useless):

        logits_k(x) = twin(x)_k + amplitude * s_k * h(x),   h(x) = (1 / sqrt(P)) sum_p b_p sin(frequency * x_p)

    over the P = C * H * W pixels, with fixed random signs s_k (per class) and b_p (per pixel) drawn from ``seed``.
    |h| is about 1/sqrt(2), so the logits move by about ``amplitude``; the input gradient of the term is
    ``amplitude * frequency / sqrt(P)`` per pixel (62 for the defaults on 8x8 digits), and it changes sign every
    pi / frequency (0.003 pixel units), so a gradient step of any useful size goes in a random direction.
    """

    def __init__(self, net: nn.Module, amplitude: float = 0.5, frequency: float = 1000.0, seed: int = 0) -> None:
        super().__init__(net)
        self.amplitude, self.frequency, self.seed = float(amplitude), float(frequency), int(seed)

    def _signs(self, n: int, offset: int, like: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 2 + offset)
        return (torch.randint(0, 2, (n,), generator=gen) * 2 - 1).to(like)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.twin(x)
        flat = x.flatten(1)
        b = self._signs(flat.shape[1], 0, z)
        h = (torch.sin(self.frequency * flat.to(z.dtype)) * b).sum(1) / math.sqrt(flat.shape[1])
        return z + self.amplitude * h[:, None] * self._signs(z.shape[1], 1, z)


# --- activation tricks, gradient-mode switches, randomized resizing, lying backwards, rejection, purification ---


class _OnReLUs:
    """A context that replaces the output ``a`` of every ``nn.ReLU`` of ``net`` (the last one only with ``last``) by
    ``f(a)`` (forward hooks, removed on exit: the twin itself is left as it was)."""

    def __init__(self, net: nn.Module, f: Callable[[torch.Tensor], torch.Tensor], last: bool = False) -> None:
        self.net, self.f, self.last = net, f, last
        self.handles: list[Any] = []

    def __enter__(self) -> None:
        relus = [m for m in self.net.modules() if isinstance(m, nn.ReLU)]
        if not relus:
            raise ValueError("the twin has no nn.ReLU module to change")
        relus = relus[-1:] if self.last else relus
        self.handles = [m.register_forward_hook(lambda module, args, out: self.f(out)) for m in relus]

    def __exit__(self, *exc: object) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


class KWinnersTakeAll(Trap):
    """Obfuscates by a discontinuous activation (Xiao, Zhong & Zheng 2020, "Enhancing adversarial defense by
    k-winners-take-all"): the output ``a`` of every ReLU of the twin keeps its ``k = ceil(ratio * n)`` largest of the
    n values per sample and sets the others to 0,

        kWTA(a)_i = a_i [a_i >= a_(k)],   a_(k) the k-th largest value of the sample's a,

    the twin's weights unchanged. Its gradients are honest (the mask is locally constant: the twin's gradient through
    the winners), but the function jumps wherever a unit enters or leaves the top k, and the many small jumps make
    gradient steps unreliable. ``ratio`` in (0, 1]; 1 is the twin itself."""

    def __init__(self, net: nn.Module, ratio: float = 0.2) -> None:
        super().__init__(net)
        if not 0 < ratio <= 1:
            raise ValueError(f"ratio must be in (0, 1], got {ratio!r}")
        self.ratio = float(ratio)

    def _kwta(self, a: torch.Tensor) -> torch.Tensor:
        flat = a.flatten(1)
        k = max(1, math.ceil(self.ratio * flat.shape[1]))
        kth = flat.detach().topk(k, 1).values[:, -1:]
        return (flat * (flat >= kth).to(flat.dtype)).view_as(a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _OnReLUs(self.twin, self._kwta):
            return self.twin(x)


class SteepStaircase(Trap):
    """Obfuscates by a steep, saturating activation inside the net: the output ``a`` of the twin's last ReLU (the
    penultimate features, where the digits CNN has 128) goes through a smooth staircase of steps ``step`` high and wide,

        s(a) = step * sum_j sigmoid(steepness * (a / step - j + 1/2)),   j = 1 .. ceil(max a / step) + 1,

    close to ``step * round(a / step)`` (the twin on activations rounded to the step). Only smooth torch ops, so no
    op is flagged as non-differentiable, yet ds/da is about 0 between the steps and ``steepness / 4`` on them:
    gradients vanish at the activations between edges and explode at the few within ~1 / steepness of one
    (vanishing/exploding gradients in the Athalye et al. taxonomy). With the defaults (step 1, steepness 1000) on
    the digits CNN the input gradient's norm is a median 0.15x the twin's (under 0.01x on a quarter of the digits,
    up to 17x on others); a steepness of 50 leaves a gradient about as useful as the twin's."""

    def __init__(self, net: nn.Module, step: float = 1.0, steepness: float = 1000.0) -> None:
        super().__init__(net)
        if step <= 0 or steepness <= 0:
            raise ValueError(f"step and steepness must be > 0, got {step!r}, {steepness!r}")
        self.step, self.steepness = float(step), float(steepness)

    def _stairs(self, a: torch.Tensor) -> torch.Tensor:
        n = int(math.ceil(float(a.detach().max()) / self.step)) + 1 if a.numel() else 1
        j = torch.arange(1, n + 1, device=a.device, dtype=a.dtype)
        u = (a / self.step)[..., None] - j + 0.5
        return self.step * torch.sigmoid(self.steepness * u).sum(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _OnReLUs(self.twin, self._stairs, last=True):
            return self.twin(x)


class GradModeDecoy(Trap):
    """Obfuscates by a forward that depends on ``torch.is_grad_enabled()``. Under ``torch.no_grad`` (how a user
    predicts) it is the twin. With autograd on (how an attack computes gradients) it is a decoy: the twin's logits
    plus ``lock`` on the class the twin gives the image binarized at 1/2 (``round(x)``, computed without gradient),

        decoy(x) = twin(x) + lock * onehot(argmax twin(round(x))),

    whose gradient is the twin's (honest-looking, finite differences agree) but whose decision barely moves within
    an L-inf ball of 0.1 (a pixel must cross 1/2). An attack that counts its successes on the grad-enabled forward
    reports the decoy's robustness, not the model's."""

    def __init__(self, net: nn.Module, lock: float = 30.0) -> None:
        super().__init__(net)
        self.lock = float(lock)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.twin(x)
        if not torch.is_grad_enabled():
            return z
        with torch.no_grad():
            locked = self.twin(torch.round(x.detach().clamp(0, 1))).argmax(1)
        return z + self.lock * nn.functional.one_hot(locked, z.shape[1]).to(z.dtype)


class RandomResizePad(Trap):
    """Obfuscates by randomness (Xie et al. 2018, "Mitigating adversarial effects through randomization"), as an
    input layer of fixed size: each image is resized to a random side s ~ U[H, canvas * H] (bilinear), pasted at a
    random position of a zero canvas of side ``canvas * H`` and the canvas resized back to H x W. One
    ``grid_sample``: output pixel u (normalized coordinates) reads the image at (u - c) * canvas * H / s, c the
    pasted image's centre. Fresh draws per sample at every call, from a generator seeded with ``seed`` at the first
    call on each device (reproducible sequence; two calls differ). Differentiable: each gradient is one draw's."""

    def __init__(self, net: nn.Module, canvas: float = 1.25, seed: int = 0) -> None:
        super().__init__(net)
        if canvas < 1:
            raise ValueError(f"canvas must be >= 1, got {canvas!r}")
        self.canvas, self.seed = float(canvas), int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = self._generators.get(x.device)
        if gen is None:
            gen = self._generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        n = len(x)
        u = torch.rand((n, 3), generator=gen, device=x.device, dtype=x.dtype)
        side = 1 + (self.canvas - 1) * u[:, 0]  # s / H, in units of the image side: 1 .. canvas
        free = self.canvas - side  # room left on the canvas (image sides)
        # the pasted image's centre in the canvas's normalized coordinates [-1, 1]
        centre = (-1 + (2 * free[:, None] * u[:, 1:] + side[:, None]) / self.canvas).flip(1)  # (x, y) order
        scale = self.canvas / side
        theta = torch.zeros((n, 2, 3), device=x.device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = scale
        theta[:, :, 2] = -centre * scale[:, None]
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return self.twin(nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False))


class _Backward(torch.autograd.Function):
    """The identity forward with the backward of ``mode``: zero, negated or noisy (see :class:`CustomBackward`)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, mode: str, gen: torch.Generator | None, noise: float) -> torch.Tensor:
        ctx.mode, ctx.gen, ctx.noise = mode, gen, noise
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        if ctx.mode == "zero":
            return torch.zeros_like(g), None, None, None
        if ctx.mode == "negated":
            return -g, None, None, None
        scale = ctx.noise * g.flatten(1).pow(2).mean(1).sqrt().view(-1, *[1] * (g.dim() - 1))
        n = torch.randn(g.shape, generator=ctx.gen, device=g.device, dtype=g.dtype)
        return g + scale * n, None, None, None


class CustomBackward(Trap):
    """Obfuscates by a custom ``torch.autograd.Function`` on the input: the forward is the identity (the trap is
    the twin, exactly), the backward lies. ``mode``:

    * ``"zero"``: the gradient is 0 (as if the input did not matter);
    * ``"negated"``: -g (every gradient step goes the wrong way; a lying backward);
    * ``"noisy"``: g + ``noise`` * rms(g) * n per sample, fresh Gaussian n at every backward (from a generator
      seeded with ``seed``): its sign is mostly noise.
    """

    MODES = ("zero", "negated", "noisy")

    def __init__(self, net: nn.Module, mode: str = "negated", noise: float = 10.0, seed: int = 0) -> None:
        super().__init__(net)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {', '.join(self.MODES)}, got {mode!r}")
        self.mode, self.noise, self.seed = mode, float(noise), int(seed)
        self._generators: dict[torch.device, torch.Generator] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = self._generators.get(x.device)
        if gen is None:
            gen = self._generators[x.device] = torch.Generator(device=x.device).manual_seed(self.seed)
        return self.twin(_Backward.apply(x, self.mode, gen, self.noise))


class RejectOffGrid(Trap):
    """Obfuscates by detection: a detector that fires on inputs off the ``levels`` grid (the 8x8 digits' pixels are
    multiples of 1/16; most perturbations are not), with a reject decision as an extra output:

        score(x) = mean_p sin^2(pi * levels * x_p)  (0 on the grid),   fires when score > ``threshold``;
        logits = [twin(x), r],   r = max_k twin(x)_k + margin when it fires, else min_k twin(x)_k - margin.

    K + 1 outputs: class K (10 on the digits) is "reject"; ``info.num_classes`` says K + 1. The counting chosen for
    the reference (``benchmarks/traps.py``): an attack succeeds only with a wrong *real* class (a rejected input is
    not a success, as for detectors in Carlini & Wagner 2017, "Adversarial examples are not easily detected"), and
    a rejected clean input is not correct. Counting "any output but y" (reject an error too) is stricter; both are
    measured there. The detector's score is differentiable, the reject decision a comparison: no gradient."""

    def __init__(self, net: nn.Module, levels: int = 16, threshold: float = 1e-3, margin: float = 10.0) -> None:
        super().__init__(net)
        self.levels, self.threshold, self.margin = _check_levels(levels), float(threshold), float(margin)
        info = self.info
        if dataclasses.is_dataclass(info) and not isinstance(info, type) and hasattr(info, "num_classes"):
            self.info = dataclasses.replace(info, num_classes=int(info.num_classes) + 1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """The detector's score per image: the mean over pixels of sin^2(pi * levels * x)."""
        return torch.sin(math.pi * self.levels * x).pow(2).flatten(1).mean(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.twin(x)
        fires = (self.score(x) > self.threshold)[:, None]
        r = torch.where(fires, z.amax(1, keepdim=True) + self.margin, z.amin(1, keepdim=True) - self.margin)
        return torch.cat([z, r], 1)


def _dct_matrix(n: int) -> torch.Tensor:
    """The orthonormal DCT-II matrix D (n x n): D @ v are the DCT coefficients of v, D.T @ c inverts them."""
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    d = torch.cos(math.pi * (2 * i + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


class JpegPurified(Trap):
    """Obfuscates by input purification with JPEG-like compression (Guo et al. 2018; Das et al. 2017): the image in
    ``block`` x ``block`` tiles (H, W multiples of it), each tile's 2-D DCT coefficients c_uv rounded to multiples
    of q_uv = ``quality`` * (1 + u + v) (coarser at high frequencies), the inverse DCT, clamped to [0, 1], then the
    twin. ``torch.round`` on the coefficients after a linear map: zero gradient almost everywhere."""

    dct: torch.Tensor
    q: torch.Tensor

    def __init__(self, net: nn.Module, quality: float = 0.08, block: int = 8) -> None:
        super().__init__(net)
        if quality <= 0 or block < 1:
            raise ValueError(f"quality must be > 0 and block >= 1, got {quality!r}, {block!r}")
        self.quality, self.block = float(quality), int(block)
        u = torch.arange(block, dtype=torch.float64)
        self.register_buffer("dct", _dct_matrix(block).float(), persistent=False)
        self.register_buffer("q", (self.quality * (1 + u[:, None] + u[None, :])).float(), persistent=False)

    def purify(self, x: torch.Tensor) -> torch.Tensor:
        """The compressed image (same shape as ``x``)."""
        n, c, h, w = x.shape
        b = self.block
        if h % b or w % b:
            raise ValueError(f"image sides must be multiples of the block {b}, got {h}x{w}")
        d, q = self.dct.to(x), self.q.to(x)
        tiles = x.reshape(n, c, h // b, b, w // b, b).transpose(3, 4)  # (n, c, h/b, w/b, b, b)
        coef = d @ tiles @ d.T
        back = d.T @ (torch.round(coef / q) * q) @ d
        return back.transpose(3, 4).reshape(n, c, h, w).clamp(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin(self.purify(x))


class InputSeededNoise(Trap):
    """Obfuscates by pseudo-randomness that looks deterministic: ``twin(clip(x + sigma * n(x), 0, 1))`` with
    Gaussian noise n(x) drawn from a generator seeded by a hash of the image's pixels (quantized to 1/65535) and
    ``seed``. Two calls on the same image agree, so a randomness check sees a deterministic model; yet any change of
    a pixel by 1/65535 draws fresh noise, n(x) has no gradient, and the function is discontinuous everywhere."""

    def __init__(self, net: nn.Module, sigma: float = 0.15, seed: int = 0) -> None:
        super().__init__(net)
        self.sigma, self.seed = float(sigma), int(seed)

    def noise(self, x: torch.Tensor) -> torch.Tensor:
        """n(x): one standard Gaussian image per image of ``x``, a function of its pixels."""
        with torch.no_grad():
            codes = (x.detach().clamp(0, 1) * 65535).round().to(torch.int64).flatten(1).cpu()
            w = torch.randint(1, 2**31 - 1, (codes.shape[1],), generator=torch.Generator().manual_seed(self.seed))
            keys = ((codes * w).sum(1) + self.seed) % (2**61 - 1)
            out = torch.empty(x.shape, dtype=x.dtype)
            for i, key in enumerate(keys.tolist()):
                out[i] = torch.randn(x.shape[1:], generator=torch.Generator().manual_seed(key), dtype=x.dtype)
        return out.to(x.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin((x + self.sigma * self.noise(x)).clamp(0, 1))
