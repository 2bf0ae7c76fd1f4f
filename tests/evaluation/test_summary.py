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
from advlab.evaluation import BatchResult, metrics
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
        indicators=torch.zeros(len(index), dtype=torch.long),
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


# ------------------------------------------------------------------------------------------------ the headline
def _outcomes(y: list[int], clean_pred: list[int], adv_pred: list[int]) -> BatchResult:
    """One batch of deterministic outcomes: the attack broke exactly the clean-correct samples whose adversarial
    prediction differs from the label."""
    n = len(y)
    broken = [int(c == t and a != t) for t, c, a in zip(y, clean_pred, adv_pred, strict=True)]
    robust = [int(c == t and a == t) for t, c, a in zip(y, clean_pred, adv_pred, strict=True)]
    return _batch(
        {
            "index": list(range(n)),
            "y": y,
            "clean_pred": clean_pred,
            "adv_pred": adv_pred,
            "clean_confidence": [0.9] * n,
            "adv_confidence": [0.6] * n,
            "attacked": [int(c == t) for t, c in zip(y, clean_pred, strict=True)],
            "broken_by": [0 if b else -1 for b in broken],
            "l0": [3 * b for b in broken],
            "l2": [0.5 * b for b in broken],
            "linf": [0.1 * b for b in broken],
            "forwards": [2] * n,
            "backwards": [1] * n,
            "expected_clean": [int(c == t) for t, c in zip(y, clean_pred, strict=True)],
            "expected_robust": robust,
        },
        [[sum(broken), sum(broken), n, n, 0.1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]],
        {"batches": 1.0},
    )


#: 10 samples of 3 classes (worked out by hand):
#:   class 0: 4 samples, all clean-correct, sample 3 broken   -> clean 4/4, robust 3/4
#:   class 1: 3 samples, sample 6 wrong clean, 4 and 5 broken -> clean 2/3, robust 0/3
#:   class 2: 3 samples, all clean-correct and robust         -> clean 3/3, robust 3/3
#: robust accuracy 6/10; its 95% Wilson interval, with p = 0.6, n = 10, z = 1.96:
#:   centre (0.6 + 0.19208) / 1.38416 = 0.57225, half 1.96 sqrt(0.024 + 0.00096) / 1.38416 = 0.25958
#:   -> [0.3127, 0.8318] (the textbook value for 6 of 10)
THREE = _outcomes(
    y=[0, 0, 0, 0, 1, 1, 1, 2, 2, 2],
    clean_pred=[0, 0, 0, 0, 1, 1, 2, 2, 2, 2],
    adv_pred=[0, 0, 0, 1, 0, 2, 2, 2, 2, 2],
)


def test_wilson_interval_matches_the_textbook_values() -> None:
    assert metrics.wilson_interval(6, 10) == pytest.approx((0.3127, 0.8318), abs=5e-5)
    assert metrics.wilson_interval(2, 5) == pytest.approx((0.1176, 0.7693), abs=5e-5)
    assert metrics.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=5e-5)  # Newcombe 1998, 0 of 10
    assert metrics.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=5e-5)
    assert metrics.wilson_interval(0, 0) == (0.0, 1.0)  # nothing measured: nothing known


def test_the_headline_is_robust_accuracy_with_its_interval_over_the_labelled_samples(report: EvalReport) -> None:
    h = report.headline
    assert (h.name, h.hits, h.samples) == ("robust accuracy", 2, 5)  # sample 5 is unlabelled: not counted
    assert h.value == report.robust_accuracy and (h.low, h.high) == pytest.approx((0.1176, 0.7693), abs=5e-5)
    lines = report.format().splitlines()
    assert lines[0] == (
        "robust accuracy 40.00% (95% interval 11.76% to 76.93%; 2 of 5 labelled samples, 6 in all), linf eps 0.1"
    )
    # the trust and why: the first warning up to its first ": ", and how many warnings the details hold
    assert lines[1] == "trust: low, because the model is not deterministic (2 warnings below)"
    assert report.to_dict()["headline"] == {
        "name": "robust accuracy",
        "value": report.robust_accuracy,
        "low": h.low,
        "high": h.high,
        "hits": 2,
        "samples": 5,
    }


def test_per_class_numbers_are_the_hand_counted_ones() -> None:
    report = summarize([THREE], ATTACKS[:1], 0.1, "linf", 0.0)
    assert report.trust == "high" and report.trust_reason == "every check passed"
    assert report.headline.hits == 6 and report.headline.samples == 10
    assert (report.headline.low, report.headline.high) == pytest.approx((0.3127, 0.8318), abs=5e-5)
    rows = report.per_class(["zero", "one", "two"])
    assert [(r["class"], r["name"], r["samples"]) for r in rows] == [(0, "zero", 4), (1, "one", 3), (2, "two", 3)]
    assert [r["clean_accuracy"] for r in rows] == pytest.approx([1.0, 2 / 3, 1.0])
    assert [r["robust_accuracy"] for r in rows] == pytest.approx([0.75, 0.0, 1.0])
    text = report.format(["zero", "one", "two"]).splitlines()
    assert text[0].startswith("robust accuracy 60.00% (95% interval 31.27% to 83.18%; 6 of 10 labelled samples), ")
    assert text[1] == "trust: high (every check passed)"
    # then per class (few classes: in class order), then the details as before
    assert text[2:7] == [
        "",
        "per class:",
        "  0 zero  robust  75.00%  clean 100.00%  n 4",
        "  1 one   robust   0.00%  clean  66.67%  n 3",
        "  2 two   robust 100.00%  clean 100.00%  n 3",
    ]
    assert text[7] == "" and text[8].startswith("10 samples, linf eps=0.1")


def test_with_many_classes_the_worst_come_first() -> None:
    """24 classes of 2 samples: class c is robust on both samples except classes 5 (one broken), 17 (both broken)
    and 20 (one wrong clean, one broken); the report shows the 10 worst, worst first (robust accuracy, then
    clean accuracy, then class order)."""
    y = [c for c in range(24) for _ in range(2)]
    clean = list(y)
    clean[40] = 0  # class 20's first sample is wrong on the clean input
    adv = list(clean)
    for i in (10, 34, 35, 41):  # class 5 once, class 17 twice, class 20 once
        adv[i] = (y[i] + 1) % 24
    report = summarize([_outcomes(y, clean, adv)], ATTACKS[:1], 0.1, "linf", 0.0)
    shown = report.classes_shown()
    assert len(shown) == 10 and len(report.per_class()) == 24
    assert [r["class"] for r in shown[:3]] == [20, 17, 5]  # robust 0 (clean 1/2, then clean 2/2), then 1/2
    assert [r["class"] for r in shown[3:]] == [0, 1, 2, 3, 4, 6, 7]  # the rest: all robust, in class order
    lines = report.class_lines()
    assert lines[0] == "per class, the 10 worst of 24:" and lines[1] == "  20  robust   0.00%  clean  50.00%  n 2"
    assert lines[2] == "  17  robust   0.00%  clean 100.00%  n 2"
