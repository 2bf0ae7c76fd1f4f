"""The attack ensembles behind a preset name (``EvalConfig(preset="reliable", eps=...)``)."""

from __future__ import annotations

from typing import Any

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.base import Attack
from advlab.attacks.blackbox import Square
from advlab.attacks.fab import FABT
from advlab.errors import AdvlabError

PRESETS = ("reliable", "fast", "autoattack")
#: the seed every preset attack gets unless the config gives one
PRESET_SEED = 0


#: the reliable preset's budget: APGD-CE steps, then APGD-T on this many MALT targets, with this many steps and
#: random restarts each (on samples at the ball's edge a second start finds more than more steps do)
RELIABLE_CE_STEPS, RELIABLE_TARGETS, RELIABLE_TARGET_STEPS, RELIABLE_TARGET_RESTARTS = 30, 2, 30, 2
#: AutoAttack's standard version: iterations of APGD-CE, APGD-T and FAB-T, their targets, Square's queries and p_init
AUTOATTACK_STEPS, AUTOATTACK_TARGETS, AUTOATTACK_QUERIES, AUTOATTACK_P_INIT = 100, 9, 5000, 0.8


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
    ``autoattack``: AutoAttack's standard version (Croce & Hein 2020) for L-inf and L2, in its order: APGD-CE
    (100 steps, 1 run from a random start, rho 0.75), APGD-T (targeted DLR, 100 steps, against the 9 most likely wrong
    classes by clean logits in turn), FAB-T (:class:`advlab.attacks.FABT`: 100 steps, the same 9 targets, alpha_max
    0.1, eta 1.05, beta 0.9, the first run from the clean point), Square (5,000 queries, p_init 0.8), each on the
    samples the earlier ones left unbroken. Differences from the ``autoattack`` package, none in the budget: the
    random starts and Square's draws are advlab's (per image, from the seed), not torch's global generator; APGD's
    L-inf start is uniform in the cube (AutoAttack scales its uniform draw so that its largest coordinate is eps);
    every attack stops each sample at its first success within eps where AutoAttack runs its iterations out (the same
    verdict: a success at any iterate counts in both); FAB-T's restarts (none here) draw advlab's random points.
    AutoAttack's L1 version (APGD with its own L1 step and sparsity schedule) is not implemented: L1 is refused.
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
    if name == "autoattack":
        if norm not in ("linf", "l2"):
            raise AdvlabError(
                f"preset 'autoattack' is AutoAttack's standard version for linf and l2, not {norm}; "
                "its L1 version is not implemented (use another preset, or your own attacks)"
            )
        steps, targets = AUTOATTACK_STEPS, AUTOATTACK_TARGETS
        return [
            APGD(eps=eps, norm=norm, steps=steps, loss="ce", restarts=1, rho=0.75, seed=seed),
            APGDT(eps=eps, norm=norm, steps=steps, n_targets=targets, targets="logits", restarts=1, seed=seed),
            FABT(eps=eps, norm=norm, steps=steps, n_targets=targets, restarts=1, seed=seed),
            Square(eps=eps, norm=norm, max_queries=AUTOATTACK_QUERIES, p_init=AUTOATTACK_P_INIT, seed=seed),
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
