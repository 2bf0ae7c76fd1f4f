"""advlab.evaluation.summary: two hand-made batches merged by ``summarize`` into the numbers worked out by hand.

The case (6 samples in batches of 4 and 2; attack 0 is PGD, attack 1 FGSM; ``-1`` = unlabelled):

    sample      0    1    2    3    4    5
    label       0    1    2    3    4   -1
    clean pred  0    1    2    0    4    3      C (clean-correct) = {0, 1, 2, 4}, L (labelled) = {0..4}
    attacked    T    T    T    F    T    F
    broken by   0    -    1    -    -    -      B = {0, 2}
    adv pred    5    1    7    0    4    3

clean accuracy |C|/|L| = 4/5, robust accuracy |C \\ B|/|L| = 2/5, attack success |B|/|attacked| = 2/4, strict
success 2/4, prediction change 2/6; robust after PGD 3/5, after FGSM 2/5.
"""

from __future__ import annotations

import re

import pytest
import torch

from advlab import AdvlabError, attacks
from advlab.evaluation import BatchResult
from advlab.evaluation.summary import EvalReport, summarize
from advlab.threat import eps_text

ATTACKS = [attacks.PGD(eps=0.1, steps=3), attacks.FGSM(eps=0.1)]
#: the integer columns of a BatchResult
LONG = ("y", "clean_pred", "adv_pred", "broken_by", "l0", "forwards", "backwards")


def _batch(cols: dict[str, list[float]], stats: list[list[float]], checks: dict[str, float]) -> BatchResult:
    """A BatchResult from per-sample columns (``index``: the samples' positions in the data), attack stats rows
    and checks; each sample's kept x_adv is filled with its index."""
    index = torch.tensor(cols.pop("index"), dtype=torch.float32)
    kinds = {"attacked": torch.bool} | dict.fromkeys(LONG, torch.long)
    t = {k: torch.tensor(v, dtype=kinds.get(k, torch.float32)) for k, v in cols.items()}
    return BatchResult(
        **t,
        attack_stats=torch.tensor(stats, dtype=torch.float64),
        always_robust=t["expected_robust"] > 0,
        checks=checks,
        x_adv=index.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone(),
    )


