"""The binarization test (advlab.evaluation.active): on the digits CNN the reliable preset finds the adversarial
examples that provably exist and a crippled attack does not; existence is verified on the binarized model; the
user's model is left as found."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
import torch
from torch import nn

from advlab import zoo
from advlab.attacks.base import Attack
from advlab.attacks.pgd import PGD
from advlab.evaluation.active import BinaryReadout, RunAttacks, active_test, binarized, groups, in_threat
from advlab.evaluation.presets import preset_attacks
from advlab.threat import distance
from advlab.zoo.traps import ProbabilityOutputs, RoundQuantized

SAMPLES = 8


def ensemble(attacks: Sequence[Attack]) -> RunAttacks:
    """``run_attacks`` as the cascade runs an ensemble: each attack on the samples still unbroken."""

    def run(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x_adv, todo = x.clone(), torch.ones(len(x), dtype=torch.bool)
        for atk in attacks:
            idx = todo.nonzero().flatten()
            if len(idx) == 0:
                break
            res = atk(model, x[idx], labels[idx])
            x_adv[idx] = res.x_adv
            todo[idx[res.success]] = False
        return x_adv

    return run


@pytest.fixture(scope="module")
def x(digits: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    return digits[0][:SAMPLES]


@pytest.mark.parametrize(("eps", "norm"), [(0.1, "linf"), (0.5, "l2")])
def test_reliable_attacks_find_the_adversarial_examples_that_exist(
    model: nn.Module, x: torch.Tensor, eps: float, norm: str
) -> None:
    res = active_test(model, x, eps, norm, ensemble(preset_attacks("reliable", eps, norm)), samples=SAMPLES)
    assert res.tested >= SAMPLES - 1 and res.skipped == SAMPLES - res.tested
    assert res.found == res.tested and res.passed()  # 32/32 of 32 digits in both settings when written
    # re-judged independently: the same task (same seed) predicts 1 at each point found, inside the ball and box
    task = binarized(model, x, eps, norm)
    assert torch.equal(task.ok, res.tested_mask)
    with torch.no_grad():
        pred = task.model(res.x_adv).argmax(1)
    hit = res.found_mask
    assert (pred[hit] == 1).all() and in_threat(res.x_adv, x, eps, norm)[hit].all()
    assert (distance(res.x_adv - x, norm)[hit] <= eps * (1 + 1e-5)).all()


def test_a_crippled_attack_fails_the_test(model: nn.Module, x: torch.Tensor) -> None:
    tiny = PGD(eps=0.1, steps=10, alpha=0.001)  # ten steps of eps / 100: it cannot leave the neighbourhood of x
    res = active_test(model, x, 0.1, "linf", ensemble([tiny]), samples=SAMPLES)
    assert res.tested >= SAMPLES - 1
    assert res.found <= 2 and not res.passed()  # 0/16 when written


def test_existence_is_verified_on_the_binarized_model(model: nn.Module, x: torch.Tensor) -> None:
    task = binarized(model, x, 0.1, "linf")
    assert task.layer == "net.classifier.3" and task.ok.sum() >= SAMPLES - 1
    ok = task.ok
    model.eval()
    with torch.no_grad():
        at_x, at_witness = task.model(x).argmax(1), task.model(task.witness).argmax(1)
    assert (at_x[ok] == 0).all() and (at_witness[ok] == 1).all()
    # the witness is on the boundary of the L-inf ball (a corner, reflected into the box) and in [0, 1]
    d = distance(task.witness - x, "linf")[ok]
    assert torch.allclose(d, torch.full_like(d, 0.1), atol=1e-6)
    assert task.witness.min() >= 0 and task.witness.max() <= 1
    # the padded logits never win: the binarized model is a binary classifier with the model's 10 outputs
    with torch.no_grad():
        out = task.model(torch.rand(32, *x.shape[1:]))
    assert out.shape == (32, 10) and (out.argmax(1) <= 1).all()
    assert not any(m._forward_hooks for m in model.modules())  # the hook lives only inside a forward


def test_the_users_model_is_left_as_found(x: torch.Tensor) -> None:
    net = zoo.load("digits-cnn").train()
    list(net.modules())[-1].eval()  # mixed modes, each to be given back
    state = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    flags = [p.requires_grad for p in net.parameters()]
    seen_modes: list[bool] = []

    def run(binary: nn.Module, xs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        seen_modes.append(net.training)
        return PGD(eps=0.1, steps=3)(binary, xs, labels).x_adv

    active_test(net, x[:4], 0.1, "linf", run, samples=4)
    assert seen_modes == [False]  # the attacks see the model as a user calls it: eval mode
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in state.items())
    assert [m.training for m in net.modules()] == modes
    assert [p.requires_grad for p in net.parameters()] == flags
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in net.modules())


def test_the_same_seed_gives_the_same_test(model: nn.Module, x: torch.Tensor) -> None:
    run = ensemble([PGD(eps=0.1, steps=5)])
    a, b = (active_test(model, x[:4], 0.1, "linf", run, samples=4, seed=3) for _ in range(2))
    assert torch.equal(a.witness, b.witness) and torch.equal(a.x_adv, b.x_adv)
    assert torch.equal(a.found_mask, b.found_mask) and torch.equal(a.tested_mask, b.tested_mask)
    other = binarized(model, x[:4], 0.1, "linf", seed=4)
    assert not torch.equal(other.witness, a.witness)
    # a sample's task depends on its pixels and the seed, not on the batch around it
    alone = binarized(model, x[2:3], 0.1, "linf", seed=3)
    assert torch.equal(alone.witness[0], a.witness[2])


def test_a_model_without_linear_layers_reads_its_outputs(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 10, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )
    res = active_test(net, x, 0.1, "linf", ensemble(preset_attacks("reliable", 0.1, "linf")), samples=SAMPLES)
    assert res.layer == "" and res.tested >= SAMPLES // 2
    assert res.found == res.tested


class SharedHead(nn.Module):
    """A model whose last ``nn.Linear`` runs twice per forward: it cannot be replaced, the readout reads the outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), nn.Linear(10, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.head(self.body(x))))


