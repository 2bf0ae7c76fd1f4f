"""The lecture's one-hot attack: targets hit with a confident softmax, lambda trades success for closeness, exact steps.

The targeted runs are chaotic: where the softmax is saturated the gradient of ||p - onehot(t)||^2 is rounding
noise that Adam scales to full steps, so the last bits of the CPU's floats decide some samples. Over 240
digits, targets y + 1 (mod 10), 100 steps, the outcome of 38 samples (16%) differed between five runs that
round differently (this CPU; ATEN_CPU_CAPABILITY=default; an NCHW model; weights x (1 + 1e-6 noise), two
draws); on 20 digits the success rate moved from 0.50 to 0.65. The untargeted outcomes did not move (0 of 240).
So rates are claimed on N = 60 digits, with margins of several samples over the spread of those five runs
(quoted per claim), and exact per-sample claims are checked where the arithmetic guarantees them.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import attacks
from tests.attacks.helpers import RowByRow, check_png_roundtrip, check_result

N = 60  # the rate claims' sample; 100 steps on 60 digits take about 2 s
STEPS = 100


@pytest.fixture(scope="module")
def batch(digits_batch) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_batch
    return x[:N], y[:N]


@pytest.fixture(scope="module")
def runner_up(digits_model, batch) -> torch.Tensor:
    """The clean second most likely class of each sample: the target the lecture's loss reaches reliably."""
    x, y = batch
    with torch.no_grad():
        return digits_model(x).scatter(1, y[:, None], float("-inf")).argmax(1)


@pytest.fixture(scope="module")
def reached(digits_model, batch, runner_up) -> attacks.AttackResult:
    x, y = batch
    return attacks.OneHot(steps=STEPS)(digits_model, x, y, target=runner_up)


@pytest.fixture(scope="module")
def shifted(digits_model, batch) -> attacks.AttackResult:
    """Target y + 1 (mod 10): often far down the model's ranking."""
    x, y = batch
    return attacks.OneHot(steps=STEPS)(digits_model, x, y, target=(y + 1) % 10)


