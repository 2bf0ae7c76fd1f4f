"""advlab.experiments.layers (and advlab.hooks): hooks always come off, the measures match hand-computed values, and
where PGD acts.

The real-model tests pin what was measured (PGD on digits-cnn and efficientnet-lite0): the attack's
relative change grows from the input to the logits, and on EfficientNet it peaks at the head activation
just before pooling (the "penultimate layer" of research note 003), where the activations' spread also grows.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab import data, zoo
from advlab.attacks import PGD
from advlab.experiments.layers import (
    LayerChange,
    change_summary,
    changes_table,
    features,
    layer_changes,
    peak,
)


def _leaf_names(model: nn.Module) -> list[str]:
    """The default layers: leaves, and modules with weights of their own (a conv with a padding child)."""
    return [
        n
        for n, m in model.named_modules()
        if next(m.children(), None) is None or next(m.parameters(recurse=False), None) is not None
    ]


def _no_hooks(model: nn.Module) -> bool:
    return all(len(m._forward_hooks) == 0 for m in model.modules())


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """digits-cnn, 64 test digits and their PGD-10 (L-inf, eps 0.1) adversarials."""
    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test", limit=64)
    return model, x, PGD(eps=0.1, steps=10)(model, x, y).x_adv


# ------------------------------------------------------------------------------------------------ hooks
def test_features_captures_in_forward_order_and_removes_hooks(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, _ = digits
    with features(model) as acts:
        assert not _no_hooks(model)
        logits = model(x[:4])
    assert _no_hooks(model)
    assert list(acts) == _leaf_names(model)  # leaves of a Sequential model: forward order = definition order
    assert torch.equal(acts["net.classifier.3"], logits)
    assert acts["net.features.0"].shape == (4, 32, 8, 8) and not acts["net.features.0"].requires_grad


def test_hooks_are_removed_when_the_body_or_the_model_raises(
    digits: tuple[nn.Module, torch.Tensor, torch.Tensor],
) -> None:
    model, x, x_adv = digits
    with pytest.raises(RuntimeError, match="boom"):
        with features(model, ["net.features", "net.classifier.1"]):
            model(x[:2])
            raise RuntimeError("boom")
    assert _no_hooks(model)
    with pytest.raises(RuntimeError):  # 3 channels into a 1-channel conv: the forward fails inside the hooks
        layer_changes(model, x[:2].expand(-1, 3, -1, -1), x_adv[:2].expand(-1, 3, -1, -1))
    assert _no_hooks(model)
    layer_changes(model, x[:2], x_adv[:2])
    assert _no_hooks(model)


def test_unknown_layer_names_and_bad_arguments_raise(digits: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, x_adv = digits
    with pytest.raises(ValueError, match="'nope'.*'net.features.99'"):
        with features(model, ["net.features.0", "nope", "net.features.99"]):
            pass
    with pytest.raises(ValueError, match="'conv9'"):
        layer_changes(model, x[:2], x_adv[:2], ["conv9"])
    with pytest.raises(ValueError, match="shape"):
        layer_changes(model, x[:2], x_adv[:3])
    with pytest.raises(ValueError, match="top_fraction"):
        layer_changes(model, x[:2], x_adv[:2], top_fraction=0.0)
    with pytest.raises(ValueError, match="metric"):
        peak(layer_changes(model, x[:2], x_adv[:2]), metric="rel_l3")
    model.train()
    try:
        with pytest.raises(ValueError, match="training mode"):
            layer_changes(model, x[:2], x_adv[:2])
    finally:
        model.eval()
    assert _no_hooks(model)


class _SharedActivation(nn.Module):
    """One ReLU called twice (like EfficientNet's ``_swish``), and a module with a tuple output."""

    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return 2 * x, x

    def __init__(self) -> None:
        super().__init__()
        self.act, self.lin1, self.pair, self.lin2 = nn.ReLU(), nn.Linear(4, 8), self.Pair(), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.lin1(self.act(x)))
        return self.lin2(self.pair(h)[0])


