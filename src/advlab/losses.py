"""Attack objectives on logits, per sample (N,): larger means "more adversarial" for the attacker.

Untargeted losses grow as the true class ``y`` loses; targeted ones (``targeted=True``, ``y`` = target)
grow as the target wins. Every loss is a plain function

    loss(logits, y, targeted, y_true=None) -> (N,)

called the same way by every attack: ``y`` are the labels the attack works with (the true classes, or the
targets when ``targeted``) and ``y_true`` always the true classes (equal to ``y`` untargeted; -1 where a
sample has no label). Only targeted DLR needs ``y_true``; the others accept and ignore it, and so may any
loss a user writes.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor, bool, torch.Tensor | None], torch.Tensor]


def cross_entropy(
    logits: torch.Tensor, y: torch.Tensor, targeted: bool = False, y_true: torch.Tensor | None = None
) -> torch.Tensor:
    """CE(z, y) untargeted (ascend it), -CE(z, t) targeted."""
    ce = F.cross_entropy(logits.float(), y, reduction="none")
    return -ce if targeted else ce


def margin(
    logits: torch.Tensor,
    y: torch.Tensor,
    targeted: bool = False,
    y_true: torch.Tensor | None = None,
    *,
    kappa: float = float("inf"),
) -> torch.Tensor:
    """Carlini & Wagner's margin: max_{j != y} z_j - z_y untargeted, z_t - max_{j != t} z_j targeted; capped at
    ``kappa``.

    Positive exactly when the attack succeeds; unlike CE it does not saturate when softmax does.
    """
    z = logits.float()
    zy = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).amax(1)
    m = zy - other if targeted else other - zy
    return m.clamp(max=kappa) if kappa != float("inf") else m


def dlr(
    logits: torch.Tensor, y: torch.Tensor, targeted: bool = False, y_true: torch.Tensor | None = None
) -> torch.Tensor:
    """Difference of Logits Ratio (Croce & Hein 2020), invariant to shifting and scaling the logits.

    Untargeted: -(z_y - max_{j != y} z_j) / (z_pi1 - z_pi3), with z sorted decreasingly (pi1 the largest).
    Targeted (y = target t, y_true the true class): -(z_{y_true} - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2); for a
    sample without a label (y_true = -1) z_{y_true} is the largest logit other than the target's.
    """
    z = logits.float()
    srt = z.sort(dim=1, descending=True).values
    if not targeted:
        zy = z.gather(1, y[:, None]).squeeze(1)
        other = z.scatter(1, y[:, None], float("-inf")).amax(1)
        return -(zy - other) / (srt[:, 0] - srt[:, 2] + 1e-12)
    if y_true is None:
        raise ValueError("targeted DLR needs the true labels (y_true)")
    if z.shape[1] < 4:
        raise ValueError(f"targeted DLR needs at least 4 classes (it uses the 4th largest logit), got {z.shape[1]}")
    zt = z.gather(1, y[:, None]).squeeze(1)
    known = y_true >= 0
    zy = z.gather(1, y_true.clamp(min=0)[:, None]).squeeze(1)
    zy = torch.where(known, zy, z.scatter(1, y[:, None], float("-inf")).amax(1))
    return -(zy - zt) / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3]) + 1e-12)


def onehot_l2(
    logits: torch.Tensor, y: torch.Tensor, targeted: bool = True, y_true: torch.Tensor | None = None
) -> torch.Tensor:
    """The lecture's 0.5 * ||softmax(z) - onehot(t)||^2 (negated so that larger is better for the attacker).

    Untargeted, the distance to the true one-hot is ascended instead.
    """
    p = logits.float().softmax(1)
    d = 0.5 * (p - F.one_hot(y, p.shape[1]).to(p)).pow(2).sum(1)
    return -d if targeted else d


LOSSES: dict[str, Loss] = {"ce": cross_entropy, "margin": margin, "cw": margin, "dlr": dlr, "onehot": onehot_l2}


def bind(
    loss: Loss, y: torch.Tensor, targeted: bool, y_true: torch.Tensor | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The per-sample objective ``logits -> loss(logits, y, targeted, y_true)`` for one batch of labels."""
    return lambda logits: loss(logits, y, targeted, y_true)


def get_loss(name: str | Loss) -> Loss:
    """A loss by name (ce, margin/cw, dlr, onehot) or the callable itself."""
    if callable(name):
        return name
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose from {', '.join(LOSSES)}")
    return LOSSES[name]
