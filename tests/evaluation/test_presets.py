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
    assert set(PRESETS) == {"reliable", "fast"}
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
