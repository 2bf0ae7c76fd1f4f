"""Defenses (seed 003): each returns a new model, edits exactly what its formula says, and does what the seed saw.

Digits numbers (digits-cnn, 599 test images, undefended 98.66%) measured when these tests were written: S = 0.5 gives
~9%, R = 1.0 ~16%, 8-bit quantization 98.66%, 2-bit ~59%.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from advlab import data, zoo
from advlab.attacks import PGD
from advlab.defenses import (
    DEFENSES,
    Clamped,
    DefenseInfo,
    QuantizedInput,
    clamp_activations,
    clamp_large,
    perturb,
    prunable_weights,
    prune_small,
    quantize,
)
from advlab.defenses.activations import _capture


@pytest.fixture(scope="module")
def digits() -> nn.Module:
    return zoo.load("digits-cnn")


@pytest.fixture(scope="module")
def digits_data() -> tuple[torch.Tensor, torch.Tensor]:
    return data.load("digits:test")


@pytest.fixture(scope="module")
def base_accuracy(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> float:
    return accuracy(digits, *digits_data)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(model: nn.Module, before: dict[str, torch.Tensor]) -> bool:
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def weights_by_name(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in prunable_weights(model)}


def all_defenses(calibration: torch.Tensor) -> list[tuple[str, Callable[[nn.Module], nn.Module]]]:
    return [
        ("E", lambda m: prune_small(m, 0.05)),
        ("ratio-global", lambda m: prune_small(m, ratio=0.5)),
        ("ratio-layer", lambda m: prune_small(m, ratio=0.5, scope="layer")),
        ("S", lambda m: clamp_large(m, 1.0)),
        ("R", lambda m: perturb(m, 0.1, seed=3)),
        ("quant", lambda m: quantize(m, 4)),
        ("quant-act", lambda m: quantize(m, 4, activations=True, calibration=calibration)),
        ("clamp", lambda m: clamp_activations(m, calibration=calibration, percentile=99.0)),
        ("clamp-bounds", lambda m: clamp_activations(m, bounds={n: (0.0, 0.5) for n, mod in m.named_modules() if isinstance(mod, nn.ReLU)})),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------------- every defense
def test_defenses_return_new_eval_models_and_leave_the_input_alone(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits_data
    before = snapshot(digits)
    with torch.no_grad():
        logits = digits(x[:50])
    for label, defend in all_defenses(x[:200]):
        defended = defend(digits)
        assert defended is not digits, label
        assert same_state(digits, before), f"{label} changed the input model"
        assert not defended.training, label
        assert defended.info == digits.info, label  # type: ignore[attr-defined]
        assert isinstance(defended.defense, DefenseInfo), label
        assert 0 <= defended.defense.changed_fraction <= 1, label
        json.dumps(defended.defense.details)  # run records store the details
        assert no_hooks(defended) and no_hooks(digits), label
        with torch.no_grad():
            out = defended(x[:50])
        assert out.shape == logits.shape and torch.isfinite(out).all(), label
        assert not torch.equal(out, logits), f"{label} did not change the model"
    with torch.no_grad():
        assert torch.equal(digits(x[:50]), logits)


def test_defended_models_pickle_and_can_be_attacked(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits_data
    for label, defend in all_defenses(x[:200]):
        defended = defend(digits)
        buf = io.BytesIO()
        torch.save(defended, buf)
        buf.seek(0)
        loaded = torch.load(buf, weights_only=False)
        with torch.no_grad():
            assert torch.equal(loaded(x[:20]), defended(x[:20])), label
        assert loaded.defense == defended.defense, label
    # white-box attacks work through the inserted modules (including the straight-through rounding)
    q = quantize(digits, 4, activations=True, calibration=x[:200])
    res = PGD(eps=0.3, steps=10)(q, x[:60], y[:60])
    assert res.success_rate > 0.5


# ---------------------------------------------------------------------------------------------- E-prune
def test_prune_small_zeroes_exactly_the_small_weights(digits: nn.Module) -> None:
    original = weights_by_name(digits)
    others = {n: p.detach().clone() for n, p in digits.named_parameters() if n not in original}
    fractions = []
    for E in (0.0, 1e-3, 1e-2, 3e-2, 5e-2, 1e-1):
        defended = prune_small(digits, E)
        new = weights_by_name(defended)
        small = 0
        for name, w in original.items():
            mask = w.abs() < E
            assert (new[name][mask] == 0).all()
            assert torch.equal(new[name][~mask], w[~mask])
            small += int(mask.sum())
        for n, p in defended.named_parameters():
            if n in others:
                assert torch.equal(p, others[n]), f"{n} is not a prunable weight but changed"
        info = defended.defense
        assert info.name == "prune_small" and info.setting == E
        assert info.changed_fraction == pytest.approx(small / sum(w.numel() for w in original.values()))
        fractions.append(info.changed_fraction)
    assert fractions[0] == 0.0
    assert all(a < b for a, b in zip(fractions, fractions[1:], strict=False)), fractions
    assert fractions[-1] > 0.9  # E = 0.1 is above almost every |w| of this network


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.75, 1.0])
def test_prune_small_ratio_global_and_per_layer(digits: nn.Module, ratio: float) -> None:
    original = weights_by_name(digits)
    n_all = sum(w.numel() for w in original.values())
    g = weights_by_name(prune_small(digits, ratio=ratio))
    zeroed = {n: (g[n] == 0) & (original[n] != 0) for n in original}
    assert sum(int(z.sum()) for z in zeroed.values()) == round(ratio * n_all)
    if 0 < ratio < 1:  # one threshold: every zeroed weight is at most as large as every kept one
        cut = max(float(original[n][z].abs().max()) for n, z in zeroed.items() if z.any())
        kept = min(float(original[n][~z].abs().min()) for n, z in zeroed.items() if (~z).any())
        assert cut <= kept
    layer = prune_small(digits, ratio=ratio, scope="layer")
    assert layer.defense.changed_fraction == pytest.approx(ratio, abs=1e-3)
    for n, w in weights_by_name(layer).items():
        assert int(((w == 0) & (original[n] != 0)).sum()) == round(ratio * w.numel()), n


# ---------------------------------------------------------------------------------------------- S-prune
def test_clamp_large_bounds_each_layer(digits: nn.Module) -> None:
    original = weights_by_name(digits)
    S = 2.0
    defended = clamp_large(digits, S)
    clamped = 0
    for name, w in weights_by_name(defended).items():
        sigma, mu = torch.std_mean(original[name], correction=0)
        lo, hi = float(mu - S * sigma), float(mu + S * sigma)
        assert float(w.min()) >= lo - 1e-6 and float(w.max()) <= hi + 1e-6, name
        inside = (original[name] >= lo) & (original[name] <= hi)
        assert torch.equal(w[inside], original[name][inside]), name
        clamped += int((~inside).sum())
    assert 0 < defended.defense.changed_fraction == pytest.approx(clamped / sum(w.numel() for w in original.values()))


def test_clamp_large_small_S_destroys_accuracy_large_S_keeps_it(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor],
                                                               base_accuracy: float) -> None:  # fmt: skip
    x, y = digits_data
    assert base_accuracy > 0.97
    assert accuracy(clamp_large(digits, 0.5), x, y) < 0.5
    loose = clamp_large(digits, 20.0)
    assert loose.defense.changed_fraction == 0.0
    with torch.no_grad():
        assert torch.equal(loose(x), digits(x))


# ---------------------------------------------------------------------------------------------- R-noise
def test_perturb_is_seeded_and_bounded(digits: nn.Module) -> None:
    original = weights_by_name(digits)
    a, b, c = (weights_by_name(perturb(digits, 0.01, seed=s)) for s in (7, 7, 8))
    for name, w in original.items():
        assert torch.equal(a[name], b[name]), name
        assert not torch.equal(a[name], c[name]), name
        d = a[name] - w
        assert float(d.abs().max()) <= 0.01 + 1e-6 and (d != 0).float().mean() > 0.99, name
    assert perturb(digits, 0.01).defense.changed_fraction == 1.0


def test_perturb_large_R_destroys_accuracy_tiny_R_keeps_it(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor],
                                                          base_accuracy: float) -> None:  # fmt: skip
    x, y = digits_data
    assert accuracy(perturb(digits, 1.0), x, y) < 0.5
    assert abs(accuracy(perturb(digits, 1e-4), x, y) - base_accuracy) <= 0.01


# ---------------------------------------------------------------------------------------------- quantization
def grid(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Reference per-output-channel symmetric rounding (axis 0), written independently of the package."""
    qmax = 2 ** (bits - 1) - 1
    s = w.abs().flatten(1).max(1).values.clamp(min=1e-12) / qmax
    s = s.view(-1, *[1] * (w.ndim - 1))
    return torch.round(w / s) * s


