"""The trap models of advlab.zoo.traps: each keeps its twin's clean decisions on the digits and hides its
gradients the way its docstring says. Measured on the 599 test digits with the shipped digits CNN as twin
(the twin 98.7% right): agreement with the twin's predictions 99.7% (round and int-cast quantizers), 100%
(threshold quantizer, NumPy preprocessing, probabilities, high-frequency term), 81% for the noise (sigma 0.25)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import data, zoo
from advlab.zoo import traps


@pytest.fixture(scope="module")
def twin() -> nn.Module:
    return zoo.load("digits-cnn")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.load("digits:test")
    return x, y


def _agreement(trap: nn.Module, twin: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((trap(x).argmax(1) == twin(x).argmax(1)).float().mean())


def _input_grad(model: nn.Module, x: torch.Tensor) -> torch.Tensor | None:
    xg = x.clone().requires_grad_(True)
    out = model(xg)
    if not out.requires_grad:
        return None
    (g,) = torch.autograd.grad(out.logsumexp(1).sum(), xg, allow_unused=True)
    return g


#: each quantizer with the grid point it sends x to, written with plain ops: round half to even, half down, half up
QUANTIZERS = [
    (traps.RoundQuantized, lambda x: torch.round(x * 15) / 15),
    (traps.ThresholdQuantized, lambda x: torch.ceil(x * 15 - 0.5) / 15),
    (traps.IntCastQuantized, lambda x: torch.floor(x * 15 + 0.5) / 15),
    (lambda net: traps.IntCastQuantized(net, dtype=torch.long), lambda x: torch.floor(x * 15 + 0.5) / 15),
]


@pytest.mark.parametrize(("make", "grid"), QUANTIZERS)
def test_quantizers_keep_the_twins_decisions_and_give_no_gradient(
    make, grid, twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = make(twin)
    assert trap.twin is twin and trap.info is twin.info and not trap.training
    assert _agreement(trap, twin, x) >= 0.99
    with torch.no_grad():  # the input really is sent to the 16-level grid: the trap is the twin on the grid image
        assert torch.equal(trap(x), twin(grid(x)))
    g = _input_grad(trap, x[:16])
    assert g is None or float(g.abs().sum()) == 0  # no gradient reaches the input
    assert float(_input_grad(twin, x[:16]).abs().sum()) > 0  # the twin has one


def test_the_three_quantizers_agree_off_ties(twin: nn.Module) -> None:
    x = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        outs = [
            t(x) for t in (traps.RoundQuantized(twin), traps.ThresholdQuantized(twin), traps.IntCastQuantized(twin))
        ]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])  # random pixels hit no tie


def test_numpy_preprocessing_has_no_gradient_path(twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits
    trap = traps.NumpyPreprocessed(twin)
    with torch.no_grad():
        assert torch.equal(trap(x), twin(x))  # gamma 1: the twin itself on clean inputs
    assert _input_grad(trap, x[:8]) is None
    assert _agreement(traps.NumpyPreprocessed(twin, gamma=0.8), twin, x) >= 0.9


def test_noisy_input_draws_fresh_noise_reproducibly(twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits
    trap = traps.NoisyInput(twin, sigma=0.25, seed=3)
    with torch.no_grad():
        a, b = trap(x), trap(x)
        again = traps.NoisyInput(twin, sigma=0.25, seed=3)(x)
    assert not torch.equal(a, b) and torch.equal(a, again)
    assert 0.7 <= _agreement(trap, twin, x) < 0.95  # random decisions, mostly the twin's
    assert _agreement(traps.NoisyInput(twin, sigma=0.02), twin, x) >= 0.98


def test_probability_outputs(twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits
    with torch.no_grad():
        p = traps.ProbabilityOutputs(twin)(x)
    assert torch.allclose(p.sum(1), torch.ones(len(x))) and float(p.min()) >= 0
    assert _agreement(traps.ProbabilityOutputs(twin), twin, x) == 1.0


def test_nan_logits_on_bright_corners_only(twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits
    x = x[:64].clone()
    x[[3, 7], 0, 0, 0] = 0.5
    with torch.no_grad():
        z = traps.NaNLogits(twin)(x)
    bad = ~torch.isfinite(z).all(1)
    assert bad.nonzero().flatten().tolist() == [3, 7]
    with torch.no_grad():
        assert torch.equal(z[~bad], twin(x)[~bad])


def test_high_frequency_term_is_deterministic_with_large_useless_gradients(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = traps.HighFrequency(twin, amplitude=0.5, frequency=1000.0, seed=0)
    with torch.no_grad():
        assert torch.equal(trap(x), trap(x))  # deterministic
        moved = (trap(x) - twin(x)).abs().amax(1)
    assert float(moved.max()) <= 0.5 * 8  # |h| <= P / sqrt(P) = 8 on 8x8 images
    assert _agreement(trap, twin, x) >= 0.99
    g, g0 = _input_grad(trap, x[:16]), _input_grad(twin, x[:16])
    assert float(g.abs().mean()) > 10 * float(g0.abs().mean())  # large
    # useless: a step of 0.01 along the gradient's sign raises the trap's log-sum-exp less than a step along the
    # twin's gradient sign raises the twin's, and the first-order prediction of the trap's change is far off
    x0 = x[:16]
    with torch.no_grad():
        predicted = float((g * 0.01 * g.sign()).sum())
        actual = float(trap(x0 + 0.01 * g.sign()).logsumexp(1).sum() - trap(x0).logsumexp(1).sum())
    assert actual < 0.2 * predicted


# --- activation tricks, gradient-mode decoy, random resize-and-pad, lying backwards, rejection, purification ---
# Agreement with the twin's predictions on the 599 test digits, measured: kWTA (ratio 0.2) 96.7%, steep staircase
# (step 1, steepness 1000) 100%, grad-mode decoy 100% under no_grad (90% with autograd on: the decoy), random
# resize-and-pad (canvas 1.25) 89%, custom backwards and the reject trap 100%, JPEG (quality 0.08) 95.8%,
# input-seeded noise (sigma 0.15) 96.2%.


def test_kwta_keeps_the_top_k_with_honest_gradients_and_jumps(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = traps.KWinnersTakeAll(twin, ratio=0.2)
    assert _agreement(trap, twin, x) >= 0.95
    a = torch.rand(4, 50, generator=torch.Generator().manual_seed(0))
    kept = trap._kwta(a)
    assert torch.equal((kept > 0).sum(1), torch.full((4,), 10))  # ceil(0.2 * 50) winners per sample
    assert torch.equal(kept.topk(10, 1).values, a.topk(10, 1).values)  # the 10 largest, unchanged
    # honest gradients: a directional finite difference of 1e-4 matches autograd on most samples
    x0 = x[:32].double()
    t64 = traps.KWinnersTakeAll(zoo.load("digits-cnn").double(), ratio=0.2)
    d = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xg = x0.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(t64(xg).logsumexp(1).sum(), xg)
    with torch.no_grad():
        h = 1e-4
        fd = (t64(x0 + h * d).logsumexp(1) - t64(x0 - h * d).logsumexp(1)) / (2 * h)
    ad = (g * d).flatten(1).sum(1)
    assert float(((fd - ad).abs() <= 1e-3 * (1 + ad.abs())).float().mean()) >= 0.8
    # discontinuous: along a segment of 0.1 in 200 steps the logits jump far more than the twin's do
    path = x0[:8, None].float() + torch.linspace(0, 0.1, 201)[None, :, None, None, None] * d[:8, None].sign().float()
    with torch.no_grad():
        jump = trap(path.flatten(0, 1)).view(8, 201, -1).diff(dim=1).abs().amax()
        smooth = twin(path.flatten(0, 1)).view(8, 201, -1).diff(dim=1).abs().amax()
    assert float(jump) > 5 * float(smooth)


def test_steep_staircase_has_vanishing_gradients_without_flagged_ops(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    from advlab.evaluation import bpda

    x, _ = digits
    trap = traps.SteepStaircase(twin, step=1.0, steepness=1000.0)
    assert _agreement(trap, twin, x) >= 0.99
    assert bpda.non_differentiable_ops(trap, x[:4]) == []  # smooth torch ops only
    a = torch.linspace(0, 5, 101)
    assert (
        float((trap._stairs(a) - torch.round(a)).abs()[(a - a.round()).abs() < 0.3].max()) < 1e-3
    )  # ~ round off the edges
    g, g0 = _input_grad(trap, x[:64]), _input_grad(twin, x[:64])
    ratio = g.flatten(1).norm(dim=1) / g0.flatten(1).norm(dim=1)
    assert float(ratio.median()) < 0.3 and float((ratio < 0.01).float().mean()) > 0.1  # vanishing on many digits


def test_grad_mode_decoy_differs_only_with_autograd_on(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = traps.GradModeDecoy(twin, lock=30.0)
    with torch.no_grad():
        assert torch.equal(trap(x), twin(x))  # the model a user calls: the twin
        locked = twin(torch.round(x)).argmax(1)
    decoy = trap(x)
    assert decoy.requires_grad and torch.equal(decoy.argmax(1), locked)  # the decoy's decision is locked
    xg = x[:16].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(trap(xg)[:, 3].sum(), xg)
    (g0,) = torch.autograd.grad(twin(xg)[:, 3].sum(), xg)
    assert torch.equal(g, g0)  # its gradient is the twin's


def test_random_resize_pad_draws_fresh_transforms_reproducibly(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = traps.RandomResizePad(twin, canvas=1.25, seed=3)
    with torch.no_grad():
        a, b = trap(x), trap(x)
        again = traps.RandomResizePad(twin, canvas=1.25, seed=3)(x)
        same = traps.RandomResizePad(twin, canvas=1.0)(x)
    assert not torch.equal(a, b) and torch.equal(a, again)
    assert torch.allclose(same, twin(x), atol=1e-4)  # canvas 1: the image itself
    assert 0.8 <= _agreement(trap, twin, x) < 0.97
    assert float(_input_grad(trap, x[:8]).abs().sum()) > 0  # differentiable (one draw's gradient)


@pytest.mark.parametrize("mode", traps.CustomBackward.MODES)
def test_custom_backward_keeps_the_forward_and_lies_backward(
    mode: str, twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = traps.CustomBackward(twin, mode=mode, noise=10.0, seed=0)
    with torch.no_grad():
        assert torch.equal(trap(x), twin(x))
    g, g0 = _input_grad(trap, x[:32]), _input_grad(twin, x[:32])
    if mode == "zero":
        assert float(g.abs().sum()) == 0
    elif mode == "negated":
        assert torch.equal(g, -g0)
    else:
        cos = nn.functional.cosine_similarity(g.flatten(1), g0.flatten(1))
        assert float(cos.abs().max()) < 0.5  # mostly noise
        assert not torch.equal(g, _input_grad(trap, x[:32]))  # fresh noise at every backward


def test_reject_off_grid_rejects_perturbed_digits_only(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = traps.RejectOffGrid(twin)
    assert trap.info.num_classes == 11 and twin.info.num_classes == 10
    noise = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 0.02
    on_grid = (x + torch.sign(noise) / 16).clamp(0, 1)
    with torch.no_grad():
        z = trap(x)
        assert z.shape == (len(x), 11) and torch.equal(z[:, :10], twin(x)) and bool((z.argmax(1) < 10).all())
        assert bool((trap((x + noise).clamp(0, 1)).argmax(1) == 10).all())  # off the grid: rejected
        assert bool((trap(on_grid).argmax(1) < 10).all())  # on the 1/16 grid: never rejected
    xg = x[:8].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(trap(xg)[:, 10].sum(), xg)
    (g0,) = torch.autograd.grad(twin(xg).amin(1).sum(), xg)
    assert torch.allclose(g, g0)  # not firing: the reject logit's gradient is the twin's (the gate has none)


def test_jpeg_purifier_has_no_gradient_and_keeps_decisions(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = traps.JpegPurified(twin, quality=0.08)
    assert _agreement(trap, twin, x) >= 0.94
    fine = traps.JpegPurified(twin, quality=1e-5)
    with torch.no_grad():
        assert float((fine.purify(x) - x).abs().max()) < 1e-3  # an orthonormal DCT: a fine grid is the identity
    g = _input_grad(trap, x[:16])
    assert float(g.abs().sum()) == 0  # round on the coefficients: zero gradient


def test_input_seeded_noise_is_deterministic_per_image_yet_fresh_per_pixel_change(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = traps.InputSeededNoise(twin, sigma=0.15, seed=0)
    with torch.no_grad():
        assert torch.equal(trap(x), trap(x))  # deterministic
        nudged = x.clone()
        nudged[:, 0, 3, 3] += torch.where(x[:, 0, 3, 3] < 0.5, 2.0, -2.0) / 65535
        moved = (trap.noise(nudged) - trap.noise(x)).flatten(1).abs().amax(1)
    assert bool((moved > 0.1).all())  # one pixel by 2/65535: fresh noise everywhere
    assert _agreement(trap, twin, x) >= 0.93
    xs = x[:16]
    noisy = (xs + 0.15 * trap.noise(xs)).clamp(0, 1)
    g, g0 = _input_grad(trap, xs), _input_grad(twin, noisy)
    assert torch.allclose(g * (noisy > 0) * (noisy < 1), g0 * (noisy > 0) * (noisy < 1), atol=1e-6)  # n(x) no grad
