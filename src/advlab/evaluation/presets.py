"""The attack ensembles behind a preset name (``EvalConfig(preset="reliable", eps=...)``)."""

from __future__ import annotations

from typing import Any

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.base import Attack
from advlab.errors import AdvlabError

PRESETS = ("reliable", "fast")
#: the seed every preset attack gets unless the config gives one
PRESET_SEED = 0


def preset_attacks(name: str, eps: float, norm: str = "linf", seed: int = PRESET_SEED) -> list[Attack]:
    """The attack ensembles behind ``preset=``, in a ball of radius ``eps`` ([0, 1] pixel units) in ``norm``.

    ``reliable``: APGD-CE (100 steps) then targeted APGD-DLR against the 9 most likely wrong classes (100
    steps each), AutoAttack's two gradient attacks. DLR is invariant to scaling the logits, so a model whose
    softmax saturates (and whose cross-entropy gradients vanish) does not fool the ensemble.
    ``fast``: APGD-CE and APGD-DLR with 20 steps each: a quick estimate, not a bound to publish.
    """
    if name == "reliable":
        return [APGD(eps=eps, norm=norm, steps=100, loss="ce", seed=seed),
                APGDT(eps=eps, norm=norm, steps=100, n_targets=9, seed=seed)]  # fmt: skip
    if name == "fast":
        return [APGD(eps=eps, norm=norm, steps=20, loss="ce", seed=seed), APGD(eps=eps, norm=norm, steps=20, loss="dlr", seed=seed)]
    raise AdvlabError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")


def default_eps(info: Any) -> float | None:
    """The L-inf radius a preset name alone runs at for a zoo model (``info``: its :class:`advlab.zoo.ModelInfo`):
    0.1 on the 8x8 digits, 8/255 on photos (the CLI's default); None for a model without ``info``."""
    dataset = getattr(info, "dataset", None)
    if dataset is None:
        return None
    return 0.1 if dataset == "digits" else 8 / 255
