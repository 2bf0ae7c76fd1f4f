"""Every success is judged on the model as a user calls it (its own mode, ``torch.no_grad``), inside the ball and the
box: the robust accuracy equals the accuracy recomputed from the kept adversarial examples, on honest models and on
traps of several kinds; a model whose forward changes when autograd is on is a named finding, not a silent number."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import attacks
from advlab.evaluation import EvalConfig, diagnostics, evaluate
from advlab.zoo import traps

EPS = 0.1


class GradDecoy(nn.Module):
    """The twin as a user calls it (no grad); with autograd on, a decoy: the twin's logits with its own top class
    lifted by ``lock`` (a margin no attack in the ball overcomes), and the gradient of another function (the twin on
    the negative image), so gradient attacks see a robust model that is never the one judged."""

    def __init__(self, net: nn.Module, lock: float = 30.0) -> None:
        super().__init__()
        self.net, self.lock = net, lock

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        if not torch.is_grad_enabled():
            return z
        other = self.net(1 - x)
        lifted = z.detach() + self.lock * nn.functional.one_hot(z.detach().argmax(1), z.shape[1]).to(z.dtype)
        return lifted + (other - other.detach())


class TrainTimeDecoy(nn.Module):
    """The opposite decoy: with autograd on, the twin's logits with its top class pushed down (every point looks
    adversarial to the attacks, so an attack that counted its own verdict would call every sample broken)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.net(x)
        if not torch.is_grad_enabled():
            return z
        return z - 30.0 * nn.functional.one_hot(z.detach().argmax(1), z.shape[1]).to(z.dtype)


