"""Indicators of attack failure (Pintor et al. 2022) fire on the failures they name, and their remedies repair the
number: a success seen on the path and not returned is kept, an optimization cut short runs longer, an attack whose
gradients cannot move the prediction even unbounded hands over to the gradient-free stage. On an honest model under
the reliable preset none fires."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from advlab import attacks
from advlab.attacks.base import Goal, Oracle
from advlab.evaluation import EvalConfig, evaluate, indicators

EPS = 0.1


@dataclass(frozen=True, kw_only=True)
class ForgetfulPGD(attacks.PGD):
    """PGD that walks its whole path, then returns the clean image: every success it finds is silent."""

    def _attack(self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None):  # type: ignore[no-untyped-def]
        super()._attack(oracle, x, goal, eps, init)
        return x, oracle.logits(x, None)


def _fired(rep, name: str) -> int:  # type: ignore[no-untyped-def]
    return next((i["samples"] for i in rep.indicators if i["indicator"] == name), 0)


def test_a_silent_success_is_found_and_kept(model: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits[0][:48], digits[1][:48]
    forgetful = ForgetfulPGD(eps=EPS, steps=10)
    plain = attacks.PGD(eps=EPS, steps=10)
    assert forgetful(model, x, y).success_rate == 0  # it returns nothing adversarial
    rep = evaluate(model, (x, y), EvalConfig(attacks=(forgetful,), keep_adversarials=True))
    honest = evaluate(model, (x, y), EvalConfig(attacks=(plain,)))
    by_pgd = int((rep.samples.broken_by == 0).sum())  # (the noise check after it may break a few more)
    assert by_pgd > 10 and _fired(rep, "silent_success") == by_pgd
    # the seen points break exactly what PGD's own returned points break (the same path, early stop on both); the
    # forgetful attack's unbroken samples end at their clean points, so the steps check then calls Square in
    assert by_pgd == next(a["broken"] for a in honest.per_attack if a["attack"] == "pgd")
    assert rep.robust_accuracy <= honest.robust_accuracy
    assert rep.x_adv is not None and float((rep.x_adv - x).abs().amax()) <= EPS * (1 + 1e-5) + 1e-6
    with torch.no_grad():
        recomputed = ((model(x).argmax(1) == y) & (model(rep.x_adv).argmax(1) == y)).double().mean()
    assert rep.robust_accuracy == pytest.approx(float(recomputed), abs=1e-12)


def test_an_optimization_cut_short_runs_again_longer(
    model: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """PGD with a step 40x too small climbs all the way: its loss is still rising when its 10 steps end. The
    indicator fires on the samples it left unbroken, and the longer run breaks some of them."""
    x, y = digits[0][:48], digits[1][:48]
    crawl = attacks.PGD(eps=EPS, steps=10, alpha=EPS / 100, random_start=False)
    rep = evaluate(model, (x, y), EvalConfig(attacks=(crawl,)))
    checks = rep.samples.checks
    assert _fired(rep, "incomplete_optimization") >= 10
    assert checks["longer_tried"] >= 10 and checks["longer_broke"] >= 1
    without = evaluate(model, (x, y), EvalConfig(attacks=(crawl,), sanity=False))
    assert rep.robust_accuracy < without.robust_accuracy


class Saturated(nn.Module):
    """The digits CNN with its logits times 1e4: the softmax saturates and the cross-entropy gradient is exactly zero
    in float32 on nearly every sample, so CE attacks see nothing, bounded or not."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) * 1e4


def test_an_unconstrained_failure_hands_over_to_the_gradient_free_stage(
    model: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits[0][:32], digits[1][:32]
    rep = evaluate(Saturated(model), (x, y), EvalConfig(attacks=(attacks.PGD(eps=EPS, steps=5),)))
    checks = rep.samples.checks
    assert _fired(rep, "unconstrained_failure") >= 1 and checks["unconstrained_failed"] >= 1
    assert checks["gradient_free_tried"] > 0 and checks["gradient_free_broke"] > 0
    assert rep.trust == "low" and any(w.startswith("unconstrained attack failure") for w in rep.warnings)


def test_no_indicator_fires_on_an_honest_model(model: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits[0][:64], digits[1][:64]
    rep = evaluate(model, (x, y), EvalConfig(eps=EPS))
    assert rep.indicators == [] and rep.trust == "high"
    assert int(rep.samples.indicators.sum()) == 0 and indicators.counts(rep.samples.indicators)["silent_success"] == 0
