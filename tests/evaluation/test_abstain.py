"""A model with an output that is no class (a detector's reject) is evaluated as AutoAttack counts: any decision but
the label at an attacked point is a success, the reject too; the number equals the one recomputed from x_adv by
that rule. Its binary task in the active test cannot be verified (the reject is computed after the head), and the
report says so instead of reporting a test that did not happen."""

from __future__ import annotations

import torch
from torch import nn

from advlab.evaluation import EvalConfig, evaluate
from advlab.zoo import traps

EPS = 0.1


def test_a_reject_at_an_attacked_point_counts_against_the_model(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits[0][:16], digits[1][:16]
    trap = traps.RejectOffGrid(twin).eval()
    reject = 10  # the 11th output: fires on inputs off the 1/16 grid
    with torch.no_grad():
        clean = trap(x).argmax(1)
    assert bool((clean == y).all())  # the test digits lie on the grid: no clean input is rejected
    rep = evaluate(trap, (x, y), EvalConfig(eps=EPS, keep_adversarials=True))
    assert rep.x_adv is not None and float((rep.x_adv - x).abs().amax()) <= EPS * (1 + 1e-5) + 1e-6
    with torch.no_grad():
        adv = trap(rep.x_adv).argmax(1)
    assert rep.robust_accuracy == float(((clean == y) & (adv == y)).double().mean())
    assert rep.robust_accuracy == 0.0 and bool((adv == reject).any())  # rejected points counted as successes
    # every planted witness lies off the grid (eps 0.1 is no multiple of 1/16): the model as called rejects it
    assert rep.active_test == {"found": 0, "tested": 0, "skipped": 8}
    assert "found 0 of 0 planted adversarial examples (8 samples skipped" in rep.format()
