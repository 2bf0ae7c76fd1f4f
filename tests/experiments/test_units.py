"""advlab.experiments.units: Szegedy et al. 2013's units vs random directions, checked against a hand forward pass.

Measured on digits-cnn's penultimate layer (the 128 ReLU inputs of the last Linear, digits:test, k = 8):
40 of the 128 units are dead (zero on every test digit); the 88 live units have mean label purity 0.80,
64 random directions 0.82-0.84 (seeds 0-5), k random images 0.30. So random directions are at least as
coherent as units, as the paper found, and both are far above chance.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import data, zoo
from advlab.experiments.units import (
    activations,
    chance_purity,
    default_layer,
    label_purity,
    majority_label,
    most_varying_units,
    probe_activations,
    probes_table,
    purities,
    purity_summary,
    random_directions,
    unit_top_images,
    units_vs_directions,
)

PENULTIMATE = "net.classifier.3:input"


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    return model, x, y


def _penultimate_by_hand(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """phi(x) = ReLU(fc1(flatten(features(x)))): the classifier's layers run one by one, without hooks."""
    net = model.net  # type: ignore[attr-defined]
    with torch.no_grad():
        h = net.features(x)
        return net.classifier[2](net.classifier[1](net.classifier[0](h)))


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_default_layer_is_the_input_of_the_last_linear(digits: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, _ = digits
    assert default_layer(model) == PENULTIMATE
    spec, phi = activations(model, x[:50])
    assert spec == PENULTIMATE and phi.shape == (50, 128)
    assert torch.allclose(phi, _penultimate_by_hand(model, x[:50]), atol=1e-5)
    assert _no_hooks(model)
    with pytest.raises(ValueError, match="no nn.Linear"):
        default_layer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()))


