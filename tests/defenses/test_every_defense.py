"""Every defense (research note 003) returns a new eval-mode model, leaves its input alone, pickles, can be attacked,
runs on a BatchNorm ResNet, composes with the others, is reachable by its CLI short name, and rejects bad settings."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest
import torch
from torch import nn

from advlab import zoo
from advlab.attacks import PGD
from advlab.defenses import (
    DEFENSES,
    DefenseInfo,
    clamp_activations,
    clamp_large,
    perturb,
    prunable_weights,
    prune_small,
    quantize,
)
from tests.defenses.helpers import all_defenses, no_hooks, same_state, snapshot


# ---------------------------------------------------------------------------------------------- every defense
def test_defenses_return_new_eval_models_and_leave_the_input_alone(
    digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
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


def test_defended_models_pickle_and_can_be_attacked(
    digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor]
) -> None:
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
    assert [n.removesuffix(".layer.weight") for n, _ in prunable_weights(both)] == [
        n.removesuffix(".weight") for n, _ in prunable_weights(pruned)
    ]


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
        (
            lambda m: clamp_activations(m, ["net.features.9"], calibration=torch.rand(2, 1, 8, 8)),
            "unknown layer 'net.features.9'",
        ),
        (lambda m: clamp_activations(m, bounds={"nope": (0.0, 1.0)}), "unknown layer 'nope'"),
        (lambda m: clamp_activations(m, bounds={"net.features.1": (1.0, 0.0)}), "lo <= hi"),
        (lambda m: clamp_activations(m), "needs calibration images.*'net.features.1'"),
        (
            lambda m: clamp_activations(m, calibration=torch.rand(2, 1, 8, 8), percentile=40),
            "percentile must be in \\[50, 100\\].*40",
        ),
        (
            lambda m: clamp_activations(m, calibration=torch.rand(2, 1, 8, 8) * 2),
            r"calibration images must be in \[0, 1\]",
        ),
        (
            lambda m: clamp_activations(
                nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), calibration=torch.rand(2, 1, 8, 8)
            ),
            "name the layers",
        ),
    ],
)
def test_bad_settings_raise(digits: nn.Module, call: Callable[[nn.Module], nn.Module], match: str) -> None:
    before = snapshot(digits)
    with pytest.raises(ValueError, match=match):
        call(digits)
    assert same_state(digits, before) and no_hooks(digits)
