"""Every attack, by name: robust accuracy strictly below clean on the digits CNN, outputs in the box (and
the ball for bounded ones), model flags and mode untouched, options it lacks refused."""

from __future__ import annotations

import pytest
import torch

from advlab import AdvlabError, attacks
from advlab.attacks.base import Attack
from advlab.attacks.catalog import attack_classes, make, options
from advlab.threat import distance

CHEAP = {  # a reasonable eps for 8x8 digits, budgets cut to keep the suite fast
    "fgsm": {"eps": 0.2},
    "pgd": {"eps": 0.15, "steps": 10},
    "mifgsm": {"eps": 0.15, "steps": 10},
    "apgd": {"eps": 0.15, "steps": 20},
    "apgd-t": {"eps": 0.15, "steps": 10, "n_targets": 2},
    "noise": {"eps": 0.3, "tries": 20},
    "cw": {"steps": 30, "binary_search_steps": 2, "lr": 0.05},
    "deepfool": {},
    "fab": {"steps": 20},
    "fab-t": {"eps": 0.2, "steps": 10, "n_targets": 2},
    "lbfgs": {"search_steps": 2, "steps": 10},
    "onehot": {"steps": 60},
    "fmn": {"steps": 30},
    "ddn": {"steps": 30},
    "nes": {"eps": 0.2, "max_queries": 100},
    "spsa": {"eps": 0.2, "max_queries": 100},
    "square": {"eps": 0.2, "max_queries": 100},
}


def test_the_catalog_holds_exactly_the_registered_attacks() -> None:
    exported = {c for c in vars(attacks).values() if isinstance(c, type) and issubclass(c, Attack) and c is not Attack}
    classes = attack_classes()
    assert set(classes.values()) == exported  # every attack advlab.attacks exports, and nothing else
    assert set(classes) == set(CHEAP)
    assert all(cls.name == name for name, cls in classes.items())


def test_configs_hold_only_what_they_use() -> None:
    assert options(attacks.FGSM) == {"eps", "norm", "loss", "seed", "quantize"}
    with pytest.raises(TypeError, match="steps"):
        attacks.FGSM(steps=5)  # type: ignore[call-arg]
    with pytest.raises(AdvlabError, match="fgsm takes no steps option"):
        make("fgsm", steps=5)
    assert "alpha" not in options(attacks.APGD) and "momentum" not in options(attacks.APGD)
    assert not issubclass(attacks.APGD, attacks.PGD) and issubclass(attacks.APGDT, attacks.APGD)
    assert "momentum" not in options(attacks.PGD) and "momentum" in options(attacks.MIFGSM)


def test_threat_norm_is_a_read_only_property_that_follows_norm() -> None:
    assert isinstance(vars(Attack)["threat_norm"], property)
    assert attacks.PGD(eps=1.0, norm="l2").threat_norm == "l2" and attacks.PGD().threat_norm == "linf"
    assert attacks.APGD(eps=0.5, norm="l1").threat_norm == "l1" and attacks.CW().threat_norm == "l2"
    with pytest.raises(AttributeError):
        attacks.PGD().threat_norm = "l2"  # type: ignore[misc]


def test_bad_settings_fail_at_construction() -> None:
    with pytest.raises(ValueError, match="steps must be >= 1"):
        attacks.PGD(steps=0)
    with pytest.raises(ValueError, match="rho must be in"):
        attacks.APGD(rho=0)


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
