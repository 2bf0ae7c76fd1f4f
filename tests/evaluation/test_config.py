"""EvalConfig and evaluate's signature: bad settings fail with a clear message, early_stop and seed are
explicit (applied, or left as given with None), and the report shows the attacks as they really ran."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from advlab import AdvlabError, attacks, evaluate
from advlab.evaluation import EvalConfig


def test_evaluate_takes_at_most_six_parameters() -> None:
    params = inspect.signature(evaluate).parameters
    assert len(params) <= 6
    assert list(params)[:3] == ["model", "data", "config"]
    assert not {"device", "progress", "done", "on_batch", "units"} & set(params)


def test_bad_arguments(model, digits) -> None:
    x, y = digits
    with pytest.raises(AdvlabError, match="not both"):
        EvalConfig(attacks=(attacks.FGSM(),), preset="reliable")
    with pytest.raises(AdvlabError, match="needs eps"):
        evaluate(model, (x, y), EvalConfig(preset="reliable"))
    with pytest.raises(AdvlabError, match="unknown preset"):
        EvalConfig(preset="strong", eps=0.1)
    with pytest.raises(AdvlabError, match="positive"):
        EvalConfig(preset="reliable", eps=-0.1)
    with pytest.raises(AdvlabError, match="norm must be"):
        EvalConfig(eps=0.1, norm="l3")
    with pytest.raises(AdvlabError, match="batch_size"):
        EvalConfig(batch_size=0)
    with pytest.raises(AdvlabError, match="EvalConfig or a preset name"):
        evaluate(model, (x, y), 0.1)  # type: ignore[arg-type]
    with pytest.raises((AdvlabError, ValueError), match="steps"):
        evaluate(model, (x, y), EvalConfig(attacks=(attacks.PGD(steps=0),)))
    with pytest.raises(AdvlabError, match=r"\[0, 1\]"):
        evaluate(model, (x * 255, y), EvalConfig(attacks=(attacks.FGSM(),)))


def test_config_is_frozen_and_stores_attacks_as_a_tuple() -> None:
    cfg = EvalConfig(attacks=[attacks.FGSM(eps=0.1)], eps=0.1)  # type: ignore[arg-type]
    assert isinstance(cfg.attacks, tuple)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.eps = 0.2  # type: ignore[misc]
    assert dataclasses.replace(cfg, eps=0.2).eps == 0.2


def test_early_stop_and_seed_are_explicit(model, digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    pgd = attacks.PGD(eps=0.1, steps=5, early_stop=False, seed=7)
    kept = EvalConfig(attacks=(pgd,), early_stop=None).resolved_attacks()[0]
    assert kept.early_stop is False and kept.seed == 7  # None: each attack as given
    applied = EvalConfig(attacks=(pgd,), seed=3).resolved_attacks()[0]
    assert applied.early_stop is True and applied.seed == 3
    assert EvalConfig(preset="fast", eps=0.1).resolved_attacks()[0].seed == 0  # presets use 0
    rep = evaluate(model, (x, y), EvalConfig(attacks=(pgd,), early_stop=None, sanity=False))
    assert rep.per_attack[0]["config"] == repr(pgd)  # what really ran
    rep = evaluate(model, (x, y), EvalConfig(attacks=(pgd,), sanity=False))
    assert rep.per_attack[0]["config"] == repr(dataclasses.replace(pgd, early_stop=True))
    # stopping early spends fewer gradients
    full = evaluate(model, (x, y), EvalConfig(attacks=(pgd,), early_stop=False, sanity=False))
    assert rep.gradient_evaluations < full.gradient_evaluations
