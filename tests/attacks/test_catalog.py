"""Every attack, by name: robust accuracy strictly below clean on the digits CNN, outputs in the box (and
the ball for bounded ones), model flags and mode untouched, options it lacks refused."""

from __future__ import annotations

import pytest
import torch

from advlab import AdvlabError
from advlab.attacks.catalog import CLASS_NAMES, attack_classes, make
from advlab.threat import distance

CHEAP = {  # a reasonable eps for 8x8 digits, budgets cut to keep the suite fast
    "fgsm": {"eps": 0.2}, "pgd": {"eps": 0.15, "steps": 10}, "mifgsm": {"eps": 0.15, "steps": 10},
    "apgd": {"eps": 0.15, "steps": 20}, "apgd-t": {"eps": 0.15, "steps": 10, "n_targets": 2},
    "noise": {"eps": 0.3, "tries": 20}, "cw": {"steps": 30, "binary_search_steps": 2, "lr": 0.05},
    "deepfool": {}, "lbfgs": {"search_steps": 2, "steps": 10}, "onehot": {"steps": 60},
    "nes": {"eps": 0.2, "max_queries": 100}, "spsa": {"eps": 0.2, "max_queries": 100}, "square": {"eps": 0.2, "max_queries": 100},
}  # fmt: skip


def test_the_catalog_holds_every_attack() -> None:
    assert len(attack_classes()) == len(CLASS_NAMES) == len(CHEAP)
    assert set(attack_classes()) == set(CHEAP)


@pytest.mark.parametrize("name", sorted(CHEAP))
def test_every_attack_lowers_accuracy_inside_its_threat_model(name: str, digits_model, digits_batch) -> None:
    x, y = digits_batch[0][:40], digits_batch[1][:40]
    atk = make(name, **CHEAP[name])
    flags = [p.requires_grad for p in digits_model.parameters()]
    res = atk(digits_model, x, y)
    assert [p.requires_grad for p in digits_model.parameters()] == flags and not digits_model.training
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    if "eps" in CHEAP[name]:
        assert (distance(res.x_adv - x, atk.threat_norm) <= CHEAP[name]["eps"] + 1e-6).all()
    with torch.no_grad():
        adv = digits_model(res.x_adv).argmax(1)
    assert torch.equal(adv, res.prediction) and torch.equal(res.success, adv != y)
    robust = float((adv == y).float().mean())  # the batch is all clean-correct: clean accuracy 1
    assert robust < 1.0
    assert (res.forwards >= 1).all()


def test_options_an_attack_lacks_are_refused() -> None:
    with pytest.raises(AdvlabError, match="deepfool takes no alpha"):
        make("deepfool", alpha=0.1)
    with pytest.raises(AdvlabError, match="cw is not bounded by an eps-ball"):
        make("cw", eps=0.1)
    with pytest.raises(AdvlabError, match="cw is an L2 attack"):
        make("cw", norm="linf")
    with pytest.raises(AdvlabError, match="unknown attack"):
        make("foolbox")
    with pytest.raises(AdvlabError, match="steps"):
        make("pgd", steps=0)
