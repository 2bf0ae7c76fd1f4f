"""The SafetyNet-style detector: exact ROC AUC, a detector that finds held-out attacks on digits, and the
lecture's point (research note 004): an attack that must fool classifier and detector at once does it far more often
than an attack that ignores the detector."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from advlab import data, zoo
from advlab.attacks import FGSM, PGD
from advlab.defenses import (
    Detector,
    Guarded,
    evades,
    guarded_loss,
    penultimate_layer,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
    train_detector,
)
from advlab.defenses.detector import split_guarded
from advlab.errors import AdvlabError

EPS = 0.1


# ------------------------------------------------------------------------------------------------ ROC AUC
def test_roc_auc_is_exact_on_hand_made_cases() -> None:
    assert roc_auc([0.1, 0.2, 0.3], [0.4, 0.9]) == 1.0  # perfect separation
    assert roc_auc([0.4, 0.9], [0.1, 0.2, 0.3]) == 0.0  # reversed
    assert roc_auc([0.5] * 4, [0.5] * 3) == 0.5  # all tied: chance
    # pairs (c, a): (0,1) 1, (0,2) 1, (1,1) 1/2, (1,2) 1 -> 3.5 / 4
    assert roc_auc(torch.tensor([0.0, 1.0]), torch.tensor([1.0, 2.0])) == 0.875
    assert roc_auc([3.0], [1.0, 3.0, 5.0]) == pytest.approx(0.5)  # one below, one tied, one above


def test_roc_auc_and_curve_match_sklearn_on_random_scores() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    gen = torch.Generator().manual_seed(0)
    for trial in range(5):
        c = torch.randn(200 + trial, generator=gen)
        a = torch.randn(150, generator=gen) + 0.7
        if trial % 2:  # coarse scores: many ties, within and across the two sets
            c, a = (c * 2).round(), (a * 2).round()
        y = torch.cat([torch.zeros(len(c)), torch.ones(len(a))]).numpy()
        s = torch.cat([c, a]).double().numpy()
        auc = roc_auc(c, a)
        assert auc == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
        fpr, tpr, thr = roc_curve(c, a)
        f_ref, t_ref, _ = metrics.roc_curve(y, s, drop_intermediate=False)
        assert fpr.numpy() == pytest.approx(f_ref, abs=1e-12) and tpr.numpy() == pytest.approx(t_ref, abs=1e-12)
        assert math.isinf(float(thr[0])) and (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0, 0, 1, 1)
        assert float(torch.trapezoid(tpr, fpr)) == pytest.approx(auc, abs=1e-12)  # ties are half-credited in both


def test_threshold_at_fpr_flags_at_most_that_fraction() -> None:
    scores = torch.arange(100, dtype=torch.float64) / 100  # 0.00 .. 0.99
    tau = threshold_at_fpr(scores, 0.05)
    assert tau == pytest.approx(0.94) and int((scores > tau).sum()) == 5
    assert int((scores > threshold_at_fpr(scores, 0.0)).sum()) == 0
    assert threshold_at_fpr(scores, 1.0) == -math.inf
    tied = torch.tensor([0.1, 0.5, 0.5, 0.5, 0.9])
    assert int((tied > threshold_at_fpr(tied, 0.4)).sum()) == 1  # ties at tau are not flagged: fewer, never more


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: roc_auc([], [1.0]), "scores_clean is empty"),
        (lambda: roc_auc([0.0], [float("nan")]), "NaN or infinite"),
        (lambda: threshold_at_fpr([0.1, 0.2], 1.5), r"fpr must be in \[0, 1\]"),
        (lambda: guarded_loss(c=0), "c must be positive"),
        (lambda: guarded_loss(kappa=-1), "kappa must be positive"),
    ],
)
def test_bad_arguments_raise_clearly(call, message: str) -> None:  # noqa: ANN001
    with pytest.raises(AdvlabError, match=message):
        call()


def test_guarded_loss_is_above_its_bonus_exactly_when_both_are_fooled() -> None:
    # K = 3 logits + the reject output z_max + (z_d - logit(tau)); y = 0 throughout
    z = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [0.0, 3.0, 1.0], [0.0, 0.5, 1.0]])
    s = torch.tensor([-2.0, -0.5, 0.5, -4.0])  # z_d - logit(tau): < 0 means not flagged
    out = torch.cat([z, (z.amax(1) + s)[:, None]], 1)
    _, m_d = split_guarded(out)
    assert torch.allclose(m_d, -s)
    loss = guarded_loss(c=1.0, kappa=1.0)(out, torch.zeros(4, dtype=torch.long), False)
    # misclassified & not flagged: rows 1 and 3; row 2 is misclassified but flagged; row 0 is neither
    assert (loss > 2.0).tolist() == [False, True, False, True]
    assert loss.tolist() == pytest.approx([-1.0 + 1.0, 1.0 + 0.5 + 2.0, 1.0 - 0.5, 1.0 + 1.0 + 2.0])


# ------------------------------------------------------------------------------------------------ on digits
@dataclass
class Setup:
    model: nn.Module
    detector: Detector
    tau: float
    x: torch.Tensor  # held-out test images
    y: torch.Tensor
    x_cal: torch.Tensor  # clean training images the detector never saw


@pytest.fixture(scope="module")
def digits() -> Setup:
    torch.manual_seed(0)
    model = zoo.load("digits-cnn")
    x1, y1 = data.load("digits:train")[:2]
    x2, y2 = data.load("digits:test")[:2]
    x_fit, y_fit, x_cal = x1[:900], y1[:900], x1[900:]
    r = PGD(eps=EPS, steps=10)(model, x_fit, y_fit)
    det = train_detector(model, None, x_fit, r.x_adv[r.success], epochs=50, seed=0)
    tau = threshold_at_fpr(det.score(x_cal), 0.05)
    return Setup(model, det, tau, x2[:300], y2[:300], x_cal)


def test_penultimate_layer_is_found() -> None:
    model = zoo.load("digits-cnn")
    assert penultimate_layer(model, torch.rand(2, 1, 8, 8)) == "net.classifier.2"  # the ReLU feeding the last Linear


def test_detector_finds_held_out_attacks(digits: Setup) -> None:
    d, model = digits.detector, digits.model
    assert d.layer == "net.classifier.2" and d.dim == 128 and d.pool == "flatten"
    clean = d.score(digits.x)
    assert clean.dtype == torch.float64 and bool(((clean >= 0) & (clean <= 1)).all())
    assert float((clean > digits.tau).double().mean()) < 0.10  # near the 5% chosen on other clean images
    aucs = {}
    for name, atk in (("pgd", PGD(eps=EPS, steps=10, seed=1)), ("fgsm", FGSM(eps=EPS))):
        r = atk(model, digits.x, digits.y)
        assert int(r.success.sum()) > 50
        aucs[name] = roc_auc(clean, d.score(r.x_adv[r.success]))
    assert aucs["pgd"] > 0.9 and aucs["fgsm"] > 0.9, aucs  # measured 0.95 on these 300 test images


def test_adaptive_attack_fools_both_far_more_often(digits: Setup) -> None:
    model, d, tau, x, y = digits.model, digits.detector, digits.tau, digits.x, digits.y
    plain = PGD(eps=EPS, steps=10)(model, x, y)
    non_adaptive = float(evades(model, d, tau, plain.x_adv, y).float().mean())
    guarded = Guarded(model, d, tau)
    r = PGD(eps=EPS, steps=10, loss=guarded_loss())(guarded, x, y)
    assert float((r.x_adv - x).abs().max()) <= EPS + 1e-6 and 0 <= float(r.x_adv.min()) and float(r.x_adv.max()) <= 1
    ok = evades(model, d, tau, r.x_adv, y)
    adaptive = float(ok.float().mean())
    # the detector catches most of the attack that ignores it, but an attacker who knows it fools both
    # about twice as often (measured 0.22 vs 0.42 on these images)
    assert adaptive > non_adaptive + 0.1, (non_adaptive, adaptive)
    assert non_adaptive < 0.5 * plain.success_rate
    with torch.no_grad():  # the guarded model's reject output agrees with the detector's flag
        out = guarded(r.x_adv)
    z, m_d = split_guarded(out)
    agree = ((z.argmax(1) != y) & (m_d > 0)) == ok
    assert float(agree.float().mean()) > 0.99


def test_detector_leaves_the_classifier_alone(digits: Setup) -> None:
    model = zoo.load("digits-cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x = digits.x_cal[:64]
    model.train()  # a user's model in training mode stays in training mode
    det = train_detector(model, "net.features.7", x, (x + 0.1 * torch.randn_like(x)).clamp(0, 1), epochs=2, seed=0)
    det.score(x)
    guarded = Guarded(model, det, 0.5)
    PGD(eps=EPS, steps=2, loss=guarded_loss())(guarded, x, torch.zeros(len(x), dtype=torch.long))
    with pytest.raises(RuntimeError):
        det.logit(torch.rand(2, 3, 8, 8))  # the classifier fails inside the hooked forward: hooks still removed
    assert all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert "net.features.0.weight" not in det.state_dict()  # the detector holds only its own tensors


def test_detector_is_seeded_and_saves(digits: Setup) -> None:
    model, x = digits.model, digits.x_cal[:128]
    noisy = (x + 0.2 * torch.rand(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    a = train_detector(model, None, x, noisy, epochs=3, seed=0, hidden=0)
    b = train_detector(model, None, x, noisy, epochs=3, seed=0, hidden=0)
    c = train_detector(model, None, x, noisy, epochs=3, seed=1, hidden=0)
    assert isinstance(a.head, nn.Linear)  # hidden=0: logistic regression
    assert torch.equal(a.score(x), b.score(x)) and not torch.equal(a.score(x), c.score(x))
    back = Detector.from_state(model, a.state_dict(), a.config())
    assert torch.equal(back.score(noisy), a.score(noisy))


def test_unknown_layer_and_bad_data_are_errors(digits: Setup) -> None:
    x = digits.x_cal[:8]
    with pytest.raises(AdvlabError, match="unknown layer 'nope'"):
        train_detector(digits.model, "nope", x, x, epochs=1)
    with pytest.raises(AdvlabError, match="x_adv must be a non-empty batch"):
        train_detector(digits.model, None, x, x[:0], epochs=1)
    with pytest.raises(AdvlabError, match="threshold must be a probability"):
        Guarded(digits.model, digits.detector, 1.5)
