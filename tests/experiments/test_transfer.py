"""advlab.experiments.transfer: Szegedy et al.'s transfer findings reproduced on embedded data, and the matrix's
definitions.

Two DigitsCNNs trained on disjoint halves of digits:train (even / odd indices, different seeds) stand in for
Szegedy's "models trained on disjoint training sets"; the shipped digits-cnn (trained on all of digits:train)
is a third victim for the ensemble.
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch
from torch import nn

from advlab import data, zoo
from advlab.attacks import PGD, RandomNoise
from advlab.defenses.training import TrainConfig, accuracy, fit
from advlab.errors import AdvlabError
from advlab.experiments.transfer import (
    Ensemble,
    Resized,
    TransferMatrix,
    transfer_matrix,
)
from advlab.zoo.digits import DigitsCNN

#: training of each half model: > 94% on digits:test from 599 training images, ~1.6 s CPU each on one thread
CONFIG = TrainConfig(epochs=10, lr=3e-3, batch_size=32)
EPS = 0.2


@functools.cache
def digits_halves() -> tuple[DigitsCNN, DigitsCNN]:
    """DigitsCNNs trained on the even and the odd images of digits:train (seeds 1 and 2), cached per process."""
    x, y = data.load("digits:train")
    models = []
    for half, seed in ((0, 1), (1, 2)):
        torch.manual_seed(seed)
        m = DigitsCNN()
        fit(m, x[half::2], y[half::2], dataclasses.replace(CONFIG, seed=seed))
        models.append(m)
    return models[0], models[1]


@pytest.fixture(scope="module")
def digits_test_split() -> tuple[torch.Tensor, torch.Tensor]:
    return data.load("digits:test")


@pytest.fixture(scope="module")
def halves_matrix(digits_test_split: tuple[torch.Tensor, torch.Tensor]) -> TransferMatrix:
    """PGD-10 at L-inf 0.2 on A, B and their ensemble; victims A, B and the shipped digits-cnn."""
    a, b = digits_halves()
    full = zoo.load("digits-cnn")
    x, y = digits_test_split
    return transfer_matrix(
        [("A", a), ("B", b)],
        [("A", a), ("B", b), ("full", full)],
        x,
        y,
        PGD(eps=EPS, steps=10),
        ensemble=True,
        batch_size=600,
    )


def test_half_models_are_good_classifiers(digits_test_split: tuple[torch.Tensor, torch.Tensor]) -> None:
    for m in digits_halves():
        assert accuracy(m, *digits_test_split) > 0.9


def test_disjoint_training_sets_still_transfer(halves_matrix: TransferMatrix) -> None:
    """Szegedy et al. sec. 4.3: adversarials of a model stay hard for one trained on a disjoint set, though
    less than for the model itself; and far harder than random noise of the same size."""
    m = halves_matrix
    print("\n" + m.markdown())
    assert m.noise is not None  # PGD has an eps: the matrix has its chance row
    wb = dict(zip(m.sources, m.white_box, strict=True))
    noise = dict(zip(m.targets, m.noise, strict=True))
    for src, tgt in (("A", "B"), ("B", "A")):
        rate = m.rate(src, tgt)
        assert rate is not None and wb[tgt] is not None and noise[tgt] is not None
        assert rate < wb[tgt], f"{src}->{tgt} {rate:.3f} vs white box on {tgt} {wb[tgt]:.3f}"
        assert rate > noise[tgt] + 0.3 and rate > 2 * noise[tgt], f"{src}->{tgt} {rate:.3f} vs chance {noise[tgt]:.3f}"
        assert m.kind(src, tgt) == "transfer" and m.kind(src, src) == "white-box"
        # the graded measure agrees: the victim's true-class probability falls far more than under noise
        i, j = m.sources.index(src), m.targets.index(tgt)
        assert m.noise_prob_drop is not None and m.prob_drop[i][j] > m.noise_prob_drop[j] + 0.3
    # the diagonal is the white-box rate
    for s in ("A", "B"):
        assert m.rate(s, s) == wb[s] and wb[s] > 0.95


def test_ensemble_transfers_at_least_as_well_as_the_weaker_surrogate(halves_matrix: TransferMatrix) -> None:
    """Liu et al. 2017: an ensemble's adversarials transfer at least as well as a single surrogate's. On a victim
    outside the ensemble (the shipped digits-cnn) it beats the weaker member; on each member it beats the
    transfer from the other half (it attacked that member directly)."""
    m = halves_matrix
    ens = "ensemble(A+B)"
    assert m.members == {ens: ["A", "B"]} and m.kind(ens, "A") == "member"
    r = {s: m.rate(s, "full") for s in ("A", "B", ens)}
    assert r[ens] >= min(r["A"], r["B"]), r  # type: ignore[type-var]
    assert m.rate(ens, "A") > m.rate("B", "A")  # type: ignore[operator]
    assert m.rate(ens, "B") > m.rate("A", "B")  # type: ignore[operator]


def test_cells_follow_the_definition(digits_test_split: tuple[torch.Tensor, torch.Tensor]) -> None:
    """fooled[s][t] = |{f_t(x) = y and f_t(x_adv_s) != y}| and the noise row is RandomNoise with the attack's seed."""
    a, b = digits_halves()
    x, y = digits_test_split[0][:100], digits_test_split[1][:100]
    atk = PGD(eps=0.1, steps=3, seed=7)
    m = transfer_matrix([("A", a)], [("B", b)], x, y, atk, batch_size=128)
    x_adv = atk(a, x, y).x_adv
    with torch.no_grad():
        ok = b(x).argmax(1) == y
        fooled = int((ok & (b(x_adv).argmax(1) != y)).sum())
        wb = int(((a(x).argmax(1) == y) & (a(x_adv).argmax(1) != y)).sum())
    noise = RandomNoise(eps=0.1, tries=10, seed=7)(b, x, y).success
    assert m.clean_correct == [int(ok.sum())] and m.fooled == [[fooled]] and m.white_box_fooled == [wb]
    assert m.noise_fooled == [int((ok & noise).sum())]
    assert m.success[0][0] == fooled / int(ok.sum()) and m.eps == 0.1 and m.norm == "linf"
    row = m.rows()[0]
    assert row["source"] == "A" and row["target"] == "B" and row["fooled"] == fooled
    assert 0 <= row["ci_low"] <= row["success_rate"] <= row["ci_high"] <= 1
    d = m.to_dict()
    assert d["success"] == m.success and d["noise_baseline"]["B"] == m.noise[0]  # type: ignore[index]
    md = m.markdown().splitlines()
    assert md[0].startswith("| source \\ target | B |") and md[2].startswith(
        f"| A | {fooled / int(ok.sum()):.1%} ({fooled}/"
    )
    assert md[3].startswith("| chance: random noise")


