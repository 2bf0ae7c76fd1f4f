"""The attack ensembles behind a preset name (``EvalConfig(preset="reliable", eps=...)``)."""

from __future__ import annotations

from typing import Any

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.base import Attack
from advlab.errors import AdvlabError

PRESETS = ("reliable", "fast")
#: the seed every preset attack gets unless the config gives one
PRESET_SEED = 0


#: the reliable preset's budget: APGD-CE steps, then APGD-T on this many MALT targets, with this many steps and
#: random restarts each (on samples at the ball's edge a second start finds more than more steps do)
RELIABLE_CE_STEPS, RELIABLE_TARGETS, RELIABLE_TARGET_STEPS, RELIABLE_TARGET_RESTARTS = 30, 2, 30, 2


def preset_attacks(name: str, eps: float, norm: str = "linf", seed: int = PRESET_SEED) -> list[Attack]:
    """The attack ensembles behind ``preset=``, in a ball of radius ``eps`` ([0, 1] pixel units) in ``norm``.

    ``reliable``: APGD-CE (30 steps), then on the samples still unbroken targeted APGD-DLR (30 steps, 2 random
    starts each) against the 2 wrong classes whose decision boundary is closest by MALT's linear estimate
    (z_y - z_t) / ||grad (z_y - z_t)||_* (Melamed et al. 2024; :func:`advlab.attacks.apgd.malt_targets`), each
    sample stopping at its first success. AutoAttack's two gradient attacks, but 2 well-chosen targets instead of
    the 9 most likely: on the 599 test digits (digits CNN undefended and adversarially trained, L-inf 0.1 and L2
    0.5) at most one digit more robust than under AutoAttack standard (+0.00 to +0.17 pp) for 0.08x its backward
    passes and 0.03x its process time (``benchmarks/eval_speed.py --part reliable``).
    DLR is invariant to scaling the logits, so a model whose softmax saturates (and whose cross-entropy gradients
    vanish) does not fool the ensemble.
    ``fast``: APGD-CE and APGD-DLR with 20 steps each: a quick estimate, not a bound to publish.
    """
    if name == "reliable":
        return [
            APGD(eps=eps, norm=norm, steps=RELIABLE_CE_STEPS, loss="ce", seed=seed),
            APGDT(
                eps=eps,
                norm=norm,
                steps=RELIABLE_TARGET_STEPS,
                n_targets=RELIABLE_TARGETS,
                targets="malt",
                restarts=RELIABLE_TARGET_RESTARTS,
                seed=seed,
            ),
        ]
    if name == "fast":
        return [
            APGD(eps=eps, norm=norm, steps=20, loss="ce", seed=seed),
            APGD(eps=eps, norm=norm, steps=20, loss="dlr", seed=seed),
        ]
    raise AdvlabError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")


def default_eps(info: Any) -> float | None:
    """The L-inf radius, in [0, 1] pixel units, that a zoo model is attacked at when no eps is given (``info``: its
    :class:`advlab.zoo.ModelInfo`): 0.1 on the 8x8 digits, 8/255 on photos; None for a model without ``info``.
    The one default: a preset name alone runs at it in the library, and every command's eps-bounded attack
    without --eps (``advlab.cli.common.make_attack``)."""
    dataset = getattr(info, "dataset", None)
    if dataset is None:
        return None
    return 0.1 if dataset == "digits" else 8 / 255
