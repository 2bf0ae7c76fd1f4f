"""Result types shared across advlab (plain dataclasses over tensors)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class AttackResult:
    """What an attack returns, per sample (N = batch size).

    ``x_adv``: same shape, dtype and device as the input, inside the threat model and [0, 1].
    ``success``: untargeted ``argmax f(x_adv) != y``; targeted ``argmax f(x_adv) == target``.
    ``logits``: f(x_adv). ``l0``/``l2``/``linf``: norms of ``x_adv - x`` in [0, 1] pixel units.
    ``forwards``/``backwards``: model evaluations spent on each sample (a batch of N counts N).
    ``curve``: for a list of epsilons, one row per eps: eps, success_rate, and per-sample ``min_eps``
    (the smallest listed eps that broke the sample, inf if none). Minimum-norm attacks (FMN, DDN, ``minimal.bisect``)
    set ``min_eps`` without a curve: each sample's distance (the norm of ``x_adv - x``, inf where none was found).
    ``seen``: per sample the closest point (in the attack's norm) on its path whose logits met the goal, the clean
    image where none did (None: none did for any sample, or the run was not watched); ``seen_distance`` its
    distance (inf where none); ``still_improving``: per sample (CPU bool) whether the attack's best goal margin was
    still rising over its last evaluations (:meth:`advlab.attacks.base.Witness.still_improving`).
    """

    x_adv: torch.Tensor
    success: torch.Tensor
    logits: torch.Tensor
    y: torch.Tensor
    target: torch.Tensor | None
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    forwards: torch.Tensor
    backwards: torch.Tensor
    curve: list[dict[str, float]] = field(default_factory=list)
    min_eps: torch.Tensor | None = None
    seen: torch.Tensor | None = None
    seen_distance: torch.Tensor | None = None
    still_improving: torch.Tensor | None = None

    @property
    def success_rate(self) -> float:
        return float(self.success.float().mean()) if len(self.success) else 0.0

    @property
    def prediction(self) -> torch.Tensor:
        return self.logits.argmax(1)

    @property
    def gradient_evaluations(self) -> int:
        return int(self.backwards.sum())