def test_unit_top_images_are_the_largest_activations(digits: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, _ = digits
    phi = _penultimate_by_hand(model, x)
    units = most_varying_units(phi, 5)
    a = unit_top_images(model, x, units=[*units, 0], directions=0, k=10)
    assert a.layer == PENULTIMATE and a.dim == 128 and [p.index for p in a.units] == [*units, 0] and a.random == []
    for p in a.units:
        col = phi[:, p.index]
        assert torch.allclose(p.values, col[p.images], atol=1e-5)  # the values are these images' activations
        assert (p.values[:-1] >= p.values[1:]).all()  # decreasing
        rest = torch.ones(len(x), dtype=torch.bool)
        rest[p.images] = False
        assert float(col[rest].max()) <= float(p.values[-1]) + 1e-5  # nothing outside the top-k is larger
    # the most varying units really vary most, and a dead unit is flagged
    var = phi.var(0, correction=0)
    assert torch.allclose(var[units], var.sort(descending=True).values[:5])
    dead = int((phi.amax(0) == 0).nonzero()[0])
    assert unit_top_images(model, x, units=[dead], directions=0, k=3).units[0].constant


def test_random_directions_are_unit_norm_seeded_and_rank_by_projection(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, _ = digits
    v = random_directions(128, 16, seed=3)
    assert v.shape == (16, 128) and torch.allclose(v.norm(dim=1), torch.ones(16), atol=1e-6)
    assert torch.equal(v, random_directions(128, 16, seed=3)) and not torch.allclose(
        v, random_directions(128, 16, seed=4)
    )
    assert abs(float(v.mean())) < 0.02  # centred: N(0, I) normalized, not e.g. uniform on [0, 1)
    a = unit_top_images(model, x, units=[], directions=16, k=8, seed=3)
    assert torch.equal(a.directions, v) and [p.index for p in a.random] == list(range(16))
    proj = _penultimate_by_hand(model, x) @ v.T
    for p in a.random:
        assert set(p.images.tolist()) == set(proj[:, p.index].topk(8).indices.tolist())
        assert torch.allclose(p.values, proj[p.images, p.index], atol=1e-4)


def test_label_purity_by_hand() -> None:
    labels = torch.tensor([0, 1, 1, 2, 1, 0])
    assert label_purity(torch.tensor([[1, 2, 4, 0], [0, 5, 3, 2], [0, 1, 2, 3]]), labels).tolist() == [0.75, 0.5, 0.5]
    assert label_purity(torch.tensor([3]), labels).tolist() == [1.0]
    assert majority_label(torch.tensor([0, 1, 5, 2]), labels) == 0  # 0 and 1 tie twice each: the smaller wins
    balanced = torch.arange(1000) % 10
    assert chance_purity(balanced, 8) == pytest.approx(0.29, abs=0.02)  # far above 1 / 10
    assert chance_purity(balanced, 1) == 1.0


def test_szegedy_random_directions_are_as_coherent_as_units(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    _, phi = activations(model, x)
    every = probe_activations(phi, range(128), directions=64, k=8, seed=0)
    p = purities(every, y)
    assert all(0.125 <= q <= 1 for q in p["units"] + p["directions"])
    s = purity_summary(every, y)
    chance = chance_purity(y, 8)
    assert 0.25 < chance < 0.35
    assert 30 <= len(s["constant_units"]) <= 50  # many dead ReLUs
    # both well above chance (measured 0.80 and 0.83), and directions no less coherent than units
    assert s["unit_purity_mean"] > chance + 0.35 and s["direction_purity_mean"] > chance + 0.35
    assert s["direction_minus_unit"] > -0.05
    rows = probes_table(every, y)
    assert len(rows) == (128 + 64) * 8 and {r["kind"] for r in rows} == {"unit", "direction"}
    assert all(r["label"] == int(y[r["image"]]) for r in rows[:50])


def test_pooled_conv_units_are_channel_means(digits: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, _ = digits
    spec, phi = activations(model, x[:20], "net.features.5", pool=True)
    with torch.no_grad():
        fmap = model.net.features[:6](x[:20])  # type: ignore[attr-defined]
    assert spec == "net.features.5" and phi.shape == (20, 128)
    assert torch.allclose(phi, fmap.mean((2, 3)), atol=1e-5)
    assert activations(model, x[:20], "net.features.5")[1].shape == (20, 128 * 4 * 4)


def test_bad_arguments_raise_clearly(digits: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, _ = digits
    with pytest.raises(ValueError, match="unknown layer name.*'nope'"):
        unit_top_images(model, x[:20], "nope")
    with pytest.raises(ValueError, match="unknown layer name 'nope'"):
        unit_top_images(model, x[:20], "nope:input")
    with pytest.raises(ValueError, match="unit index 128 out of range.*128 units"):
        unit_top_images(model, x[:20], units=[1, 128])
    with pytest.raises(ValueError, match="k must be in 1..20"):
        unit_top_images(model, x[:20], k=21)
    with pytest.raises(ValueError, match="can pick 1 to 128 units"):
        most_varying_units(torch.zeros(5, 128), 0)
    assert _no_hooks(model)


def test_units_vs_directions_measures_purity_against_the_labels_or_the_predictions(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, y = digits
    x, y = x[:200], y[:200]
    found = units_vs_directions(model, x, y, units=[0, 1, 2], directions=4, k=8, seed=1)
    m = found.to_dict()
    assert found.labelled and torch.equal(found.labels, y) and m["labels"] == "true"
    assert m["layer"] == PENULTIMATE and m["units_in_layer"] == 128 and (m["k"], m["seed"]) == (8, 1)
    for p in found.analysis.probes:  # each probe's purity is that of its own top-8 images
        purity = m["unit_purity" if p.kind == "unit" else "direction_purity"][str(p.index)]
        assert purity == float(label_purity(p.images, y)[0])
    assert m["chance_purity"] == chance_purity(y, 8, seed=1)
    _, phi = activations(model, x)
    every = purity_summary(probe_activations(phi, range(128), directions=0, k=8), y)
    assert m["all_units_purity_mean"] == every["unit_purity_mean"]
    assert m["constant_units_in_layer"] == len(every["constant_units"]) > 0  # digits-cnn has dead ReLU units
    # without labels the model's own predictions stand in for them
    unlabelled = units_vs_directions(model, x, torch.full_like(y, -1), units=[0, 1, 2], directions=4, k=8, seed=1)
    with torch.no_grad():
        predicted = model(x).argmax(1)
    assert not unlabelled.labelled and torch.equal(unlabelled.labels, predicted)
    assert unlabelled.to_dict()["labels"] == "predicted"
