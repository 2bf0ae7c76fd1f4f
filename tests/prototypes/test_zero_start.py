"""A start where the model's input gradient is exactly zero (a dead region: every ReLU off) is no convergence:
the pair cannot move, the summary says so and advises a noise start, which does move."""

from __future__ import annotations

import torch
from torch import nn

from advlab.prototypes import Config
from advlab.prototypes.evolve import evolve
from advlab.prototypes.measures import ZERO_START_ADVICE, summarize


class DeadBelow(nn.Module):
    """Three logits of relu(x - 0.6): every unit is off (and its gradient exactly zero) on any image <= 0.6, so
    from gray (0.5) the logits are all zero and so is d CE / dx; a pixel above 0.6 switches a unit on."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(16, 3, bias=False)
        with torch.no_grad():
            self.head.weight.copy_(torch.linspace(-1, 1, 48).view(3, 16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(x - 0.6).flatten(1))


def test_a_dead_start_is_flagged_not_converged_and_noise_moves() -> None:
    model = DeadBelow().eval()
    gray = torch.full((2, 1, 4, 4), 0.5)
    targets = torch.tensor([1, 2])  # not the top-1 at gray (all logits 0: argmax 0)
    ev = evolve(model, gray, targets, Config(steps=5))
    assert (ev.grad_norm[:, 0] == 0).all() and (ev.stopped == 0).all()  # stopped at once: nothing to follow
    assert ev.zero_start.all() and not ev.converged.any()
    s = summarize(ev)
    assert s["converged"] == 0 and s["zero_gradient_at_start"] == 2 and s["advice"] == ZERO_START_ADVICE
    assert ZERO_START_ADVICE == "zero gradient at the start: try noise:gaussian"

    noise = torch.rand(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))  # some pixels above 0.6
    moved = evolve(model, noise, targets, Config(steps=5))
    assert (moved.grad_norm[:, 0] > 0).all() and not moved.zero_start.any()
    assert (moved.x != noise).any() and "advice" not in summarize(moved)


def test_a_start_already_at_its_target_with_zero_gradient_is_not_flagged() -> None:
    """Exactly zero gradient where the start is already the target's top-1 (here: the tie at gray goes to class 0)
    is min mode's stopping point, not a dead start."""
    ev = evolve(DeadBelow().eval(), torch.full((1, 1, 4, 4), 0.5), torch.tensor([0]), Config(steps=5))
    assert ev.grad_norm[0, 0] == 0 and not ev.zero_start.any() and ev.converged.all()
