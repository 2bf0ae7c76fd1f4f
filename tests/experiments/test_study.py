"""The defense sweep (research note 003): metrics follow their definitions on hand-made cases, the statistics are right,
and on digits the table shows what the science implies."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from advlab import attacks, data, zoo
from advlab.attacks.base import Attack
from advlab.evaluation import metrics
from advlab.experiments import study
from advlab.experiments.study import Setting, mcnemar, wilson
from advlab.work import Work


class Code(nn.Module):
    """A classifier that reads its answer off the first pixel: class = round(10 * x[0, 0, 0])."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        k = (x[:, 0, 0, 0] * 10).round().long()
        return 10 * nn.functional.one_hot(k, 10).float() * self.scale


class Table(Attack):
    """Moves sample i to the image that codes ``codes[i]`` (a hand-made attack outcome)."""

    def __init__(self, codes: list[int]) -> None:
        object.__setattr__(self, "codes", codes)

    def _attack(self, oracle, x, goal, eps, init):  # noqa: ANN001, ANN202
        x_adv = x.clone()
        x_adv[:, 0, 0, 0] = torch.tensor(self.codes, dtype=x.dtype) / 10
        return x_adv, oracle.logits(x_adv, None)


def _coded(codes: list[int]) -> torch.Tensor:
    x = torch.zeros(len(codes), 1, 2, 2)
    x[:, 0, 0, 0] = torch.tensor(codes, dtype=torch.float32) / 10
    return x


def test_metrics_follow_their_definitions_on_a_hand_made_case() -> None:
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    x = _coded([0, 1, 2, 3, 9, 9])  # clean predictions: 4 correct
    atk = Table([0, 7, 8, 8, 4, 9])  # adversarial predictions
    dense_adv = _coded([0, 1, 5, 5, 5, 5])  # what the transfer attack hands over
    o = study.measure(Code(), Setting("none"), x, y, atk, dense_adv, None)
    r = o.row
    assert r.clean_accuracy == 4 / 6
    # the shared definition (advlab.evaluation.metrics): clean-correct AND adversarially correct; sample 4 was
    # wrong clean and became right, which is no robustness (the study counted it, 2/6, before issue 12)
    assert r.robust_accuracy == 1 / 6
    assert r.prediction_change_rate == 4 / 6  # samples 1, 2, 3, 4 changed prediction
    assert r.strict_attack_success_rate == 3 / 4  # of the 4 correct, 1, 2 and 3 became wrong
    assert r.transfer_robust_accuracy == 2 / 6  # samples 0 and 1 (5 stays right but was wrong clean)
    assert r.transfer_strict_attack_success_rate == 2 / 4  # correct 2 and 3 became wrong
    assert o.clean_correct.tolist() == [True, True, True, True, False, False]
    assert o.robust_correct.tolist() == [True, False, False, False, False, False]
    # the row's rates are the shared metrics of the same per-sample predictions
    clean, adv = torch.tensor([0, 1, 2, 3, 9, 9]), torch.tensor([0, 7, 8, 8, 4, 9])
    assert r.robust_accuracy == metrics.robust_accuracy(y, clean, adv)
    assert r.strict_attack_success_rate == metrics.strict_attack_success_rate(y, clean, adv)
    assert r.prediction_change_rate == metrics.prediction_change_rate(clean, adv)
    assert r.p_clean is None and r.changed_fraction == 0.0


def test_wilson_and_mcnemar() -> None:
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    a = torch.tensor([True, True, True, False])
    assert mcnemar(a, torch.tensor([False, False, True, False])) == pytest.approx(0.5)  # 2 discordant, both one way
    assert mcnemar(a, a) == 1.0
    many = torch.ones(30, dtype=torch.bool)
    none = torch.zeros(30, dtype=torch.bool)
    assert mcnemar(many, none) == pytest.approx(2 * 0.5**30)
    # symmetric, and balanced discordance gives p = 1
    b = torch.tensor([True, False] * 10)
    assert mcnemar(b, ~b) == 1.0 and mcnemar(a, b[:4]) == mcnemar(b[:4], a)


@pytest.fixture(scope="module")
def digits_sweep() -> list[study.Outcome]:
    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    x, y = x[:200], y[:200]
    settings = [
        Setting("e", 0.01),
        Setting("e", 0.05),
        Setting("e", 0.1),
        Setting("s", 20.0),
        Setting("s", 0.5),
        Setting("r", 1e-4),
        Setting("r", 1.0),
        Setting("quant", 8),
        Setting("quant", 2),
        Setting("clamp", 99.0),
    ]
    atk = attacks.PGD(eps=0.1, steps=10, seed=0)
    return study.sweep(model, x, y, settings, atk, calibration=x[:64])