def test_a_module_called_twice_keeps_its_last_call_and_tuples_give_their_first_tensor() -> None:
    torch.manual_seed(0)
    model = _SharedActivation().eval()
    x = torch.randn(3, 4)
    with features(model) as acts:
        model(x)
    assert list(acts) == ["lin1", "act", "pair", "lin2"]  # "act" sits at its second (last) call
    assert acts["act"].shape == (3, 8)
    assert torch.equal(acts["pair"], 2 * acts["act"])
    changes = layer_changes(model, x, x + 0.1)
    assert [(c.name, c.depth, c.units) for c in changes] == [
        ("input", 0, 4),
        ("lin1", 1, 8),
        ("act", 2, 8),
        ("pair", 3, 8),
        ("lin2", 4, 3),
    ]


# ------------------------------------------------------------------------------------------------ the measures
def test_peak_and_relative_changes_match_a_hand_built_network() -> None:
    """Layer "1" multiplies the direction u by g and leaves its orthogonal complement alone; layer "2" undoes it.

    Clean inputs are orthogonal to u and the perturbation is eps_i * u, so (a_l = x for every layer):
    rel_l2 = eps_i / ||x_i|| at the input, "0" and "2", and g times that at "1"; likewise for L-inf with
    max|u| / max|x_i|; at "1" the change is g * eps_i * u, so top_share with one unit is max_j u_j^2.
    """
    g, n = 10.0, 5
    gen = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=gen, dtype=torch.float64))
    u = q[:, 0]
    eye, uu = torch.eye(16, dtype=torch.float64), torch.outer(u, u)
    weights = [eye, eye + (g - 1) * uu, eye + (1 / g - 1) * uu]
    model = nn.Sequential(*[nn.Linear(16, 16, bias=False) for _ in weights]).double().eval()
    with torch.no_grad():
        for lin, w in zip(model, weights, strict=True):
            lin.weight.copy_(w)
    x = torch.randn(n, 15, generator=gen, dtype=torch.float64) @ q[:, 1:].T
    eps = torch.rand(n, generator=gen, dtype=torch.float64) * 0.2 + 0.05
    x_adv = x + eps[:, None] * u

    changes = layer_changes(model, x, x_adv, top_fraction=1 / 16, batch_size=2)
    assert [c.name for c in changes] == ["input", "0", "1", "2"]
    base_l2 = float((eps / x.norm(dim=1)).mean())
    base_linf = float((eps * u.abs().max() / x.abs().amax(1)).mean())
    gains = {"input": 1.0, "0": 1.0, "1": g, "2": 1.0}
    for c in changes:
        assert c.rel_l2 == pytest.approx(gains[c.name] * base_l2, rel=1e-9)
        assert c.rel_linf == pytest.approx(gains[c.name] * base_linf, rel=1e-9)
        assert c.top_share == pytest.approx(float(u.square().max()), rel=1e-9)  # every layer changes along u
        assert c.clean_mean == pytest.approx(float(x.mean()), abs=1e-12)
        assert c.clean_std == pytest.approx(float(x.std(correction=0)), rel=1e-9)
    with torch.no_grad():
        assert changes[2].adv_std == pytest.approx(float(model[1](x_adv).std(correction=0)), rel=1e-9)
    assert peak(changes).name == "1" and peak(changes, "rel_linf").name == "1"
    assert peak(changes, exclude_input=False).name == "1"
    summary = change_summary(changes)
    assert summary["layers"] == 4
    assert summary["peak_rel_l2"] == {"layer": "1", "depth": 2, "value": changes[2].rel_l2}
    assert summary["peak_rel_linf"] == {"layer": "1", "depth": 2, "value": changes[2].rel_linf}
    assert summary["input_rel_l2"] == changes[0].rel_l2 and summary["output_rel_l2"] == changes[-1].rel_l2
    rows = changes_table(changes)
    assert (
        rows[2]["name"] == "1"
        and rows[2]["rel_l2"] == changes[2].rel_l2
        and set(rows[0]) == set(LayerChange.__dataclass_fields__)
    )


