"""advlab.evaluation.metrics on hand-made per-sample cases, and the proof that every caller (evaluate's report,
the study's row, the transfer matrix) takes its rates from these same functions."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

from advlab import attacks, evaluate
from advlab.attacks.base import Attack
from advlab.evaluation import EvalConfig, metrics
from advlab.experiments import study
from advlab.experiments.transfer import transfer_matrix
from tests.experiments.test_study import Code  # reads its answer off the first pixel

T = torch.tensor
#: eight samples: 0-2 and 4 correct; 3 wrong (and moved onto its label); 5, 6 unlabelled; 7 wrong and unchanged
Y = T([0, 1, 2, 3, 4, -1, -1, 5])
CLEAN = T([0, 1, 2, 9, 4, 3, 3, 7])
ADV = T([0, 8, 2, 3, 4, 3, 6, 7])


def test_accuracies_are_over_the_labelled_samples() -> None:
    assert metrics.labelled(Y).tolist() == [True] * 5 + [False, False, True]
    assert metrics.clean_correct(Y, CLEAN).tolist() == [True, True, True, False, True, False, False, False]
    assert metrics.clean_accuracy(Y, CLEAN) == 4 / 6
    # robust: correct clean AND correct adversarially; sample 3 (wrong, then moved onto its label) does not count
    assert metrics.robust(Y, CLEAN, ADV).tolist() == [True, False, True, False, True, False, False, False]
    assert metrics.robust_accuracy(Y, CLEAN, ADV) == 3 / 6
    assert metrics.robust_accuracy(Y, CLEAN, CLEAN) == metrics.clean_accuracy(Y, CLEAN)  # a no-op attack


def test_success_rates() -> None:
    # strict: of the 4 correct, only sample 1 became wrong
    assert metrics.fooled(Y, CLEAN, ADV).tolist() == [False, True] + [False] * 6
    assert metrics.strict_attack_success_rate(Y, CLEAN, ADV) == 1 / 4
    # untargeted successes (the prediction changed) of an attack that ran on the correct samples only
    attacked = metrics.clean_correct(Y, CLEAN)
    success = (ADV != CLEAN) & attacked
    assert metrics.attack_success_rate(success, attacked) == 1 / 4
    # a targeted attack on every sample: success = the target was hit, over all N when attacked is None
    target = T([1, 8, 0, 3, 4, 2, 6, 1])
    hit = ADV == target
    assert hit.tolist() == [False, True, False, True, True, False, True, False]
    assert metrics.attack_success_rate(hit) == 4 / 8
    assert metrics.attack_success_rate(hit, metrics.labelled(Y)) == 3 / 6


def test_prediction_change_rate_is_over_all_samples() -> None:
    # samples 1 (1 -> 8), 3 (9 -> 3) and 6 (3 -> 6, unlabelled) changed
    assert metrics.prediction_change_rate(CLEAN, ADV) == 3 / 8
    assert metrics.prediction_change_rate(CLEAN, CLEAN) == 0.0


def test_empty_denominators_give_zero_and_empty_statistics_none() -> None:
    none = T([-1, -1])
    assert metrics.clean_accuracy(none, T([0, 1])) == 0.0 and metrics.robust_accuracy(none, T([0, 1]), T([1, 0])) == 0.0
    assert metrics.strict_attack_success_rate(T([0, 0]), T([1, 1]), T([0, 0])) == 0.0  # nothing correct
    assert metrics.attack_success_rate(T([True]), T([False])) == 0.0
    assert metrics.prediction_change_rate(T([], dtype=torch.long), T([], dtype=torch.long)) == 0.0
    assert metrics.norm_stats(torch.empty(0)) == {"mean": None, "median": None}
    assert metrics.mean_or_none(torch.empty(0)) is None


def test_norm_statistics_and_confidences() -> None:
    s = metrics.norm_stats(T([0.1, 0.4, 0.2, 0.3]))
    assert s["mean"] == pytest.approx(0.25) and s["median"] == pytest.approx(0.2)  # the lower median
    assert metrics.mean_or_none(T([0.5, 1.0])) == pytest.approx(0.75)
    logits = T([[0.0, 0.0], [0.0, 2.0 * torch.log(T(3.0)).item()]])
    assert metrics.confidence(logits).tolist() == pytest.approx([0.5, 0.9])
    assert metrics.confidence(logits, T([0, 0])).tolist() == pytest.approx([0.5, 0.1])
    rates = metrics.rates(Y, CLEAN, ADV)
    assert rates == {
        "clean_accuracy": 4 / 6,
        "robust_accuracy": 3 / 6,
        "strict_attack_success_rate": 1 / 4,
        "prediction_change_rate": 3 / 8,
    }


def test_rate_accuracy_and_top_k_accuracy_on_known_answers() -> None:
    assert metrics.rate(T([True, False, True, True])) == 3 / 4
    assert metrics.rate(T([True, False, True, True]), T([True, True, False, False])) == 1 / 2
    assert metrics.rate(T([True]), T([False])) == 0.0 and metrics.rate(T([], dtype=torch.bool)) == 0.0
    # accuracy on any predictions, over the labelled samples: ADV is right on 0, 2, 3, 4 of the 6 labelled
    assert metrics.accuracy(Y, ADV) == 4 / 6
    assert metrics.accuracy(Y, CLEAN) == metrics.clean_accuracy(Y, CLEAN) == 4 / 6
    # the two most likely classes per sample: the label is among them for 0 (first), 1 (second), 3 (second)
    top2 = T([[0, 5], [7, 1], [0, 1], [9, 3], [1, 2], [3, 4], [0, 1], [7, 6]])
    assert metrics.top_k_accuracy(Y, top2) == 3 / 6
    assert metrics.top_k_accuracy(Y, top2[:, :1]) == metrics.accuracy(Y, top2[:, 0]) == 1 / 6
    assert metrics.top_k_accuracy(T([-1, -1]), T([[0, 1], [1, 0]])) == 0.0


def test_hit_target_marks_the_pairs_whose_prediction_is_their_target() -> None:
    pred, target = torch.tensor([3, 1, 4, 1, 5]), torch.tensor([3, 2, 4, 0, 5])
    assert metrics.hit_target(pred, target).tolist() == [True, False, True, False, True]
    assert metrics.rate(metrics.hit_target(pred, target)) == pytest.approx(3 / 5)


def test_robust_accuracy_curve_and_its_area_on_known_answers() -> None:
    """Five samples: distances 0.1, 0.3, inf (never broken), 0 (wrong clean), 0.25."""
    d = T([0.1, 0.3, float("inf"), 0.0, 0.25])
    correct = T([True, True, True, False, True])
    curve = metrics.robust_accuracy_curve(d, correct, T([0.0, 0.1, 0.2, 0.3, 1.0]))
    assert curve.dtype == torch.float64
    assert curve.tolist() == [4 / 5, 3 / 5, 3 / 5, 1 / 5, 1 / 5]  # d = eps is broken at eps
    assert metrics.robust_accuracy_area(d, correct, 0.5) == pytest.approx((0.1 + 0.3 + 0.5 + 0.25) / 5)
    assert metrics.robust_accuracy_area(d, correct, 0.2) == pytest.approx((0.1 + 0.2 + 0.2 + 0.2) / 5)
    eps = torch.linspace(0, 0.5, 50001, dtype=torch.float64)
    numeric = float(torch.trapezoid(metrics.robust_accuracy_curve(d, correct, eps), eps))
    assert metrics.robust_accuracy_area(d, correct, 0.5) == pytest.approx(numeric, abs=1e-4)
    empty = torch.empty(0)
    assert metrics.robust_accuracy_curve(empty, empty.bool(), T([0.0, 0.1])).tolist() == [0.0, 0.0]
    assert metrics.robust_accuracy_area(empty, empty.bool(), 0.5) == 0.0


# ---------------------------------------------------------------------- every caller uses these functions
class Moves(Attack):
    """Moves the sample whose code is ``k`` to the code ``table[k]`` (a hand-made attack outcome; it needs no
    gradient, and ``Code`` has none)."""

    white_box: ClassVar[bool] = False

    def __init__(self, table: dict[int, int]) -> None:
        object.__setattr__(self, "table", table)

    def _attack(self, oracle, x, goal, eps, init):  # noqa: ANN001, ANN202
        codes = (x[:, 0, 0, 0] * 10).round().long().tolist()
        x_adv = x.clone()
        x_adv[:, 0, 0, 0] = torch.tensor([self.table.get(c, c) for c in codes], dtype=x.dtype) / 10
        return x_adv, oracle.logits(x_adv, None)


def _coded(codes: list[int]) -> torch.Tensor:
    x = torch.zeros(len(codes), 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor(codes, dtype=torch.float32) / 10
    return x


def test_evaluate_the_study_and_transfer_share_the_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    y = T([0, 1, 2, 3, 4, 5])
    x = _coded([0, 1, 2, 3, 9, 9])  # clean predictions 0 1 2 3 9 9: four correct
    atk = Moves({1: 7, 2: 8})  # breaks samples 1 and 2 (unbounded: no eps)
    clean, adv = T([0, 1, 2, 3, 9, 9]), T([0, 7, 8, 3, 9, 9])
    cfg = EvalConfig(attacks=(atk,), sanity=False)
    rep = evaluate(Code(), (x, y), cfg)
    row = study.measure(Code(), study.Setting("none"), x, y, atk, x, None).row
    m = transfer_matrix([("a", Code())], [("a", Code())], x, y, atk)
    expected = metrics.rates(y, clean, adv)
    assert rep.robust_accuracy == row.robust_accuracy == expected["robust_accuracy"] == 2 / 6
    assert rep.clean_accuracy == row.clean_accuracy == expected["clean_accuracy"]
    assert (
        rep.strict_attack_success_rate == row.strict_attack_success_rate == m.success[0][0] == m.white_box[0] == 2 / 4
    )
    assert rep.prediction_change_rate == row.prediction_change_rate == expected["prediction_change_rate"]
    assert m.clean_accuracy[0] == expected["clean_accuracy"]
    # replace the definitions: every caller follows
    monkeypatch.setattr(metrics, "robust_accuracy", lambda y, c, a: -1.0)
    monkeypatch.setattr(metrics, "fooled", lambda y, c, a: torch.ones(len(y), dtype=torch.bool))
    assert evaluate(Code(), (x, y), cfg).robust_accuracy == -1.0
    row = study.measure(Code(), study.Setting("none"), x, y, atk, x, None).row
    assert row.robust_accuracy == -1.0 and row.strict_attack_success_rate == 6 / 4
    assert transfer_matrix([("a", Code())], [("a", Code())], x, y, atk).fooled == [[6]]


def test_evaluate_rates_are_the_metrics_of_its_adversarials(model, digits) -> None:
    """The same per-sample predictions give the same numbers whichever caller computes them."""
    x, y = digits
    rep = evaluate(model, (x, y), EvalConfig(attacks=(attacks.PGD(eps=0.1, steps=5),), keep_adversarials=True))
    with torch.no_grad():
        adv = model(rep.x_adv).argmax(1)
    assert rep.robust_accuracy == metrics.robust_accuracy(y, rep.samples.clean_pred, adv)
    assert rep.strict_attack_success_rate == metrics.strict_attack_success_rate(y, rep.samples.clean_pred, adv)