def test_a_head_that_runs_twice_is_not_replaced(x: torch.Tensor) -> None:
    torch.manual_seed(0)
    net = SharedHead()
    task = binarized(net, x[:4], 0.1, "linf")
    assert task.layer == "" and task.ok.any()
    with torch.no_grad():
        assert (task.model(task.witness[task.ok]).argmax(1) == 1).all()
    assert not any(m._forward_hooks for m in net.modules())


def test_a_quantized_input_makes_the_plain_gradient_attack_fail(twin: nn.Module, x: torch.Tensor) -> None:
    trap = RoundQuantized(twin)
    res = active_test(trap, x, 0.1, "linf", ensemble([PGD(eps=0.1, steps=10)]), samples=SAMPLES)
    assert res.layer == "twin.net.classifier.3"  # the quantizer stays in front of the readout
    assert res.tested >= SAMPLES // 2  # the rounded boundary point is still read as 1: existence holds
    assert res.rate <= 0.5 and not res.passed()  # zero gradients: PGD only keeps its random start
    honest = active_test(twin, x, 0.1, "linf", ensemble([PGD(eps=0.1, steps=10)]), samples=SAMPLES)
    assert honest.rate >= 0.75  # the same attack on the honest twin finds them


def test_probability_outputs_stay_after_the_readout(twin: nn.Module, x: torch.Tensor) -> None:
    task = binarized(ProbabilityOutputs(twin), x[:4], 0.1, "linf")
    with torch.no_grad():
        p = task.model(x[:4])
    assert torch.allclose(p.sum(1), torch.ones(4)) and (p >= 0).all()
    assert (p[task.ok].argmax(1) == 0).all()


def test_overlapping_balls_are_tested_in_separate_groups(model: nn.Module, x: torch.Tensor) -> None:
    pair = torch.cat([x[:1], (x[:1] + 0.05).clamp(0, 1), x[1:2]])  # the first two are 0.05 apart in L-inf
    parts = groups(pair, 0.1, "linf")
    assert [g.tolist() for g in parts] == [[0, 2], [1]]
    with pytest.raises(ValueError, match="overlap"):
        binarized(model, pair, 0.1, "linf")
    res = active_test(model, pair, 0.1, "linf", ensemble([PGD(eps=0.1, steps=10)]), samples=3)
    assert res.tested >= 2 and res.found == res.tested


def test_bad_arguments_raise(model: nn.Module, x: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="norm"):
        binarized(model, x[:1], 0.1, "l0")
    with pytest.raises(ValueError, match="eps"):
        binarized(model, x[:1], 0.0, "linf")
    with pytest.raises(ValueError, match="shape"):
        active_test(model, x[:2], 0.1, "linf", lambda m, xs, y: xs[:1], samples=2)
    assert isinstance(binarized(model, x[:1], 0.1, "l1").model, BinaryReadout)
