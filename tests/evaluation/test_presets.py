"""Presets: the ensembles they name, the seed they use, and evaluate() called with a preset name."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import AdvlabError, attacks, evaluate
from advlab.evaluation import PRESETS, EvalConfig, default_eps, preset_attacks
from advlab.threat import distance


def test_presets_are_apgd_ensembles_in_the_given_ball() -> None:
    reliable = preset_attacks("reliable", 0.1, "l2")
    assert [type(a) for a in reliable] == [attacks.APGD, attacks.APGDT] and [a.label for a in reliable] == [
        "apgd-ce",
        "apgd-t",
    ]
    assert reliable[1].targets == "malt" and reliable[1].n_targets < 9  # MALT's closest boundaries, not AutoAttack's 9
    assert all(a.eps == 0.1 and a.norm == "l2" and a.seed == 0 for a in reliable)
    fast = preset_attacks("fast", 0.1, seed=3)
    assert [a.label for a in fast] == ["apgd-ce", "apgd-dlr"] and all(a.steps == 20 and a.seed == 3 for a in fast)
    assert set(PRESETS) == {"reliable", "fast", "autoattack"}
    with pytest.raises(AdvlabError, match="unknown preset"):
        preset_attacks("strong", 0.1)


def test_reports_name_apgd_by_its_loss(model, digits) -> None:
    rep = evaluate(model, (digits[0][:12], digits[1][:12]), EvalConfig(preset="fast", eps=0.1, sanity=False))
    assert rep.attacks == ["apgd-ce", "apgd-dlr"] and [a["attack"] for a in rep.per_attack] == ["apgd-ce", "apgd-dlr"]


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_reliable_is_at_least_as_strong_as_full_apgd_ce(model, digits, norm: str) -> None:
    x, y = digits[0][:48], digits[1][:48]
    eps = 0.1 if norm == "linf" else 0.5
    reliable = evaluate(
        model, (x, y), EvalConfig(preset="reliable", eps=eps, norm=norm, sanity=False, keep_adversarials=True)
    )
    ce = evaluate(
        model,
        (x, y),
        EvalConfig(attacks=(attacks.APGD(eps=eps, norm=norm, steps=100),), eps=eps, norm=norm, sanity=False),
    )
    assert reliable.robust_accuracy <= ce.robust_accuracy < reliable.clean_accuracy
    broken = reliable.samples.broken
    assert reliable.per_attack[1]["broken"] > 0  # the MALT stage breaks digits that APGD-CE left unbroken
    with torch.no_grad():
        assert torch.equal(
            model(reliable.x_adv[broken]).argmax(1) != y[broken], torch.ones(int(broken.sum()), dtype=torch.bool)
        )
    assert (distance(reliable.x_adv - x, norm) <= eps * (1 + 1e-5) + 1e-6).all()


def test_evaluate_with_a_preset_name_runs_it_at_the_models_default_eps(model, digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    assert default_eps(model.info) == 0.1 and default_eps(None) is None
    by_name = evaluate(model, (x, y), "fast")
    by_config = evaluate(model, (x, y), EvalConfig(preset="fast", eps=0.1))
    assert (
        by_name.eps == 0.1
        and by_name.norm == "linf"
        and by_name.attacks == by_config.attacks
        and len(by_name.attacks) == 2
    )
    assert by_name.robust_accuracy == by_config.robust_accuracy < by_name.clean_accuracy
    with pytest.raises(AdvlabError, match="needs eps"):
        evaluate(_Bare(model), (x, y), "fast")  # no zoo info: no default eps


class _Bare(nn.Module):
    """The model without its ``info`` (as a user's own module would be)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.net(x)


def test_autoattack_preset_is_autoattacks_standard_version() -> None:
    """APGD-CE, APGD-T (DLR, 9 most likely wrong classes), FAB-T (9 targets), Square (5,000 queries, p_init 0.8), 100
    iterations each, one run each, in that order; L1 (AutoAttack's own L1 version) is refused with one line."""
    for norm in ("linf", "l2"):
        aa = preset_attacks("autoattack", 0.3, norm, seed=4)
        assert [type(a) for a in aa] == [attacks.APGD, attacks.APGDT, attacks.FABT, attacks.Square]
        assert [a.label for a in aa] == ["apgd-ce", "apgd-t", "fab-t", "square"]
        ce, apgdt, fabt, square = aa
        assert isinstance(ce, attacks.APGD) and isinstance(apgdt, attacks.APGDT) and isinstance(fabt, attacks.FABT)
        assert isinstance(square, attacks.Square)
        assert ce.steps == apgdt.steps == fabt.steps == 100 and ce.restarts == apgdt.restarts == fabt.restarts == 1
        assert ce.rho == apgdt.rho == 0.75 and apgdt.loss == "dlr" and apgdt.targets == "logits"
        assert apgdt.n_targets == fabt.n_targets == 9
        assert (fabt.alpha_max, fabt.eta, fabt.beta) == (0.1, 1.05, 0.9)
        assert square.max_queries == 5000 and square.p_init == 0.8
        assert all(a.eps == 0.3 and a.norm == norm and a.seed == 4 for a in aa)  # type: ignore[attr-defined]
    with pytest.raises(AdvlabError, match="L1 version is not implemented"):
        preset_attacks("autoattack", 10.0, "l1")
    with pytest.raises(AdvlabError, match="L1 version is not implemented"):
        EvalConfig(preset="autoattack", eps=10.0, norm="l1").resolved_attacks()


@pytest.mark.slow
def test_autoattack_preset_breaks_within_the_ball_in_order(model, digits) -> None:
    """The cascade runs the four attacks in order, each on what the earlier ones left; every broken digit is
    misclassified inside the ball. At L-inf 0.15 APGD-CE leaves few digits for the costly later stages (still ~35 s
    of one core: 9 x 100 APGD-T and FAB-T iterations and 5,000 Square queries per survivor)."""
    x, y = digits[0][:24], digits[1][:24]
    rep = evaluate(
        model, (x, y), EvalConfig(preset="autoattack", eps=0.15, norm="linf", sanity=False, keep_adversarials=True)
    )
    assert rep.attacks == ["apgd-ce", "apgd-t", "fab-t", "square"]
    attacked = [a["attacked"] for a in rep.per_attack]
    broken = [a["broken"] for a in rep.per_attack]
    assert attacked[0] >= 20 and all(attacked[i + 1] == attacked[i] - broken[i] for i in range(3))
    assert rep.robust_accuracy < rep.clean_accuracy
    hit = rep.samples.broken
    with torch.no_grad():
        assert (model(rep.x_adv[hit]).argmax(1) != y[hit]).all()
    assert (distance(rep.x_adv - x, "linf") <= 0.15 * (1 + 1e-5) + 1e-6).all()
