"""What a prototype run measures: the Inception-Score-style number, judges, and probabilities on any model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import prototypes


def test_inception_score_and_judges() -> None:
    eye = torch.eye(10)
    assert prototypes.inception_score(eye) == pytest.approx(10, rel=1e-6)
    assert prototypes.inception_score(eye[[3] * 10]) == pytest.approx(1, rel=1e-6)
    assert prototypes.inception_score(torch.full((5, 10), 0.1)) == pytest.approx(1, rel=1e-6)
    v = prototypes.judge(eye[[0, 1, 2, 2]], torch.tensor([0, 1, 2, 3]))
    assert v["top1_agreement"] == 0.75 and v["target_probability_mean"] == 0.75


def test_class_probabilities_on_a_parameter_free_model() -> None:
    """The device comes from advlab.device.device_of: a model without parameters (here: the 4 pixels are
    the logits) is judged on the CPU instead of raising StopIteration."""
    x = torch.rand(5, 1, 2, 2)
    p = prototypes.class_probabilities(nn.Flatten(), x, batch_size=2)
    assert p.shape == (5, 4) and torch.allclose(p, x.flatten(1).softmax(1))
    assert torch.allclose(p.sum(1), torch.ones(5))


def test_verdicts_of_the_model_each_judge_and_their_ensemble() -> None:
    """Two judges that see the 4 pixels as logits, one of them negated: each judge's verdict is its own
    probabilities' :func:`judge`, and the ensemble judges the mean of their probabilities."""
    x = torch.tensor([[9.0, 0, 0, 0], [0, 9.0, 0, 0], [0, 0, 0, 9.0]]).view(3, 1, 2, 2) / 9
    target = torch.tensor([0, 1, 2])
    model, negated = nn.Flatten(), nn.Sequential(nn.Flatten(), nn.Linear(4, 4, bias=False))
    with torch.no_grad():
        negated[1].weight.copy_(-torch.eye(4))
    v = prototypes.verdicts(x, target, model, [("same", model), ("negated", negated)])
    assert v["self"]["top1_agreement"] == pytest.approx(2 / 3) and v["judges"]["same"] == v["self"]
    assert v["judges"]["negated"]["top1_agreement"] == 0.0  # its top-1 is never the bright pixel
    p = (x.flatten(1).softmax(1) + (-x.flatten(1)).softmax(1)) / 2
    assert v["judge_ensemble"] == prototypes.judge(p, target)
    assert "judge_ensemble" not in prototypes.verdicts(x, target, model, [("same", model)])


def test_trajectory_rows_hold_every_recorded_step_of_every_pair(digits: nn.Module) -> None:
    run = prototypes.generate(digits, "blank:gray", [3, 7], prototypes.Config(steps=5))
    ev = run.evolution
    rows = prototypes.trajectory_rows(ev, run.starts.names, digits.info.class_names)
    assert len(rows) == int((ev.stopped + 1).sum())
    last = [r for r in rows if r["pair"] == 1][-1]
    assert (last["target"], last["step"]) == (7, int(ev.stopped[1]))
    assert last["target_probability"] == round(float(ev.prob[1, int(ev.stopped[1])]), 6)
