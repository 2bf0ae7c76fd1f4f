"""evaluate: the cascade's metrics are what they claim, the reliable preset is not fooled, the checks fire."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from advlab import AdvlabError, attacks, data, evaluate, zoo
from advlab.threat import distance


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return zoo.load("digits-cnn")


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.load("digits:test")
    return x[:80], y[:80]


class Scaled(nn.Module):
    """The same classifier with its logits multiplied: softmax saturates, CE gradients vanish in float32."""

    def __init__(self, net: nn.Module, factor: float) -> None:
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * self.factor


def test_metrics_match_the_adversarial_examples(model, digits) -> None:
    x, y = digits
    atk = attacks.PGD(eps=0.15, steps=10)
    rep = evaluate(model, (x, y), attacks=[atk], batch_size=32, keep_adversarials=True)
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
    assert rep.per_attack[0]["attack"] == "pgd" and rep.per_attack[0]["broken"] == int((rep.samples.broken_by == 0).sum())
    assert rep.confidence["clean"] is not None and 0 < rep.confidence["adversarial"] <= 1
    assert len(rep.rows()) == len(x) and {"label", "adv_pred", "l2", "broken_by"} <= set(rep.rows()[0])


def test_data_forms_and_resume_agree(model, digits) -> None:
    x, y = digits
    atk = [attacks.PGD(eps=0.1, steps=5)]
    whole = evaluate(model, (x, y), attacks=atk, batch_size=32)
    loader = [(x[i : i + 32], y[i : i + 32]) for i in range(0, len(x), 32)]
    assert evaluate(model, loader, attacks=atk).robust_accuracy == whole.robust_accuracy
    spec = evaluate(model, "digits:test", attacks=atk, batch_size=32, limit=len(x))
    assert spec.robust_accuracy == whole.robust_accuracy and spec.n == len(x)
    saved = []
    evaluate(model, (x, y), attacks=atk, batch_size=32, on_batch=lambda i, part: saved.append(part))
    resumed = evaluate(model, (x, y), attacks=atk, batch_size=32, done=saved[:2])
    assert resumed.robust_accuracy == whole.robust_accuracy
    assert torch.equal(resumed.samples.broken_by, whole.samples.broken_by)


def test_early_stopping_reaches_full_budget_accuracy_with_a_third_of_the_gradients(model, digits) -> None:
    x, y = digits
    eps = 0.3  # an undefended model at a large eps: nearly everything breaks, most samples early
    full = attacks.PGD(eps=eps, steps=10)(model, x, y)
    with torch.no_grad():
        full_robust = float(((model(x).argmax(1) == y) & (full.prediction == y)).float().mean())
    rep = evaluate(model, (x, y), attacks=[attacks.PGD(eps=eps, steps=10)], sanity=False)
    assert rep.robust_accuracy <= full_robust + 1 / len(x)
    assert rep.gradient_evaluations <= full.gradient_evaluations / 3


def test_reliable_preset_is_not_fooled_by_scaled_logits(model, digits) -> None:
    x, y = digits[0][:40], digits[1][:40]
    plain = evaluate(model, (x, y), preset="reliable", eps=0.1, norm="linf")
    scaled = Scaled(model, 1000.0).eval()
    fooled = evaluate(scaled, (x, y), attacks=[attacks.PGD(eps=0.1, steps=20)])
    reliable = evaluate(scaled, (x, y), preset="reliable", eps=0.1, norm="linf")
    assert reliable.clean_accuracy == plain.clean_accuracy
    assert fooled.robust_accuracy > plain.robust_accuracy + 0.2  # CE gradients vanish: PGD-CE sees nothing
    assert abs(reliable.robust_accuracy - plain.robust_accuracy) <= 1 / len(x)
    assert any("zero cross-entropy" in f or "all-zero" in f for f in reliable.flags)
    assert not any("all-zero" in f for f in plain.flags)
    assert any("random noise broke" in f for f in fooled.flags)  # the masking check catches the fooled attack


def test_flags_probabilities_and_randomness(model, digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    probs = nn.Sequential(model, nn.Softmax(dim=1)).eval()
    rep = evaluate(probs, (x, y), attacks=[attacks.FGSM(eps=0.1)])
    assert any("probabilities" in f for f in rep.flags)
    noisy = nn.Sequential(nn.Dropout(0.3), copy.deepcopy(model)).train()
    rep = evaluate(noisy, (x, y), attacks=[attacks.FGSM(eps=0.1)])
    assert any("not deterministic" in f for f in rep.flags) and any("training mode" in f for f in rep.flags)
    assert noisy.training  # left as it was found
    assert not evaluate(model, (x, y), attacks=[attacks.FGSM(eps=0.1)]).flags


def test_successes_outside_the_threat_model_do_not_count(model, digits) -> None:
    x, y = digits[0][:32], digits[1][:32]
    rep = evaluate(model, (x, y), attacks=[attacks.FGSM(eps=0.3)], eps=0.05, norm="linf", sanity=False)
    assert rep.robust_accuracy == rep.clean_accuracy and rep.per_attack[0]["broken"] == 0


def test_bad_arguments(model, digits) -> None:
    x, y = digits
    with pytest.raises(AdvlabError, match="not both"):
        evaluate(model, (x, y), attacks=[attacks.FGSM()], preset="reliable")
    with pytest.raises(AdvlabError, match="needs eps"):
        evaluate(model, (x, y), preset="reliable")
    with pytest.raises(AdvlabError, match="unknown preset"):
        evaluate(model, (x, y), preset="strong", eps=0.1)
    with pytest.raises(AdvlabError, match="positive"):
        evaluate(model, (x, y), preset="reliable", eps=-0.1)
    with pytest.raises(AdvlabError, match="steps"):
        evaluate(model, (x, y), attacks=[attacks.PGD(steps=0)])
    with pytest.raises(AdvlabError, match=r"\[0, 1\]"):
        evaluate(model, (x * 255, y), attacks=[attacks.FGSM()])


def test_shards_of_batches_merge_to_the_whole_run(model, digits) -> None:
    x, y = digits
    atk = [attacks.PGD(eps=0.1, steps=5)]
    whole = evaluate(model, (x, y), attacks=atk, batch_size=16)
    shards: dict[int, object] = {}
    for rank in range(2):  # two "ranks", round robin over the 5 batches
        part = evaluate(model, (x, y), attacks=atk, batch_size=16, units=lambda b, r=rank: b % 2 == r,
                        on_batch=lambda b, p: shards.__setitem__(b, p))  # fmt: skip
        assert part.n == 16 * (3 - rank)  # a shard's report covers its own batches
    assert sorted(shards) == [0, 1, 2, 3, 4]
    merged = evaluate(model, (x, y), attacks=atk, batch_size=16, done={b: shards[b] for b in (4, 0, 3, 1, 2)})
    untimed = lambda r: {**r.to_dict(), "seconds": 0, "per_attack": [{**a, "seconds": 0} for a in r.per_attack]}  # noqa: E731
    assert untimed(merged) == untimed(whole)
    assert torch.equal(merged.samples.broken_by, whole.samples.broken_by)
    with pytest.raises(AdvlabError, match="no batch to evaluate"):
        evaluate(model, (x, y), attacks=atk, batch_size=16, units=lambda b: False)


def test_mixed_precision_attacks_count_only_successes_the_model_confirms(model, digits) -> None:
    x, y = digits
    amp = zoo.Autocast(model)
    assert amp.info is model.info and amp(x[:4]).dtype == torch.float32
    rep = evaluate(model, (x, y), attacks=[attacks.PGD(eps=0.1, steps=10)], eps=0.1, attack_model=amp, keep_adversarials=True)
    broken = rep.samples.broken
    assert broken.any()
    with torch.no_grad():
        pred = model(rep.x_adv).argmax(1)  # float32: every counted success is real
    assert (pred[broken] != rep.samples.clean_pred[broken]).all() and torch.equal(rep.samples.adv_pred, torch.where(broken, pred, rep.samples.clean_pred))
    assert (distance(rep.x_adv - x, "linf") <= 0.1 + 1e-6).all()
