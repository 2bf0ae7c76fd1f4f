"""Unreliable gradients: finite differences against autograd, gradient steps against random ones, and the
gradient-free stage (Square) they trigger. The trap is :class:`advlab.zoo.traps.HighFrequency` (a small fast sine
term in the logits of the shipped digits CNN, its honest twin): gradients large but useless."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from advlab import attacks, data, zoo
from advlab.evaluation import EvalConfig, checks, evaluate, gradients
from advlab.evaluation.diagnostics import LogProbabilities
from advlab.zoo.digits import DigitsCNN
from advlab.zoo.traps import HighFrequency
from tests.cli.helpers import run_cli

EPS = 0.1


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.load("digits:test")
    return x[:64], y[:64]


def _unreliable(model: nn.Module, x: torch.Tensor) -> int:
    """Unreliable samples among two probes of :data:`gradients.SAMPLES` samples each."""
    found = 0
    for part in (x[: gradients.SAMPLES], x[gradients.SAMPLES : 2 * gradients.SAMPLES]):
        with torch.no_grad():
            labels = model(part).argmax(1)
        found += int(gradients.finite_difference_disagreement(model, part, labels, EPS).unreliable.sum())
    return found


def test_finite_differences_fail_on_a_fast_trap_and_not_on_honest_models(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    torch.manual_seed(0)
    assert _unreliable(twin, x) == 0
    assert _unreliable(DigitsCNN().eval(), x) == 0  # a randomly initialised CNN: small gradients, still consistent
    # 1e4 rad per pixel unit: the sine turns within the smallest step; samples whose label and runner-up get
    # opposite signs (about half) see it in their margin
    fast = HighFrequency(twin, 0.5, 1e4).eval()
    assert _unreliable(fast, x) >= 2 * gradients.FD_MIN
    d = gradients.finite_difference_disagreement(fast, x[:8], fast(x[:8]).argmax(1), EPS)
    assert min(d.per_sample[d.unreliable]) > gradients.FD_THRESHOLD and set(d.per_step) == set(gradients.STEPS)
    # the failed check and its warning, through the merged checks
    assert "fd_unreliable" in checks.failed_gradient_checks(
        {"fd_unreliable": 3.0, "fd_checked": 8.0, "fd_disagreement": 0.086}
    )
    line = next(
        f
        for f in checks.check_warnings({"fd_unreliable": 3.0, "fd_checked": 8.0, "fd_disagreement": 0.086})
        if "finite" in f
    )
    assert "3 of 8" in line and "0.086" in line and "upper bound" in line
    assert (
        checks.failed_gradient_checks({"fd_unreliable": 1.0, "fd_checked": 8.0}) == []
    )  # one odd sample does not fail the check


def test_finite_differences_on_efficientnet_photos() -> None:
    if not zoo.available("efficientnet-lite0"):
        pytest.skip("efficientnet-lite0 is not installed")
    model = zoo.load("efficientnet-lite0").eval()
    x, _, _ = data.load_for_model("samples", 224, 3, limit=2)
    t0 = time.process_time()
    with torch.no_grad():
        labels = model(x).argmax(1)
    d = gradients.finite_difference_disagreement(model, x, labels, 8 / 255)
    if time.process_time() - t0 > 15:
        pytest.skip("too slow on this machine")
    assert not bool(d.unreliable.any()), d.per_sample


def _transfer_reference(trap: HighFrequency, x: torch.Tensor, y: torch.Tensor) -> float:
    """The adaptive reference: APGD-CE and APGD-DLR (100 steps each) on the honest twin, judged on the trap (a
    transfer attack that ignores the sine term); robust = right on the clean image and on both points."""
    twin = trap.twin
    points = [attacks.APGD(eps=EPS, steps=100, loss=loss)(twin, x, y).x_adv for loss in ("ce", "dlr")]
    with torch.no_grad():
        robust = trap(x).argmax(1) == y
        for p in points:
            assert float((p - x).abs().amax()) <= EPS + 1e-6
            robust &= trap(p).argmax(1) == y
    return float(robust.float().mean())


def test_high_frequency_trap_gets_square_closing_the_gap_and_low_trust(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """Measured on 4 blocks of 64 digits (and two weight perturbations of the first): the gradient attacks leave
    10-15 samples more robust than the transfer reference; after the Square stage the evaluation is 4 samples below
    to 3 above it (two different attacks), closing 80-100% of the gap. "Within 2 pp" rode on the block."""
    x, y = digits
    trap = HighFrequency(twin).eval()
    reference = _transfer_reference(trap, x, y)
    rep = evaluate(trap, (x, y), EvalConfig(eps=EPS, keep_adversarials=True))
    gradient_only = next(a for a in rep.per_attack if a["attack"] == "apgd-t")["robust_accuracy_after"]
    assert gradient_only > reference + 0.1  # the trap fools the gradient attacks (before the gradient-free stage)
    assert gradient_only - rep.robust_accuracy >= 0.5 * (gradient_only - reference)  # the remedies close the gap
    stage = next(a for a in rep.per_attack if a["attack"] == "square-check")
    first_run = rep.samples.checks["gradient_free_tried"]  # (the row adds the more runs)
    smoothed = rep.samples.checks.get("smoothed_broke", 0)  # (the unstable predictions' smoothed APGD ran first)
    left = round(gradient_only * len(y)) - smoothed
    assert stage["broken"] > 0 and first_run == left and stage["attacked"] >= first_run
    assert rep.trust == "low"
    assert any(f.startswith("gradient steps no better than random ones") and "upper bound" in f for f in rep.warnings)
    assert any(f"a gradient-free attack broke {stage['broken']} samples" in f for f in rep.warnings)
    assert (
        "steps_weak" in rep.diagnostics["failed_gradient_checks"]
        and rep.diagnostics["checks"]["black_box_broke"] == stage["broken"]
    )
    # every success is real on the trap and inside the ball
    assert rep.x_adv is not None and float((rep.x_adv - x).abs().amax()) <= EPS + 1e-6
    with torch.no_grad():
        robust = (trap(x).argmax(1) == y) & (trap(rep.x_adv).argmax(1) == y)
    assert int(robust.sum()) == round(rep.robust_accuracy * len(y))


@pytest.mark.parametrize("kind", ["shipped", "random-init"])
def test_well_behaved_models_keep_high_trust_and_run_no_extra_stage(
    kind: str, twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    torch.manual_seed(0)
    model = twin if kind == "shipped" else DigitsCNN().eval()
    x, y = digits
    rep = evaluate(model, (x, y), EvalConfig(eps=EPS, active_test=0))
    assert rep.trust == "high" and rep.warnings == [], rep.warnings
    assert [a["attack"] for a in rep.per_attack] in (["apgd-ce", "apgd-t", "noise-check"], ["apgd-ce", "apgd-t"])
    stages = rep.samples.attack_stats[[len(rep.attacks) + 1, len(rep.attacks) + 3]]
    assert float(stages.abs().sum()) == 0  # the gradient-free and the smoothed stages' rows: nothing ran
    f = rep.diagnostics["checks"]
    assert (
        f["fd_checked"] == min(gradients.SAMPLES, int(rep.samples.attacked.sum() - rep.samples.broken.sum()))
        and f["fd_unreliable"] == 0
        and rep.diagnostics["failed_gradient_checks"] == []
    )
    assert not gradients.steps_failed(f.get("steps_weak", 0), f.get("steps_checked", 0))
    # the passes per image add up: clean pass, attacks, noise check, the randomness and zero-gradient checks, the
    # unconstrained attack, the finite-difference probe, the stability probe (no unstable sample)
    assert f["stability_unstable"] == 0 and f["stability_probed"] == f["noise_tried"] - f["noise_broke"]
    attacks_fw = sum(a["forward_evaluations"] for a in rep.per_attack)
    probe = f["fd_forwards"] + f.get("unconstrained_forwards", 0) + f["stability_forwards"]
    extra = min(len(x), checks.CHECK_SAMPLES) + f.get("gradient_checked", 0)
    assert int(rep.samples.forwards.sum()) == len(x) + attacks_fw + probe + extra


def test_weak_steps_and_the_steps_check() -> None:
    clean = torch.tensor([-5.0, -5.0, -5.0, -5.0])
    attack = torch.tensor([-1.0, -4.0, -3.0, -5.0])  # gains 4, 1, 2, 0
    noise = torch.tensor([-4.0, -4.5, -4.0, -5.0])  # gains 1, 0.5, 1, 0
    assert gradients.weak_steps(clean, attack, noise).tolist() == [False, False, False, False]
    # gains 3, 0.5, 1.4, 0 against 1, 0.5, 1, 0: weak where below 1.5 times the noise's gain
    assert gradients.STEP_RATIO == 1.5
    assert gradients.weak_steps(clean, torch.tensor([-2.0, -4.5, -3.6, -5.0]), noise).tolist() == [
        False,
        True,
        True,
        False,
    ]
    assert gradients.steps_failed(3, 20) and not gradients.steps_failed(2, 4) and not gradients.steps_failed(3, 21)


class WithBatchNorm(nn.Module):
    """The digits CNN after a BatchNorm layer on its input (identity statistics: the same decisions in eval mode)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.bn, self.net = nn.BatchNorm2d(1), net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.bn(x))


