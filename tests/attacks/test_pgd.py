"""FGSM / PGD / MI-FGSM: predictions really change, inside the ball and [0, 1], targets are hit."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from advlab import attacks
from advlab.threat import distance
from tests.attacks.helpers import RowByRow

EPS = 0.2  # on 8x8 digits in [0, 1]


def _check(res: attacks.AttackResult, model: torch.nn.Module, x: torch.Tensor, eps: float, norm: str) -> None:
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    assert (distance(res.x_adv - x, norm) <= eps + 1e-5).all()
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(pred, res.prediction)  # the reported logits are the model's on x_adv
    assert torch.equal(res.linf, distance(res.x_adv - x, "linf"))


@pytest.mark.parametrize(
    "atk",
    [
        attacks.FGSM(eps=EPS),
        attacks.PGD(eps=EPS, steps=10),
        attacks.PGD(eps=EPS, steps=10, early_stop=True),
        attacks.MIFGSM(eps=EPS, steps=10),
        attacks.PGD(eps=1.5, norm="l2", steps=10),
    ],
    ids=["fgsm", "pgd", "pgd-early", "mifgsm", "pgd-l2"],
)
def test_untargeted_changes_predictions_within_the_ball(atk: attacks.Attack, digits_model, digits_batch) -> None:
    x, y = digits_batch
    res = atk(digits_model, x, y)
    _check(res, digits_model, x, atk.eps, atk.norm)  # type: ignore[attr-defined]
    assert torch.equal(res.success, res.prediction != y)
    assert res.success_rate > 0.5  # clean accuracy on this batch is 100%


def test_pgd_beats_fgsm_and_early_stopping_is_as_strong_for_less(digits_model, digits_batch) -> None:
    x, y = digits_batch
    fgsm = attacks.FGSM(eps=0.1)(digits_model, x, y)
    full = attacks.PGD(eps=0.1, steps=10)(digits_model, x, y)
    assert full.success_rate > fgsm.success_rate
    assert full.gradient_evaluations == 10 * len(x) and int(full.forwards.sum()) == 11 * len(x)
    # early stopping computes the same iterates until a sample succeeds, so the same samples succeed: exactly so
    # where a row's arithmetic ignores the batch around it (row by row; a batch that shrinks as samples stop may
    # round differently on CPUs whose kernels depend on the batch size)
    rows, xs, ys = RowByRow(digits_model).eval(), x[:40], y[:40]
    whole = attacks.PGD(eps=0.1, steps=10)(rows, xs, ys)
    early = attacks.PGD(eps=0.1, steps=10, early_stop=True)(rows, xs, ys)
    assert torch.equal(early.success, whole.success) and whole.success.any()
    assert early.gradient_evaluations < whole.gradient_evaluations


def test_targeted_hits_the_target(digits_model, digits_batch) -> None:
    x, y = digits_batch
    keep = y != 3
    res = attacks.PGD(eps=0.3, steps=30, alpha=0.02)(digits_model, x[keep], y[keep], target=3)
    _check(res, digits_model, x[keep], 0.3, "linf")
    assert torch.equal(res.success, res.prediction == 3)
    assert res.success_rate > 0.9
    assert torch.equal(res.target, torch.full_like(y[keep], 3))


def test_random_and_least_likely_targets(digits_model, digits_batch) -> None:
    x, y = digits_batch
    atk = attacks.PGD(eps=0.3, steps=20, seed=4)
    r1 = atk(digits_model, x, y, target="random")
    r2 = atk(digits_model, x, y, target="random")
    assert (r1.target != y).all() and torch.equal(r1.target, r2.target) and torch.equal(r1.x_adv, r2.x_adv)
    ll = atk(digits_model, x, y, target="least-likely")
    with torch.no_grad():
        assert torch.equal(ll.target, digits_model(x).argmin(1))
    assert torch.equal(ll.success, ll.prediction == ll.target)


def test_eps_list_gives_a_monotone_curve_that_matches_single_runs(digits_model, digits_batch) -> None:
    x, y = digits_batch
    eps = [0.05, 0.1, 0.2]
    res = attacks.PGD(eps=eps, steps=10, early_stop=True)(digits_model, x, y)
    rates = [row["success_rate"] for row in res.curve]
    assert [row["eps"] for row in res.curve] == eps and rates == sorted(rates)
    assert res.success_rate == rates[-1]
    assert res.min_eps is not None and torch.equal(torch.isfinite(res.min_eps), res.success)
    for e in eps:  # warm-started larger eps is at least as strong as a cold run at that eps
        single = attacks.PGD(eps=e, steps=10, early_stop=True)(digits_model, x, y).success_rate
        row = next(r for r in res.curve if r["eps"] == e)
        assert row["success_rate"] >= single - 1 / len(x)
    _check(res, digits_model, x, 0.2, "linf")


def test_quantized_results_stay_adversarial_on_the_8bit_grid(digits_model, digits_batch) -> None:
    x, y = digits_batch
    x = (x * 255).round() / 255
    res = attacks.PGD(eps=8 * 16 / 255, steps=10, quantize=True)(digits_model, x, y)
    assert torch.allclose(res.x_adv * 255, (res.x_adv * 255).round(), atol=1e-4)
    _check(res, digits_model, x, 8 * 16 / 255, "linf")
    # reloading what a PNG would hold (uint8) gives the same, still adversarial predictions
    reloaded = (res.x_adv * 255).round().to(torch.uint8).float() / 255
    with torch.no_grad():
        assert torch.equal(digits_model(reloaded).argmax(1) != y, res.success)
    assert res.success_rate > 0.5


def test_model_flags_are_left_alone_and_seed_reproduces(digits_model, digits_batch) -> None:
    x, y = digits_batch
    digits_model.train()
    flags = [p.requires_grad for p in digits_model.parameters()]
    try:
        a = attacks.PGD(eps=0.1, steps=5, seed=7)(digits_model, x, y)
        assert digits_model.training
        assert [p.requires_grad for p in digits_model.parameters()] == flags
        assert all(p.grad is None for p in digits_model.parameters())
    finally:
        digits_model.eval()
    b = attacks.PGD(eps=0.1, steps=5, seed=7)(digits_model, x, y)
    c = attacks.PGD(eps=0.1, steps=5, seed=8)(digits_model, x, y)
    assert torch.equal(attacks.PGD(eps=0.1, steps=5, seed=7)(digits_model, x, y).x_adv, b.x_adv)
    assert not torch.equal(b.x_adv, c.x_adv)
    del a


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"eps": -0.1}, "eps must be positive"),
        ({"steps": 0}, "steps must be >= 1"),
        ({"norm": "l3"}, "norm must be"),
        ({"eps": 2.0}, "L-inf eps above 1"),
        ({"alpha": 0.0}, "alpha must be positive"),
        ({"loss": "nope"}, "unknown loss"),
    ],
)
def test_bad_settings_raise(kwargs: dict, match: str, digits_model, digits_batch) -> None:
    x, y = digits_batch
    with pytest.raises(ValueError, match=match):
        attacks.PGD(**kwargs)(digits_model, x[:2], y[:2])


def test_bad_inputs_raise(digits_model, digits_batch) -> None:
    x, y = digits_batch
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        attacks.PGD()(digits_model, x * 3, y)
    with pytest.raises(ValueError, match="target has"):
        attacks.PGD()(digits_model, x[:4], y[:4], target=torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="label for every sample"):
        attacks.PGD()(digits_model, x[:2], torch.tensor([1, -1]))


def _hand_pgd(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float, steps: int
) -> torch.Tensor:
    """The textbook loop from a zero start: x <- clip_[0,1](clip_ball(x + alpha * sign(grad CE)))."""
    xa = x.clone()
    for _ in range(steps):
        xa.requires_grad_(True)
        (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(xa), y, reduction="sum"), xa)
        xa = torch.minimum(torch.maximum(xa.detach() + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)
    return xa


def test_perturb_is_the_last_iterate_for_exactly_steps_gradients(digits_model, digits_batch) -> None:
    x, y = digits_batch
    atk = attacks.PGD(eps=0.1, alpha=0.025, steps=7, random_start=False)
    calls = []
    hook = digits_model.register_forward_hook(lambda *_: calls.append(1))
    try:
        x_adv = atk.perturb(digits_model, x, y)
    finally:
        hook.remove()
    assert len(calls) == 7  # no scoring forward
    assert torch.allclose(x_adv, _hand_pgd(digits_model, x, y, 0.1, 0.025, 7), atol=1e-6)
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert float((x_adv - x).abs().max()) <= 0.1 + 1e-6 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    with torch.no_grad():
        assert (digits_model(x_adv).argmax(1) != y).float().mean() > 0.3
    # the full call scores every iterate and keeps the best one: never less successful than the last iterate
    res = atk(digits_model, x, y)
    with torch.no_grad():
        last_success = digits_model(x_adv).argmax(1) != y
    assert (res.success | ~last_success).all()


@pytest.mark.parametrize(
    "atk",
    [
        attacks.PGD(eps=0.1, steps=5, early_stop=True),
        attacks.PGD(eps=0.1, steps=5, restarts=2),
        attacks.APGD(eps=0.1, steps=5),
        attacks.PGD(eps=0.1, steps=5, quantize=True),
    ],
    ids=["early-stop", "restarts", "apgd", "quantize"],
)
def test_perturb_falls_back_to_the_full_run_where_scoring_matters(
    atk: attacks.Attack, digits_model, digits_batch
) -> None:
    x, y = digits_batch
    assert torch.equal(atk.perturb(digits_model, x, y, target="random"), atk(digits_model, x, y, target="random").x_adv)


def test_targeted_pgd_with_dlr_hits_its_targets(digits_model, digits_batch) -> None:
    """Targeted DLR needs the true labels as well as the targets: PGD passes both, like every attack."""
    x, y = digits_batch
    t = (y + 1) % 10
    res = attacks.PGD(eps=0.3, steps=30, alpha=0.02, loss="dlr")(digits_model, x, y, target=t)
    _check(res, digits_model, x, 0.3, "linf")
    assert torch.equal(res.success, res.prediction == t) and torch.equal(res.target, t)
    assert res.success_rate > 0.9


@pytest.mark.parametrize(
    "atk",
    [
        attacks.PGD(eps=0.1, steps=5, seed=3),
        attacks.PGD(eps=1.0, norm="l2", steps=5, restarts=2, seed=3),
        attacks.APGD(eps=0.1, steps=5, seed=3),
    ],
    ids=["pgd", "pgd-l2-restarts", "apgd"],
)
def test_a_sample_gets_the_same_result_in_any_batch(atk: attacks.Attack, digits_model, digits_batch) -> None:
    """Random starts depend on (seed, restart, the image) only, so attacking a subset, a permutation or a smaller
    batch (what eval's clean-correct cascade and sharding do) gives every image the x_adv it gets in the full batch.

    Bit for bit that also needs the model to round each row the same in any batch, which batched CPU kernels
    need not do (oneDNN picks kernels per shape); the model runs row by row here, so the test checks advlab's part."""
    x, y = digits_batch[0][:60], digits_batch[1][:60]
    model = RowByRow(digits_model).eval()
    full = atk(model, x, y)
    rows = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:25]
    part = atk(model, x[rows], y[rows])
    assert torch.equal(part.x_adv, full.x_adv[rows])
    assert torch.equal(part.success, full.success[rows])
    other_seed = dataclasses.replace(atk, seed=4)(model, x[rows], y[rows])
    assert not torch.equal(other_seed.x_adv, part.x_adv)