def test_top_share_is_one_for_a_single_unit_and_top_fraction_for_a_uniform_change() -> None:
    model = nn.Sequential(nn.Identity()).eval()
    x = torch.ones(3, 100)
    one = x.clone()
    one[:, 37] += 0.5
    uniform = x + 0.01
    for c in layer_changes(model, x, one, top_fraction=0.01):
        assert c.top_share == pytest.approx(1.0)
        assert c.rel_linf == pytest.approx(0.5)
    for c in layer_changes(model, x, uniform, top_fraction=0.01):
        assert c.top_share == pytest.approx(0.01, rel=1e-4)
        assert c.rel_l2 == pytest.approx(0.01, rel=1e-4)
    assert layer_changes(model, x, x)[1].top_share == 0.0  # no change at all: nothing is concentrated


# ------------------------------------------------------------------------------------------------ real models
def test_pgd_on_digits_amplifies_from_input_to_logits(digits: tuple[nn.Module, torch.Tensor, torch.Tensor]) -> None:
    model, x, x_adv = digits
    changes = layer_changes(model, x, x_adv, batch_size=24)
    assert [c.name for c in changes] == ["input", *_leaf_names(model)]
    assert [c.depth for c in changes] == list(range(len(changes)))
    for c in changes:
        for v in (c.rel_l2, c.rel_linf, c.top_share, c.clean_std, c.adv_std):
            assert v > 0 and math.isfinite(v), c
    inp, logits = changes[0], changes[-1]
    assert inp.clean_mean == pytest.approx(float(x.mean()), rel=1e-5)
    # measured: input 0.171, conv/ReLU layers 0.16-0.32, logits 0.501; the logits move most
    assert logits.rel_l2 > 2 * inp.rel_l2
    assert peak(changes).name == "net.classifier.3"
    # L-inf PGD moves many pixels a little: the top 1% of pixels (1 of 64) carry little of the change
    assert inp.top_share < 3 / 64
    # the batched, concatenated measurement equals a plain forward of each input
    with torch.no_grad(), features(model, ["net.classifier.3"]) as acts:
        model(x)
        z = acts["net.classifier.3"]
        model(x_adv)
        za = acts["net.classifier.3"]
    assert logits.rel_l2 == pytest.approx(float(((za - z).norm(dim=1) / z.norm(dim=1)).mean()), rel=1e-5)


def test_pgd_on_efficientnet_peaks_at_the_head_activation() -> None:
    model = zoo.load("efficientnet-lite0")
    x, y = data.load("samples", size=224)
    x, y = x[:2], y[:2]
    x_adv = PGD(eps=2 / 255, steps=3)(model, x, y).x_adv
    changes = layer_changes(model, x, x_adv)
    assert len(changes) == len(_leaf_names(model)) + 1
    assert all(math.isfinite(c.rel_l2) and c.rel_l2 > 0 for c in changes)
    by_name = {c.name: c for c in changes}
    inp, logits, head = by_name["input"], by_name["net._fc"], by_name["net._swish"]
    # measured: input 0.013, pooled features 0.93, logits 0.93; peak 1.09 at net._swish, whose last call is the
    # head's ReLU6 after _conv_head/_bn1 (depth 116 of 119)
    assert logits.rel_l2 > 20 * inp.rel_l2
    assert peak(changes).name == "net._swish" and head.depth == len(changes) - 4
    assert head.adv_std > 1.1 * head.clean_std  # the head's activations spread out under attack
    assert inp.top_share < 0.03  # the input change is spread over many pixels (uniform would be 0.01)
    assert _no_hooks(model)


def test_features_is_the_core_hook() -> None:
    import advlab.hooks
    from advlab.experiments import layers

    assert layers.features is advlab.hooks.features and layers.first_tensor is advlab.hooks.first_tensor
