"""The cascade: its report matches the adversarial examples it returns, batches are independent units (data
forms, resume and shards agree), early stopping saves gradients, and only successes inside the ball count."""

from __future__ import annotations

import pytest
import torch

from advlab import AdvlabError, attacks, evaluate, zoo
from advlab.evaluation import BatchResult, EvalConfig
from advlab.threat import distance
from advlab.work import Work


def test_metrics_match_the_adversarial_examples(model, digits) -> None:
    x, y = digits
    atk = attacks.PGD(eps=0.15, steps=10)
    rep = evaluate(model, (x, y), EvalConfig(attacks=(atk,), batch_size=32, keep_adversarials=True))
    assert rep.n == len(x) and rep.eps == pytest.approx(0.15) and rep.norm == "linf"
    with torch.no_grad():
        clean, adv = model(x).argmax(1), model(rep.x_adv).argmax(1)
    assert rep.clean_accuracy == pytest.approx(float((clean == y).float().mean()))
    # robust accuracy is recomputed from the returned worst-case inputs, which lie in the ball and the box
    assert rep.robust_accuracy == pytest.approx(float(((clean == y) & (adv == y)).float().mean()))
    assert (distance(rep.x_adv - x, "linf") <= 0.15 + 1e-6).all() and rep.x_adv.min() >= 0 and rep.x_adv.max() <= 1
    assert 0 < rep.robust_accuracy < rep.clean_accuracy
    assert rep.strict_attack_success_rate == pytest.approx(1 - rep.robust_accuracy / rep.clean_accuracy)
    assert rep.attack_success_rate == pytest.approx(rep.strict_attack_success_rate)  # only correct samples attacked
    assert rep.prediction_change_rate == pytest.approx(float((adv != clean).float().mean()))
    broken = rep.samples.broken
    assert torch.equal(rep.samples.adv_pred[broken], adv[broken])
    assert rep.norms["linf"]["median"] == pytest.approx(float(distance(rep.x_adv - x, "linf")[broken].median()))
    assert rep.gradient_evaluations == int(rep.samples.backwards.sum()) > 0
    assert rep.per_attack[0]["attack"] == "pgd" and rep.per_attack[0]["broken"] == int(
        (rep.samples.broken_by == 0).sum()
    )
    assert rep.per_attack[0]["robust_accuracy_after"] == pytest.approx(rep.robust_accuracy)
    assert rep.confidence["clean"] is not None and 0 < rep.confidence["adversarial"] <= 1
    assert len(rep.rows()) == len(x) and {"label", "adv_pred", "l2", "broken_by"} <= set(rep.rows()[0])


def test_unlabelled_samples_are_not_attacked_and_rates_are_over_the_labelled(model, digits) -> None:
    x, y = digits[0][:32], digits[1][:32].clone()
    cfg = EvalConfig(attacks=(attacks.PGD(eps=0.15, steps=10),), sanity=False)
    full = evaluate(model, (x, y), cfg)
    y[::2] = -1  # half unlabelled
    half = evaluate(model, (x, y), cfg)
    lab = y >= 0
    assert not half.samples.attacked[~lab].any() and not half.samples.broken[~lab].any()
    assert torch.equal(half.samples.clean_pred, full.samples.clean_pred)
    correct = (half.samples.clean_pred == y) & lab
    assert half.clean_accuracy == pytest.approx(float(correct.sum()) / 16) and 0 < half.clean_accuracy
    assert half.robust_accuracy == pytest.approx(float((correct & ~half.samples.broken).sum()) / 16)
    assert half.robust_accuracy < half.clean_accuracy
    assert half.prediction_change_rate == pytest.approx(float(half.samples.broken.sum()) / 32)  # over all N