def _check(res: attacks.AttackResult, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return check_result(res, model, x)


def _target_prob(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return p.gather(1, t[:, None]).squeeze(1)


def test_targeted_hits_the_target_with_a_confident_softmax(reached, digits_model, batch, runner_up) -> None:
    """Measured on the 60 digits over the five roundings: success 0.967-0.983, p(target) > 0.5 on 98-100% of the
    successes (one success in the 60 ends at p = 0.455 on one of them: "every success" would ride on the CPU)."""
    x, y = batch
    res = reached
    p = _check(res, digits_model, x)
    assert torch.equal(p.argmax(1) == runner_up, res.success)
    assert res.success_rate >= 0.9  # a no-op attack scores 0 here: the batch is all clean-correct
    # the loss pulls softmax onto onehot(t): the target is not just the argmax, it is probable
    assert float((_target_prob(p, runner_up)[res.success] > 0.5).float().mean()) >= 0.9
    assert torch.equal(res.forwards, torch.full_like(res.forwards, STEPS + 1)) and torch.equal(
        res.backwards, torch.full_like(res.backwards, STEPS)
    )


def test_distant_targets_are_often_out_of_reach(shifted, reached, digits_model, batch) -> None:
    """The squared distance between probability vectors saturates where the model is confident, so a target
    far down the ranking is missed more often than the runner-up (cross-entropy PGD hits all of them).
    Measured on the 60 digits over the five roundings: 0.683-0.700 against 0.967-0.983 for the runner-up."""
    x, y = batch
    t = (y + 1) % 10
    p = _check(shifted, digits_model, x)
    assert torch.equal(p.argmax(1) == t, shifted.success)
    assert 0.5 <= shifted.success_rate <= reached.success_rate - 0.1  # margins of 11 and 10 samples
    assert float((_target_prob(p, t)[shifted.success] > 0.5).float().mean()) >= 0.9  # measured 0.976-1.0


def test_larger_lambda_gives_smaller_perturbations(shifted, digits_model, batch) -> None:
    """Per sample, on the targets both settings reach: lam = 0.1 lands closer than lam = 0.01 on 92-100% of them
    (25-29 such digits over the five roundings; 80-93% on each block of 120 of 240 digits). The medians of the
    two sets differ by only 13-21%, too little to claim on a few samples; the paired comparison is the claim."""
    x, y = batch
    close = attacks.OneHot(steps=STEPS, lam=0.1)(digits_model, x, y, target=(y + 1) % 10)  # shifted has lam = 0.01
    both = close.success & shifted.success
    assert int(both.sum()) >= N // 4  # enough common successes to compare: measured 25-29
    assert float((close.l2[both] < shifted.l2[both]).float().mean()) >= 0.75  # lam ignored would give 0
    assert close.success_rate < shifted.success_rate  # the price: fewer targets reached (measured 8-14 fewer)


def test_untargeted_adam_succeeds_where_plain_descent_stalls(digits_model, batch) -> None:
    """Measured 0.85 against 0.267 on the 60 digits, the same under all five roundings (0.80-0.88 against
    0.12-0.38 on any block of 60 of 240 digits)."""
    x, y = batch
    adam = attacks.OneHot(steps=STEPS)(digits_model, x, y)
    plain = attacks.OneHot(steps=STEPS, optimizer="gd")(digits_model, x, y)
    for res in (adam, plain):
        _check(res, digits_model, x)
        assert torch.equal(res.success, res.prediction != y)
    assert adam.success_rate >= 0.7
    assert adam.success_rate > plain.success_rate + 0.3


def test_early_stop_is_cheaper_and_full_budget_is_closer(digits_model, batch) -> None:
    """Until a sample's first success, early stopping computes the same iterates as the full run, so the same
    samples succeed and the full run's best point is never farther than the first success. That holds exactly
    when each sample's arithmetic does not depend on the batch around it: the model runs row by row here (on
    the batched model a CPU whose kernels round a shrinking batch differently gave 0.60 against 0.75)."""
    x, y = batch[0][:20], batch[1][:20]
    model, t = RowByRow(digits_model).eval(), (y + 1) % 10
    full = attacks.OneHot(steps=STEPS)(model, x, y, target=t)
    early = attacks.OneHot(steps=STEPS, early_stop=True)(model, x, y, target=t)
    _check(early, digits_model, x)
    assert torch.equal(early.success, full.success)
    s = early.success
    assert int(s.sum()) >= 5  # something to compare (measured 11-15 of 20 over six roundings: see below)
    assert (full.l2[s] <= early.l2[s] + 1e-6).all()
    # the first success is far out: the ratio was 0.30-0.42 here over six roundings (this CPU,
    # ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=SSE41, three weight perturbations), 0.28-0.41 on blocks of
    # 20 of 400 digits (batched)
    assert float(full.l2[s].median()) < 0.75 * float(early.l2[s].median())
    assert early.gradient_evaluations < full.gradient_evaluations
    assert (early.backwards <= STEPS).all() and (early.backwards[~s] == STEPS).all()  # failures spend the budget
    assert float(early.backwards[s].float().median()) < STEPS / 2  # most stop early: measured median 5-9


@pytest.mark.parametrize("targeted", [True, False])
def test_plain_descent_takes_exactly_the_gradient_steps_of_the_objective(targeted: bool) -> None:
    """Two GD steps of the attack equal two steps x <- x - alpha dL/dx with dL/dx from autograd on L itself."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([3.0, 0.0, -3.0]))  # class 0 leads: two small steps cannot reach class 2
    x0 = torch.rand(2, 1, 2, 2) * 0.4 + 0.3  # interior: no clipping in two small steps
    y = torch.zeros(2, dtype=torch.long)
    t = torch.full((2,), 2)
    lam, alpha = 0.5, 0.2

    def objective(x: torch.Tensor) -> torch.Tensor:
        p = model(x).softmax(1)
        d = 0.5 * (p - nn.functional.one_hot(t if targeted else y, 3).float()).pow(2).sum(1)
        return (d if targeted else -d) + lam * (x - x0).flatten(1).pow(2).sum(1)

    xs = [x0]
    for _ in range(2):
        xg = xs[-1].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(objective(xg).sum(), xg)
        xs.append((xs[-1] - alpha * g).detach())
    with torch.no_grad():
        assert (objective(xs[2]) < objective(xs[1])).all() and (objective(xs[1]) < objective(xs[0])).all()
    atk = attacks.OneHot(optimizer="gd", steps=2, lam=lam, alpha=alpha)
    res = atk(model, x0, y, target=t if targeted else None)
    assert not res.success.any()
    assert torch.allclose(res.x_adv, xs[2], atol=1e-6)  # the lowest L of the three points
    assert res.forwards.tolist() == [3, 3] and res.backwards.tolist() == [2, 2]


def test_quantized_results_stay_adversarial_on_the_8bit_grid(digits_model, batch, runner_up) -> None:
    x, y = batch
    x, y, t = (x[:20] * 255).round() / 255, y[:20], runner_up[:20]
    res = attacks.OneHot(steps=STEPS, quantize=True)(digits_model, x, y, target=t)
    _check(res, digits_model, x)
    check_png_roundtrip(res, digits_model, t, targeted=True)
    assert res.success_rate >= 0.8  # measured 0.95 under all five roundings (0.97-0.99 on 240 digits)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"lam": -1.0}, "lam must be >= 0"),
        ({"alpha": 0.0}, "alpha must be positive"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"optimizer": "sgd"}, "optimizer must be one of"),
    ],
)
def test_bad_settings_raise(kwargs: dict, match: str, digits_model, batch) -> None:
    x, y = batch
    with pytest.raises(ValueError, match=match):
        attacks.OneHot(**kwargs)(digits_model, x[:2], y[:2])
