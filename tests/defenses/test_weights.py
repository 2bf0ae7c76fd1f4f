"""Weight defenses (research note 003): E-prune, S-prune and R-noise edit exactly what their formulas
say, and do what the research note saw.

Digits numbers (digits-cnn, 599 test images, undefended 98.66%) measured when these tests were written: S = 0.5 gives
~9%, R = 1.0 ~16%.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.defenses import clamp_large, perturb, prune_small
from tests.defenses.helpers import accuracy, weights_by_name


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


def test_clamp_large_small_S_destroys_accuracy_large_S_keeps_it(
    digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor], base_accuracy: float
) -> None:
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


def test_perturb_large_R_destroys_accuracy_tiny_R_keeps_it(
    digits: nn.Module, digits_data: tuple[torch.Tensor, torch.Tensor], base_accuracy: float
) -> None:
    x, y = digits_data
    assert accuracy(perturb(digits, 1.0), x, y) < 0.5
    assert abs(accuracy(perturb(digits, 1e-4), x, y) - base_accuracy) <= 0.01
