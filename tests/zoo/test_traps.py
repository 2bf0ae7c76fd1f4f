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