def test_the_sweep_shows_what_the_science_implies(digits_sweep) -> None:
    rows = {o.row.label: o.row for o in digits_sweep}
    base = digits_sweep[0].row
    assert base.label == "undefended" and base.clean_accuracy > 0.95 and base.robust_accuracy < base.clean_accuracy
    # E-prune: the pruned ratio grows with E
    e = [rows[f"prune E={v:g}"].changed_fraction for v in (0.01, 0.05, 0.1)]
    assert 0 < e[0] < e[1] < e[2] < 1
    # a large enough S or R destroys clean accuracy; a mild one does not
    assert rows["prune S=0.5"].clean_accuracy < 0.5 and rows["prune S=20"].clean_accuracy >= base.clean_accuracy - 0.01
    assert (
        rows["prune R=1"].clean_accuracy < 0.5
        and abs(rows["prune R=0.0001"].clean_accuracy - base.clean_accuracy) <= 0.01
    )
    assert rows["prune R=1"].p_clean < 0.05 and rows["prune R=0.0001"].p_robust > 0.05
    # quantized models: the white-box gradient is not zero (straight-through), and 8 bits are close to float
    for bits in (8, 2):
        assert rows[f"quantize bits={bits}"].zero_gradient == 0.0
    assert abs(rows["quantize bits=8"].clean_accuracy - base.clean_accuracy) <= 0.02
    # every row: rates in [0, 1], intervals contain their estimate, the definitions tie together
    for r in rows.values():
        assert (
            r.clean_ci[0] <= r.clean_accuracy <= r.clean_ci[1] and r.robust_ci[0] <= r.robust_accuracy <= r.robust_ci[1]
        )
        assert 0 <= r.prediction_change_rate <= 1 and 0 <= r.strict_attack_success_rate <= 1
        assert r.robust_accuracy == pytest.approx(r.clean_accuracy * (1 - r.strict_attack_success_rate))
        assert r.p_robust is None or 0 <= r.p_robust <= 1


def test_tables_render(digits_sweep) -> None:
    md = study.markdown(digits_sweep, "digits-cnn")
    lines = md.strip().splitlines()
    assert lines[0].startswith("| Model | prune ratio | Clean Accuracy | Remnant Accuracy | Prediction Change Rate")
    assert len(lines) == 2 + len(digits_sweep) and "| digits-cnn |" in lines[2]
    rows = study.table(digits_sweep)
    assert {"clean_ci_low", "robust_ci_high", "p_robust", "changed_fraction"} <= set(rows[0])
    assert all(not math.isnan(r["clean_accuracy"]) for r in rows)


def _small_sweep() -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[Setting], Attack]:
    x, y = data.load("digits:test", limit=48)
    settings = [Setting("e", 0.01), Setting("s", 1.0), Setting("quant", 2)]
    return zoo.load("digits-cnn"), x, y, settings, attacks.PGD(eps=0.1, steps=3, seed=0)


def _untimed(outcomes: list[study.Outcome]) -> list[dict]:
    return [{**r, "seconds": 0} for r in study.table(outcomes)]


def test_a_resumed_sweep_measures_only_the_missing_rows_and_equals_a_full_run(monkeypatch: pytest.MonkeyPatch) -> None:
    model, x, y, settings, atk = _small_sweep()
    whole = study.sweep(model, x, y, settings, atk)
    saved: dict[int, study.Outcome] = {}

    def interrupted(i: int, o: study.Outcome) -> None:
        saved[i] = o
        if i == 1:
            raise KeyboardInterrupt  # the run dies after saving rows 0 and 1

    with pytest.raises(KeyboardInterrupt):
        study.sweep(model, x, y, settings, atk, work=Work(on_done=interrupted))
    assert sorted(saved) == [0, 1]
    measured: list[str] = []
    real = study.measure
    monkeypatch.setattr(
        study, "measure", lambda m, setting, *a, **k: measured.append(setting.label) or real(m, setting, *a, **k)
    )
    resumed = study.sweep(model, x, y, settings, atk, work=Work(done=saved, on_done=saved.__setitem__))
    assert measured == ["prune S=1", "quantize bits=2"]  # rows 0 and 1 were not measured again
    assert sorted(saved) == [0, 1, 2, 3] and _untimed(resumed) == _untimed(whole)
    assert all(torch.equal(a.robust_correct, b.robust_correct) for a, b in zip(resumed, whole, strict=True))


def test_shards_of_settings_merge_to_the_whole_sweep() -> None:
    model, x, y, settings, atk = _small_sweep()
    whole = study.sweep(model, x, y, settings, atk)
    odd = study.sweep(
        model, x, y, settings, atk, work=Work(in_shard=lambda i: i % 2 == 1)
    )  # a rank without the undefended row
    assert [o.row.label for o in odd] == ["prune E=0.01", "quantize bits=2"] and all(
        o.row.p_robust is None for o in odd
    )
    even = study.sweep(model, x, y, settings, atk, work=Work(in_shard=lambda i: i % 2 == 0))
    merged = study.sweep(model, x, y, settings, atk, work=Work(done={1: odd[0], 3: odd[1], 0: even[0], 2: even[1]}))
    assert _untimed(merged) == _untimed(whole) and merged[1].row.p_robust is not None  # completed at the merge


def test_default_settings_are_meaningful_sweeps() -> None:
    model = zoo.load("digits-cnn")
    for d in ("e", "s", "r", "quant", "clamp"):
        s = study.default_settings(model, d)
        assert len(s) >= 5 and len({x.value for x in s}) == len(s)
    e = [s.value for s in study.default_settings(model, "e")]
    assert e == sorted(e)


def test_the_machinery_runs_on_a_cifar_resnet18() -> None:
    """Random weights (none ship offline): the sweep must run end to end on a BatchNorm ResNet, every defense."""
    model = zoo.load("cifar-resnet18", pretrained=False)
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)  # labels = the model's own predictions, so clean accuracy is 100%
    settings = [Setting("e", 0.01), Setting("s", 3.0), Setting("r", 0.01), Setting("quant", 4), Setting("clamp", 99.0)]
    out = study.sweep(model, x, y, settings, attacks.PGD(eps=8 / 255, steps=2), calibration=x, batch_size=3)
    assert [o.row.defense for o in out] == ["none", "e", "s", "r", "quant", "clamp"]
    assert out[0].row.clean_accuracy == 1.0
    assert all(0 <= o.row.changed_fraction <= 1 and o.row.zero_gradient == 0.0 for o in out)
    assert 0 < out[1].row.changed_fraction < 1