def two_batches() -> list[BatchResult]:
    first = _batch(
        {
            "index": [0, 1, 2, 3],
            "y": [0, 1, 2, 3],
            "clean_pred": [0, 1, 2, 0],
            "adv_pred": [5, 1, 7, 0],
            "clean_confidence": [0.9, 0.8, 0.7, 0.6],
            "adv_confidence": [0.5, 0.8, 0.3, 0.6],
            "attacked": [1, 1, 1, 0],
            "broken_by": [0, -1, 1, -1],
            "l0": [10, 0, 20, 0],
            "l2": [0.5, 0.0, 0.25, 0.0],
            "linf": [0.1, 0.0, 0.05, 0.0],
            "forwards": [12, 20, 15, 1],
            "backwards": [10, 20, 12, 0],
            "expected_clean": [1, 1, 1, 0],
            "expected_robust": [0, 1, 0, 0],
        },
        [[3, 1, 30, 10, 0.5], [2, 1, 20, 20, 0.25], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
        {"batches": 1.0, "probability_batches": 0.0, "randomness": 0.2},
    )
    second = _batch(
        {
            "index": [4, 5],
            "y": [4, -1],
            "clean_pred": [4, 3],
            "adv_pred": [4, 3],
            "clean_confidence": [0.6, 0.5],
            "adv_confidence": [0.4, 0.5],
            "attacked": [1, 0],
            "broken_by": [-1, -1],
            "l0": [0, 0],
            "l2": [0.0, 0.0],
            "linf": [0.0, 0.0],
            "forwards": [27, 1],
            "backwards": [22, 0],
            "expected_clean": [1, 0],
            "expected_robust": [1, 0],
        },
        [[1, 0, 10, 10, 0.25], [1, 0, 10, 10, 0.25], [1, 0, 5, 0, 0.125], [0, 0, 0, 0, 0]],
        {"batches": 1.0, "randomness": 0.1, "noise_tried": 1.0, "noise_broke": 0.0, "zero_gradient": 1.0}
        | {"gradient_checked": 2.0},
    )
    return [first, second]


@pytest.fixture
def report() -> EvalReport:
    return summarize(two_batches(), ATTACKS, 0.1, "linf", 1.23456)


def test_rates_are_the_hand_counted_ones(report: EvalReport) -> None:
    assert report.n == 6 and report.attacks == [a.label for a in ATTACKS]
    assert report.clean_accuracy == pytest.approx(4 / 5)
    assert report.robust_accuracy == pytest.approx(2 / 5)
    assert report.attack_success_rate == pytest.approx(2 / 4)
    assert report.strict_attack_success_rate == pytest.approx(2 / 4)
    assert report.prediction_change_rate == pytest.approx(2 / 6)
    assert report.seconds == 1.2346 and report.expected_accuracy is None  # no EOT: no expected accuracy


def test_norms_confidences_and_costs_come_from_the_right_samples(report: EvalReport) -> None:
    assert report.norms["linf"] == pytest.approx({"mean": 0.075, "median": 0.05})  # of the broken 0 and 2
    assert report.norms["l0"] == pytest.approx({"mean": 15.0, "median": 10.0})
    assert report.confidence["clean"] == pytest.approx((0.9 + 0.8 + 0.7 + 0.6) / 4)  # clean-correct 0, 1, 2, 4
    assert report.confidence["adversarial"] == pytest.approx((0.5 + 0.3) / 2)  # broken 0, 2
    assert report.confidence["robust"] == pytest.approx((0.8 + 0.4) / 2)  # robust 1, 4
    assert report.gradient_evaluations == 64 and report.forward_evaluations == 76
    assert report.backwards_per_image == pytest.approx(64 / 6) and report.forwards_per_image == pytest.approx(76 / 6)
    # the kept worst cases are concatenated in sample order
    assert report.x_adv is not None and report.x_adv[:, 0, 0, 0].tolist() == [0, 1, 2, 3, 4, 5]


def test_per_attack_rows_sum_the_batches_and_skip_what_did_not_run(report: EvalReport) -> None:
    rows = {r["attack"]: r for r in report.per_attack}
    assert list(rows) == [ATTACKS[0].label, ATTACKS[1].label, "noise-check"]  # the gradient-free stage never ran
    pgd, fgsm, noise = rows.values()
    assert (pgd["attacked"], pgd["broken"], pgd["forward_evaluations"], pgd["gradient_evaluations"]) == (4, 1, 40, 20)
    assert (fgsm["attacked"], fgsm["broken"], fgsm["seconds"]) == (3, 1, 0.5)
    assert pgd["robust_accuracy_after"] == pytest.approx(3 / 5) and fgsm["robust_accuracy_after"] == pytest.approx(
        2 / 5
    )
    assert noise["attacked"] == 1 and noise["robust_accuracy_after"] == pytest.approx(2 / 5)
    assert pgd["config"] == repr(ATTACKS[0])


def test_checks_merge_into_warnings_and_trust(report: EvalReport) -> None:
    checks = report.samples.checks
    assert checks["batches"] == 2 and checks["randomness"] == 0.2  # counts add up; randomness is the maximum
    d = report.diagnostics
    assert d["failed_gradient_checks"] == ["zero_gradient"] and d["checks"]["zero_gradient"] == 1.0
    assert len(report.warnings) == 2 and report.trust == "low" and d["warnings"] == report.warnings
    assert report.warnings[0].startswith(
        "the model is not deterministic: two passes on the same inputs differ by up to 0.2"
    )
    assert report.warnings[1].startswith("1 of 2 checked robust samples have an all-zero cross-entropy input gradient")
    assert "no gradient-free stage ran" in report.warnings[1] and report.adaptations == []
    out = report.to_dict()
    assert out["trust"] == "low" and out["warnings"] == report.warnings and "samples" not in out


def test_text_rows_and_robustbench_carry_the_same_numbers(report: EvalReport) -> None:
    text = report.format()
    assert re.search(r"robust accuracy +40\.00%  \(trust: low\)", text) and re.search(r"clean accuracy +80\.00%", text)
    assert text.count("\n  warning: ") == 2
    rows = report.rows(class_names=[str(k) for k in range(10)])
    assert [r["broken_by"] for r in rows] == [ATTACKS[0].label, "", ATTACKS[1].label, "", "", ""]
    assert rows[5]["label_name"] == "" and rows[2]["adv_name"] == "7" and rows[0]["linf"] == pytest.approx(0.1)
    entry = report.robustbench("toy", "digits")
    assert (entry["clean_acc"], entry["robust_acc"], entry["eps"], entry["n_examples"]) == (
        "80.00",
        "40.00",
        eps_text(0.1),
        6,
    )
    assert entry["diagnostics"] == {"warnings": report.warnings, "adaptations": []}


def test_nothing_to_summarize_is_refused() -> None:
    with pytest.raises(AdvlabError, match="nothing to evaluate"):
        summarize([], ATTACKS, 0.1, "linf", 0.0)