def test_ensemble_averages_logits() -> None:
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    x = torch.rand(5, 4)
    with torch.no_grad():
        assert torch.allclose(Ensemble([a, b])(x), (a(x) + b(x)) / 2)
        assert torch.allclose(Ensemble([a, b], weights=[0.25, 0.75])(x), 0.25 * a(x) + 0.75 * b(x))
    with pytest.raises(ValueError, match="summing to 1"):
        Ensemble([a, b], weights=[0.5, 0.6])
    with pytest.raises(ValueError, match="at least one model"):
        Ensemble([])


def test_resized_is_differentiable_and_fits_each_model() -> None:
    seen = []

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(1, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(tuple(x.shape[-2:]))
            return self.lin(x.mean((1, 2, 3))[:, None])

    m = Resized(Probe(), 12)
    x = torch.rand(2, 1, 8, 8, requires_grad=True)
    m(x).sum().backward()
    assert seen == [(12, 12)] and x.grad is not None and x.grad.abs().sum() > 0


def test_bad_input_is_an_advlab_error(digits_test_split: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, _ = digits_halves()
    x, y = digits_test_split[0][:8], digits_test_split[1][:8]
    five = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(AdvlabError, match="has 5 classes but A has 10"):
        transfer_matrix([("A", a)], [("five", five)], x, y, PGD(eps=0.1, steps=1))
    with pytest.raises(AdvlabError, match="one eps"):
        transfer_matrix([("A", a)], [("A", a)], x, y, PGD(eps=[0.1, 0.2], steps=1))
    with pytest.raises(AdvlabError, match="label for every image"):
        transfer_matrix([("A", a)], [("A", a)], x, torch.full_like(y, -1), PGD(eps=0.1, steps=1))
    with pytest.raises(AdvlabError, match="unique"):
        transfer_matrix([("A", a), ("A", a)], [("A", a)], x, y, PGD(eps=0.1, steps=1))
    rgb = zoo.load("efficientnet-lite0")
    with pytest.raises(AdvlabError, match="3-channel"):
        transfer_matrix([("A", a)], [("lite0", rgb)], x, y, PGD(eps=0.1, steps=1))


@pytest.mark.skipif(
    not (zoo.available("efficientnet-lite1") and zoo.available("efficientnet-lite2")),
    reason="needs the efficientnet-lite1/-lite2 weight packages (advlab[zoo])",
)
@pytest.mark.slow  # three EfficientNet-Lite models end to end: ~30 s on a busy 2-core machine
def test_efficientnet_lite0_transfers_to_larger_lites() -> None:
    """PGD-10 at L-inf 8/255 on lite0 (224 px), scored on lite1 (240) and lite2 (260) through resizing.

    On the 4 sample photos lite0 gets 3 right and lite1/lite2 2 each, so a fooled-rate hinges on one photo and
    flips with the attack's random start (seen: 0/2, 1/2, 0/2 on lite1 over seeds 0-2, and noise 1/2 once); the
    transfer *rate* is tested on the digits CNNs above. What holds on every seed is that each victim's
    true-class probability falls more under the transferred examples than under random noise of the same eps.
    """
    x, y = data.load("samples", size=224)
    lite = {n: zoo.load(n) for n in ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")}
    runs = [
        transfer_matrix(
            [("lite0", lite["efficientnet-lite0"])],
            [("lite1", lite["efficientnet-lite1"]), ("lite2", lite["efficientnet-lite2"])],
            x,
            y,
            PGD(eps=8 / 255, steps=10, seed=seed),
            batch_size=4,
        )
        for seed in range(3)
    ]
    for m in runs:
        print("\n" + m.markdown(), "true-class probability drop:", m.prob_drop, "noise:", m.noise_prob_drop)
        assert m.white_box == [1.0]
        assert m.noise is not None and m.noise_prob_drop is not None
        for j in range(2):
            assert m.prob_drop[0][j] > m.noise_prob_drop[j]  # type: ignore[operator]
