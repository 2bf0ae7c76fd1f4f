"""The sanity checks fire on the models they are for (saturated softmax, probabilities, randomness, masked
gradients) and stay quiet on a plain model; the zero-gradient test is the one the study uses too."""

from __future__ import annotations

import copy

import torch
from torch import nn

from advlab import attacks, evaluate
from advlab.evaluation import EvalConfig, checks

from .conftest import Scaled


class Staircase(nn.Module):
    """A quantizer in front of the model: piecewise constant, so every input gradient is exactly zero."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * 4).round() / 4)


def test_reliable_preset_is_not_fooled_by_scaled_logits(model, digits) -> None:
    x, y = digits[0][:40], digits[1][:40]
    reliable_cfg = EvalConfig(preset="reliable", eps=0.1, norm="linf")
    plain = evaluate(model, (x, y), reliable_cfg)
    scaled = Scaled(model, 1000.0).eval()
    fooled = evaluate(scaled, (x, y), EvalConfig(attacks=(attacks.PGD(eps=0.1, steps=20),)))
    reliable = evaluate(scaled, (x, y), reliable_cfg)
    assert reliable.clean_accuracy == plain.clean_accuracy
    n = len(x)
    # measured over 6 blocks of 40 digits (and two weight perturbations of this one): PGD-CE leaves 0.95-1.0
    # robust on the scaled model against 0.20-0.45 for the reliable preset on the plain one; the gradient-free
    # stage brings it back to 1-4 samples above that (its Square is weaker than APGD, not fooled)
    assert (
        fooled.per_attack[0]["robust_accuracy_after"] > plain.robust_accuracy + 0.4
    )  # CE gradients vanish: PGD-CE sees nothing
    assert (
        fooled.trust == "low" and fooled.robust_accuracy <= plain.robust_accuracy + 0.2
    )  # the gradient-free stage undid it
    # DLR is scale invariant: the same samples survive up to float rounding (measured: 0-1 sample apart)
    assert abs(round(reliable.robust_accuracy * n) - round(plain.robust_accuracy * n)) <= 2
    assert any("zero cross-entropy" in f or "all-zero" in f for f in reliable.warnings)
    assert not any("all-zero" in f for f in plain.warnings)
    assert any("random noise broke" in f for f in fooled.warnings)  # the masking check catches the fooled attack


def test_warns_of_probabilities_and_randomness(model, digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    fgsm = EvalConfig(attacks=(attacks.FGSM(eps=0.1),), active_test=0)  # (one FGSM step fails the active test)
    probs = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    rep = evaluate(probs, (x, y), fgsm)
    assert checks.check_warnings({"probability_batches": 1.0})[0].startswith(
        "the model's outputs look like probabilities"
    )
    # the evaluation adapts: it attacks log p (the logits up to a constant), so the number is the logits model's
    assert any("outputs probabilities" in a for a in rep.adaptations) and not rep.warnings
    assert abs(rep.robust_accuracy - evaluate(model, (x, y), fgsm).robust_accuracy) <= 1 / len(x)
    noisy = nn.Sequential(nn.Dropout(0.3), copy.deepcopy(model)).train()
    rep = evaluate(noisy, (x, y), fgsm)
    assert any("not deterministic" in f for f in rep.warnings) and any("training mode" in f for f in rep.warnings)
    assert noisy.training  # left as it was found
    assert not evaluate(model, (x, y), fgsm).warnings


def test_zero_gradients_per_sample(model, digits) -> None:
    x = digits[0][:8]
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert not checks.zero_gradients(model, x, pred).any()
    # saturated softmax: CE at the predicted class is exactly zero in float32, so is its gradient
    assert checks.zero_gradients(Scaled(model, 1e6).eval(), x, pred).all()
    assert checks.zero_gradients(Staircase(model).eval(), x, pred).all()
    assert checks.zero_gradient_fraction(model, x, pred) == 0.0
    assert checks.zero_gradient_fraction(Staircase(model).eval(), x, pred) == 1.0
    assert checks.zero_gradient_fraction(_Constant(), x, pred) == 1.0  # no differentiable path at all
    assert all(p.grad is None for p in model.parameters())  # the parameters got no gradients


class _Constant(nn.Module):
    """A parameter-free model whose output does not depend on the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(x), 10)


def test_zero_gradient_check_counts_only_survivors(model, digits) -> None:
    x, y = digits[0][:8], digits[1][:8]
    fw, bw = torch.zeros(8, dtype=torch.long), torch.zeros(8, dtype=torch.long)
    unbroken = torch.tensor([True, False] * 4)
    out, zero = checks.zero_gradient_check(Staircase(model).eval(), x, y, unbroken, fw, bw)
    assert out == {"zero_gradient": 4.0, "gradient_checked": 4.0} and zero.tolist() == [0, 2, 4, 6]
    assert torch.equal(fw, unbroken.long()) and torch.equal(bw, unbroken.long())
    assert checks.zero_gradient_check(model, x, y, torch.zeros(8, dtype=torch.bool), fw, bw)[0] == {}


def test_merge_and_warnings() -> None:
    merged = checks.merge(
        [
            {"randomness": 0.1, "zero_gradient": 1.0, "gradient_checked": 4.0},
            {"randomness": 0.3, "zero_gradient": 2.0, "gradient_checked": 4.0},
        ]
    )
    assert merged == {"randomness": 0.3, "zero_gradient": 3.0, "gradient_checked": 8.0}
    lines = checks.check_warnings(merged)
    assert any("not deterministic" in f for f in lines) and any("3 of 8" in f for f in lines)
    assert checks.check_warnings({"batches": 2.0, "probability_batches": 0.0, "randomness": 0.0}) == []