def test_data_forms_and_resume_agree(model, digits) -> None:
    x, y = digits
    atk = (attacks.PGD(eps=0.1, steps=5),)
    cfg = EvalConfig(attacks=atk, batch_size=32)
    whole = evaluate(model, (x, y), cfg)
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)]
    assert evaluate(model, loader, EvalConfig(attacks=atk)).robust_accuracy == whole.robust_accuracy
    spec = evaluate(model, "digits:test", EvalConfig(attacks=atk, batch_size=32, limit=len(x)))
    assert spec.robust_accuracy == whole.robust_accuracy and spec.n == len(x)
    saved: list[BatchResult] = []
    evaluate(model, (x, y), cfg, work=Work(on_done=lambda i, part: saved.append(part)))
    seen: list[int] = []
    resumed = evaluate(
        model, (x, y), cfg, work=Work(done=saved[:2], progress=lambda it: (seen.append(b) or b for b in it))
    )
    assert seen == [2]  # only the batch not saved was evaluated again
    assert resumed.robust_accuracy == whole.robust_accuracy
    assert torch.equal(resumed.samples.broken_by, whole.samples.broken_by)


def test_early_stopping_reaches_full_budget_accuracy_with_a_third_of_the_gradients(model, digits) -> None:
    x, y = digits
    eps = 0.3  # an undefended model at a large eps: nearly everything breaks, most samples early
    full = attacks.PGD(eps=eps, steps=10)(model, x, y)
    with torch.no_grad():
        full_robust = float(((model(x).argmax(1) == y) & (full.prediction == y)).float().mean())
    rep = evaluate(model, (x, y), EvalConfig(attacks=(attacks.PGD(eps=eps, steps=10),), sanity=False))
    assert rep.robust_accuracy <= full_robust + 1 / len(x)
    assert rep.gradient_evaluations <= full.gradient_evaluations / 3


def test_successes_outside_the_threat_model_do_not_count(model, digits) -> None:
    x, y = digits[0][:32], digits[1][:32]
    rep = evaluate(model, (x, y), EvalConfig(attacks=(attacks.FGSM(eps=0.3),), eps=0.05, norm="linf", sanity=False))
    assert rep.robust_accuracy == rep.clean_accuracy and rep.per_attack[0]["broken"] == 0


def test_shards_of_batches_merge_to_the_whole_run(model, digits) -> None:
    x, y = digits
    cfg = EvalConfig(attacks=(attacks.PGD(eps=0.1, steps=5),), batch_size=16)
    whole = evaluate(model, (x, y), cfg)
    shards: dict[int, BatchResult] = {}
    for rank in range(2):  # two "ranks", round robin over the 5 batches
        part = evaluate(
            model, (x, y), cfg, work=Work(in_shard=lambda b, r=rank: b % 2 == r, on_done=shards.__setitem__)
        )
        assert part.n == 16 * (3 - rank)  # a shard's report covers its own batches
    assert sorted(shards) == [0, 1, 2, 3, 4]
    merged = evaluate(model, (x, y), cfg, work=Work(done={b: shards[b] for b in (4, 0, 3, 1, 2)}))
    untimed = lambda r: {**r.to_dict(), "seconds": 0, "per_attack": [{**a, "seconds": 0} for a in r.per_attack]}  # noqa: E731
    assert untimed(merged) == untimed(whole)
    assert torch.equal(merged.samples.broken_by, whole.samples.broken_by)
    with pytest.raises(AdvlabError, match="no batch to evaluate"):
        evaluate(model, (x, y), cfg, work=Work(in_shard=lambda b: False))


@pytest.mark.slow  # bfloat16 is emulated on CPUs without AVX512-BF16/AMX: ~150 s (Square on the survivors) here
def test_mixed_precision_attacks_count_only_successes_the_model_confirms(model, digits) -> None:
    x, y = digits
    amp = zoo.Autocast(model)
    assert amp.info is model.info and amp(x[:4]).dtype == torch.float32
    cfg = EvalConfig(attacks=(attacks.PGD(eps=0.1, steps=10),), eps=0.1, keep_adversarials=True)
    rep = evaluate(model, (x, y), cfg, attack_model=amp)
    broken = rep.samples.broken
    assert broken.any()
    with torch.no_grad():
        pred = model(rep.x_adv).argmax(1)  # float32: every counted success is real
    assert (pred[broken] != rep.samples.clean_pred[broken]).all() and torch.equal(
        rep.samples.adv_pred, torch.where(broken, pred, rep.samples.clean_pred)
    )
    assert (distance(rep.x_adv - x, "linf") <= 0.1 + 1e-6).all()