def _recomputed(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    """Robust accuracy recomputed from the adversarial examples, the model called as a user calls it."""
    with torch.no_grad():
        return float(((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).double().mean())


#: a deterministic model of every trap kind of :mod:`advlab.zoo.traps` (the randomized ones have an expected
#: accuracy instead, tests/evaluation/test_diagnostics.py), and the decoy above
KINDS = {
    "honest": lambda twin: twin,
    "round": traps.RoundQuantized,
    "threshold": traps.ThresholdQuantized,
    "int-cast": traps.IntCastQuantized,
    "numpy": traps.NumpyPreprocessed,
    "numpy-flat": lambda twin: traps.NumpyPreprocessed(twin, layout="flat"),
    "numpy-logits": traps.NumpyLogits,
    "numpy-pil": lambda twin: traps.NumpyPreprocessed(twin, layout="pil"),
    "probabilities": traps.ProbabilityOutputs,
    "high-frequency": traps.HighFrequency,
    "kwta": traps.KWinnersTakeAll,
    "staircase": traps.SteepStaircase,
    "grad-mode": traps.GradModeDecoy,
    "train-time-decoy": TrainTimeDecoy,
    "backward-negated": lambda twin: traps.CustomBackward(twin, mode="negated"),
    "backward-zero": lambda twin: traps.CustomBackward(twin, mode="zero"),
    "reject": traps.RejectOffGrid,
    "jpeg": traps.JpegPurified,
    "seeded-noise": traps.InputSeededNoise,
}


#: the kinds whose evaluation runs the gradient-free stage whatever the checks (no gradient path; a forward that
#: changes with autograd): slow, so only with the checks, and each has a test of its own here or in test_diagnostics
SQUARE_ANYWAY = ("numpy", "numpy-flat", "numpy-logits", "numpy-pil", "grad-mode", "train-time-decoy")


@pytest.mark.parametrize(
    ("kind", "checks"),
    [(k, False) for k in KINDS if k not in SQUARE_ANYWAY]
    + [pytest.param(k, True, marks=pytest.mark.slow) for k in KINDS],
)
def test_robust_accuracy_is_what_the_adversarial_examples_give(
    kind: str, checks: bool, twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """On every kind, without the checks (fast) and with them (slow: the gradient-free stage runs on most traps)."""
    x, y = digits[0][:24], digits[1][:24]
    model = KINDS[kind](twin).eval()
    config = EvalConfig(preset="fast", eps=EPS, keep_adversarials=True, active_test=0, sanity=checks)
    rep = evaluate(model, (x, y), config)
    assert rep.x_adv is not None
    assert float((rep.x_adv - x).abs().amax()) <= EPS * (1 + 1e-5) + 1e-6
    assert float(rep.x_adv.min()) >= 0 and float(rep.x_adv.max()) <= 1
    assert rep.robust_accuracy == pytest.approx(_recomputed(model, x, rep.x_adv, y), abs=1e-12)
    if checks or kind == "honest":  # the attacks (and, where gradients fail, the gradient-free stage) broke samples
        assert rep.robust_accuracy < rep.clean_accuracy


def test_an_attack_claiming_success_on_the_grad_forward_is_not_believed(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """With autograd on every point looks misclassified: PGD (early stop) claims every sample at once. The judge,
    called without grad, sees the twin: the claimed successes at the clean point are not counted."""
    x, y = digits[0][:24], digits[1][:24]
    decoy = TrainTimeDecoy(twin)
    claimed = attacks.PGD(eps=EPS, steps=5)(decoy, x, y)
    rep = evaluate(decoy, (x, y), EvalConfig(attacks=(attacks.PGD(eps=EPS, steps=5),), keep_adversarials=True))
    assert rep.x_adv is not None
    assert rep.robust_accuracy == pytest.approx(_recomputed(decoy, x, rep.x_adv, y), abs=1e-9)
    assert rep.robust_accuracy > 1 - claimed.success_rate + 0.3  # the attack's own verdict would say ~0
    assert rep.findings.grad_mode_differs and rep.trust == "low"


def test_a_decoy_grad_path_is_found_and_the_real_model_attacked_without_gradients(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """The silent over-report this guards against: gradient attacks on the decoy find nothing (robust accuracy =
    clean accuracy) while the model a user calls is the undefended twin. The probe finds the gap, a warning names
    it, and the gradient-free stage on the no-grad model brings the number near the twin's."""
    x, y = digits[0][:48], digits[1][:48]
    decoy = GradDecoy(twin)
    fooled = attacks.APGD(eps=EPS, steps=20)(decoy, x, y)
    plain = attacks.APGD(eps=EPS, steps=20)(twin, x, y)
    assert fooled.success_rate < plain.success_rate - 0.2  # the decoy really misleads gradient attacks
    rep = evaluate(decoy, (x, y), EvalConfig(preset="fast", eps=EPS, keep_adversarials=True))
    honest = evaluate(twin, (x, y), EvalConfig(preset="fast", eps=EPS))
    assert rep.findings.grad_mode_differs and rep.findings.grad_mode_gap > 1
    assert rep.trust == "low" and any("autograd is on" in w for w in rep.warnings)
    assert rep.x_adv is not None
    assert rep.robust_accuracy == pytest.approx(_recomputed(decoy, x, rep.x_adv, y), abs=1e-9)
    # Square against APGD on the same digits: -2 to +3 samples in 48 (tests/evaluation/test_diagnostics.py)
    assert rep.robust_accuracy <= honest.robust_accuracy + 5 / len(y) < rep.clean_accuracy
    assert not diagnostics.probe(twin, twin, x, [attacks.PGD(eps=EPS)]).grad_mode_differs


def test_a_resumed_evaluation_rebuilds_its_plan_without_probing(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The plan a run saved (its record) is what a resume runs: the findings come from the record, the probe is not
    called, and the report is the same as a single pass."""
    from advlab.work import Work

    x, y = digits[0][:32], digits[1][:32]
    model = traps.RoundQuantized(twin)
    cfg = EvalConfig(preset="fast", eps=EPS, batch_size=16)
    saved: dict[int, object] = {}
    first = Work(on_done=lambda b, r: saved.__setitem__(b, r), in_shard=lambda b: b == 0)
    evaluate(model, (x, y), cfg, work=first)
    assert first.plan is not None and first.plan["findings"]["straight_through"] == ["round"]

    def no_probe(*args: object, **kw: object) -> None:
        raise AssertionError("a resumed evaluation probed the model again")

    monkeypatch.setattr(diagnostics, "probe", no_probe)
    resumed = evaluate(model, (x, y), cfg, work=Work(done=dict(saved), plan=first.plan))  # type: ignore[arg-type]
    monkeypatch.undo()
    whole = evaluate(model, (x, y), cfg)
    assert resumed.robust_accuracy == whole.robust_accuracy and resumed.adaptations == whole.adaptations
    changed = EvalConfig(preset="reliable", eps=EPS, batch_size=16)
    with pytest.raises(Exception, match="saved plan"):
        evaluate(model, (x, y), changed, work=Work(plan=first.plan))