def test_quantize_weights(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor], base_accuracy: float) -> None:
    x, y = digits_data
    original = weights_by_name(digits)
    q8 = quantize(digits, 8)
    for name, w in weights_by_name(q8).items():
        for channel in w.flatten(1):
            assert channel.unique().numel() <= 2**8 - 1, name
        assert torch.allclose(w, grid(original[name], 8), rtol=0, atol=1e-6), name
        assert float((w - original[name]).abs().max()) <= float(original[name].abs().max()) / 127 / 2 + 1e-6, name
    assert q8.defense.name == "quantize" and q8.defense.setting == 8 and q8.defense.changed_fraction > 0.9
    assert abs(accuracy(q8, x, y) - base_accuracy) <= 0.01
    assert accuracy(quantize(digits, 2), x, y) < base_accuracy - 0.2
    for name, w in weights_by_name(quantize(digits, 2)).items():  # 2 bits: -s, 0, s per channel
        assert all(c.unique().numel() <= 3 for c in w.flatten(1)), name


def test_quantized_activations_forward_is_the_fake_quantized_network(digits: nn.Module,
                                                                      digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:  # fmt: skip
    x, y = digits_data
    bits = 4
    q = quantize(digits, bits, activations=True, calibration=x[:300])
    inputs = q.defense.details["inputs"]
    assert set(inputs) == {n.removesuffix(".weight") for n, _ in prunable_weights(digits)}
    assert sum(isinstance(m, QuantizedInput) for m in q.modules()) == len(inputs)
    assert inputs["net.features.0"]["signed"] is False  # images and ReLU outputs are >= 0

    def act(name: str, t: torch.Tensor) -> torch.Tensor:
        s, signed = inputs[name]["scale"], inputs[name]["signed"]
        lo, hi = (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        return torch.clamp(torch.round(t / s), lo, hi) * s

    f, c = digits.net.features, digits.net.classifier
    with torch.no_grad():
        h = F.relu(F.conv2d(act("net.features.0", x), grid(f[0].weight, bits), f[0].bias, padding=1))
        h = F.max_pool2d(F.relu(F.conv2d(act("net.features.2", h), grid(f[2].weight, bits), f[2].bias, padding=1)), 2)
        h = F.max_pool2d(F.relu(F.conv2d(act("net.features.5", h), grid(f[5].weight, bits), f[5].bias, padding=1)), 2)
        h = F.relu(F.linear(act("net.classifier.1", h.flatten(1)), grid(c[1].weight, bits), c[1].bias))
        expected = F.linear(act("net.classifier.3", h), grid(c[3].weight, bits), c[3].bias)
        got = q(x)
        weights_only = quantize(digits, bits)(x)
    assert torch.allclose(got, expected, atol=1e-4)
    assert not torch.allclose(got, weights_only, atol=1e-3)  # the inputs really were rounded


def test_quantized_activations_have_useful_gradients(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits_data
    q = quantize(digits, 4, activations=True, calibration=x[:300])
    xs, ys = x[:100].clone().requires_grad_(True), y[:100]
    loss = F.cross_entropy(q(xs), ys)
    (g,) = torch.autograd.grad(loss, xs)
    assert torch.isfinite(g).all() and (g.flatten(1).abs().sum(1) > 0).float().mean() > 0.9
    with torch.no_grad():  # a signed-gradient step raises the loss: the straight-through gradient points uphill
        stepped = F.cross_entropy(q((xs + 0.05 * g.sign()).clamp(0, 1)), ys)
    assert float(stepped) > float(loss.detach()) + 0.1


# ---------------------------------------------------------------------------------------------- feature-map clamp
def test_clamp_activations_calibrated(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits_data
    cal = x[:300]
    defended = clamp_activations(digits, calibration=cal, percentile=99.0)
    relus = [n for n, m in digits.named_modules() if isinstance(m, nn.ReLU)]
    bounds = defended.defense.details["bounds"]
    assert list(bounds) == relus and defended.defense.setting == 99.0
    wrappers = {n: m for n, m in defended.named_modules() if isinstance(m, Clamped)}
    assert set(wrappers) == set(relus)
    with _capture(wrappers) as outs, _capture({n: w.inner for n, w in wrappers.items()}) as raw:
        with torch.no_grad():
            defended(x)
    assert no_hooks(defended)
    active = 0
    for n in relus:
        lo, hi = bounds[n]
        assert lo == 0.0 and hi > 0  # ReLU outputs: the 1st percentile is 0
        assert float(outs[n][0].max()) <= hi and float(outs[n][0].min()) >= lo, n
        active += int((raw[n][0] > hi).sum())
    assert active > 0  # the clamp really bit on these images
    # about 1% of the values lie above the 99th percentile (pooled over layers, measured through the clamped model)
    assert 0.002 < defended.defense.changed_fraction < 0.02
    assert defended.defense.details["changed"].keys() == set(relus)


def test_clamp_activations_percentile_100_changes_nothing(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits_data
    defended = clamp_activations(digits, calibration=x, percentile=100.0)
    assert defended.defense.changed_fraction == 0.0
    with torch.no_grad():
        a, b = defended(x), digits(x)
    assert torch.allclose(a, b, atol=1e-5) and torch.equal(a.argmax(1), b.argmax(1))


def test_clamp_activations_given_bounds_and_layers(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits_data
    defended = clamp_activations(digits, bounds={"net.features.1": (0.0, 0.25)})
    assert defended.defense.setting == "bounds" and defended.defense.changed_fraction == 0.0
    assert defended.defense.details["bounds"] == {"net.features.1": [0.0, 0.25]}
    layer = defended.get_submodule("net.features.1")
    assert isinstance(layer, Clamped) and sum(isinstance(m, Clamped) for m in defended.modules()) == 1
    with _capture({"relu": layer}) as outs, torch.no_grad():
        defended(x[:50])
    assert float(outs["relu"][0].max()) == 0.25
    # a named layer (here a conv, whose output can be negative) calibrated, another from given bounds
    mixed = clamp_activations(digits, ["net.features.0", "net.classifier.2"], {"net.classifier.2": (0.0, 3.0)}, calibration=x[:200], percentile=95)
    lo, hi = mixed.defense.details["bounds"]["net.features.0"]
    assert lo < 0 < hi and mixed.defense.details["bounds"]["net.classifier.2"] == [0.0, 3.0]
    assert mixed.defense.changed_fraction > 0
    assert isinstance(mixed.get_submodule("net.features.0").inner, nn.Conv2d)


def test_capture_removes_its_hooks_on_error(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits_data
    with pytest.raises(RuntimeError, match="boom"), _capture({"relu": digits.net.features[1]}) as outs:
        digits(x[:5])
        assert len(outs["relu"]) == 1
        raise RuntimeError("boom")
    assert no_hooks(digits)


# ---------------------------------------------------------------------------------------------- ResNet with BatchNorm
def test_every_defense_runs_on_cifar_resnet18() -> None:
    model = zoo.load("cifar-resnet18", pretrained=False).train()  # train mode: calibration must not touch BN stats
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    before = snapshot(model)
    for label, defend in all_defenses(x):
        defended = defend(model)
        with torch.no_grad():
            out = defended(x)
        assert out.shape == (4, 10) and torch.isfinite(out).all(), label
        assert not defended.training and model.training, label
        assert same_state(model, before), f"{label} changed the input model (BatchNorm statistics?)"
        assert no_hooks(defended) and no_hooks(model), label
    bn = {n for n, _ in model.named_parameters() if ".bn" in n or n.startswith("net.bn")}
    assert bn and not bn & {n for n, _ in prunable_weights(model)}


def test_defenses_compose(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits_data
    pruned = prune_small(digits, ratio=0.3)
    both = quantize(pruned, 8, activations=True, calibration=x[:100])
    assert both.defense.details["previous"]["name"] == "prune_small"
    zeros = sum(int((w == 0).sum()) for _, w in prunable_weights(pruned))
    assert sum(int((w == 0).sum()) for _, w in prunable_weights(both)) >= zeros  # zero stays on the grid
    assert [n.removesuffix(".layer.weight") for n, _ in prunable_weights(both)] == [n.removesuffix(".weight") for n, _ in prunable_weights(pruned)]


def test_cli_short_names(digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, _ = digits_data
    assert set(DEFENSES) == {"e", "s", "r", "quant", "clamp"}
    assert DEFENSES["e"](digits, 0.01).defense.name == "prune_small"
    assert DEFENSES["s"](digits, 3.0).defense.name == "clamp_large"
    assert DEFENSES["r"](digits, 0.01, seed=1).defense.details["seed"] == 1
    q = DEFENSES["quant"](digits, 8.0)  # sweeps pass floats
    assert q.defense.setting == 8 and q.defense.details["activations"] is False
    assert DEFENSES["quant"](digits, 8.0, calibration=x[:100]).defense.details["activations"] is True
    assert DEFENSES["clamp"](digits, 99.0, calibration=x[:100]).defense.setting == 99.0


# ---------------------------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: prune_small(m, -0.1), r"E must be >= 0.*-0\.1"),
        (lambda m: prune_small(m), "exactly one of E and ratio"),
        (lambda m: prune_small(m, 0.1, ratio=0.5), "exactly one of E and ratio"),
        (lambda m: prune_small(m, ratio=1.5), r"ratio must be in \[0, 1\].*1\.5"),
        (lambda m: prune_small(m, ratio=-0.1), r"ratio must be in \[0, 1\]"),
        (lambda m: prune_small(m, ratio=0.5, scope="net"), "scope must be one of global, layer.*'net'"),
        (lambda m: prune_small(m, float("nan")), "E must be a finite number"),
        (lambda m: clamp_large(m, 0.0), r"S must be > 0.*0\.0"),
        (lambda m: clamp_large(m, -2), "S must be > 0.*-2"),
        (lambda m: perturb(m, -1e-3), "R must be >= 0.*-0.001"),
        (lambda m: quantize(m, 1), "bits must be an integer from 2 to 16, got 1"),
        (lambda m: quantize(m, 17), "bits must be an integer from 2 to 16, got 17"),
        (lambda m: quantize(m, 4.5), "bits must be an integer from 2 to 16, got 4.5"),
        (lambda m: quantize(m, 8, activations=True), "needs calibration images"),
        (lambda m: clamp_activations(m, ["net.features.9"], calibration=torch.rand(2, 1, 8, 8)), "unknown layer 'net.features.9'"),
        (lambda m: clamp_activations(m, bounds={"nope": (0.0, 1.0)}), "unknown layer 'nope'"),
        (lambda m: clamp_activations(m, bounds={"net.features.1": (1.0, 0.0)}), "lo <= hi"),
        (lambda m: clamp_activations(m), "needs calibration images.*'net.features.1'"),
        (lambda m: clamp_activations(m, calibration=torch.rand(2, 1, 8, 8), percentile=40), "percentile must be in \\[50, 100\\].*40"),
        (lambda m: clamp_activations(m, calibration=torch.rand(2, 1, 8, 8) * 2), r"calibration images must be in \[0, 1\]"),
        (lambda m: clamp_activations(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), calibration=torch.rand(2, 1, 8, 8)), "name the layers"),
    ],
)  # fmt: skip
def test_bad_settings_raise(digits: nn.Module, call: Callable[[nn.Module], nn.Module], match: str) -> None:
    before = snapshot(digits)
    with pytest.raises(ValueError, match=match):
        call(digits)
    assert same_state(digits, before) and no_hooks(digits)
