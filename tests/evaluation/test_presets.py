"""Presets: the ensembles they name, the seed they use, and evaluate() called with a preset name."""

from __future__ import annotations

import pytest
from torch import nn

from advlab import AdvlabError, attacks, evaluate
from advlab.evaluation import PRESETS, EvalConfig, default_eps, preset_attacks


def test_presets_are_apgd_ensembles_in_the_given_ball() -> None:
    reliable = preset_attacks("reliable", 0.1, "l2")
    assert [type(a) for a in reliable] == [attacks.APGD, attacks.APGDT] and all(a.steps == 100 for a in reliable)
    assert all(a.eps == 0.1 and a.norm == "l2" and a.seed == 0 for a in reliable)
    fast = preset_attacks("fast", 0.1, seed=3)
    assert [a.loss for a in fast] == ["ce", "dlr"] and all(a.steps == 20 and a.seed == 3 for a in fast)
    assert set(PRESETS) == {"reliable", "fast"}
    with pytest.raises(AdvlabError, match="unknown preset"):
        preset_attacks("strong", 0.1)


def test_evaluate_with_a_preset_name_runs_it_at_the_models_default_eps(model, digits) -> None:
    x, y = digits[0][:16], digits[1][:16]
    assert default_eps(model.info) == 0.1 and default_eps(None) is None
    by_name = evaluate(model, (x, y), "fast")
    by_config = evaluate(model, (x, y), EvalConfig(preset="fast", eps=0.1))
    assert by_name.eps == 0.1 and by_name.norm == "linf" and by_name.attacks == by_config.attacks and len(by_name.attacks) == 2
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