def test_a_batchnorm_left_in_training_is_a_named_check(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits[0][:16], digits[1][:16]
    model = WithBatchNorm(twin).eval()
    model.bn.train()  # model.eval() was called, then one layer went back to training
    assert checks.training_modules(model) == {"training_mode": 1.0, "batchnorm_training": 1.0}
    rep = evaluate(model, (x, y), EvalConfig(attacks=(attacks.FGSM(eps=EPS),)))
    line = next(f for f in rep.warnings if "training mode" in f)
    assert "1 of them BatchNorm" in line and rep.trust == "low"
    assert rep.diagnostics["checks"]["batchnorm_training"] == 1.0
    assert model.bn.training and not model.net.training  # left as found
    LogProbabilities(model)  # an attack-time view keeps the wrapped modules' modes (train() would reset them all)
    assert model.bn.training and not model.net.training
    assert checks.training_modules(model.eval()) == {"training_mode": 0.0, "batchnorm_training": 0.0}


def test_cli_json_carries_trust_and_the_checks(tmp_path: Path) -> None:
    (tmp_path / "trap.py").write_text(
        "from advlab import zoo\n"
        "from advlab.zoo.traps import HighFrequency\n"
        "def make():\n"
        "    return HighFrequency(zoo.load('digits-cnn')).eval()\n"
    )
    rc, out, err = run_cli(
        [
            "eval",
            "--model",
            f"{tmp_path / 'trap.py'}:make",
            "--data",
            "digits:test",
            "--limit",
            "32",
            "--preset",
            "fast",
            "--eps",
            str(EPS),
            "--json",
            "-q",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert rc == 0, err
    m = json.loads(out)
    assert m["trust"] == "low" and "steps_weak" in m["diagnostics"]["failed_gradient_checks"]
    assert m["diagnostics"]["checks"]["gradient_free_tried"] > 0 and "square-check" in [
        a["attack"] for a in m["per_attack"]
    ]
    assert any("upper bound" in f for f in m["diagnostics"]["warnings"])
