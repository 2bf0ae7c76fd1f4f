"""Attacks: frozen configs called as ``attack(model, x, y, target=None) -> AttackResult``.

Images are [0, 1]; eps and step sizes are in [0, 1] pixel units; the device is ``x``'s; randomness comes
from ``seed`` (random starts per sample: the same image gets the same start in any batch). Attacks never
print or write files, and leave the model's mode and flags as they were. Each attack class has a ``name`` and
registers itself (``@register``); :func:`advlab.attacks.catalog.attack_classes` lists exactly those. A config
holds only the options its attack uses: ``FGSM(steps=5)`` is a TypeError, a bad value a ValueError, both at
construction.
"""

from __future__ import annotations

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.base import Attack
from advlab.attacks.blackbox import NES, SPSA, QueryOnly, Square
from advlab.attacks.cw import CW
from advlab.attacks.ddn import DDN
from advlab.attacks.deepfool import DeepFool
from advlab.attacks.fab import FAB, FABT
from advlab.attacks.fmn import FMN
from advlab.attacks.lbfgs import LBFGS
from advlab.attacks.noise import RandomNoise
from advlab.attacks.onehot import OneHot
from advlab.attacks.pgd import FGSM, MIFGSM, PGD
from advlab.types import AttackResult

__all__ = [
    "APGD",
    "APGDT",
    "CW",
    "DDN",
    "DeepFool",
    "FAB",
    "FABT",
    "FMN",
    "FGSM",
    "LBFGS",
    "MIFGSM",
    "OneHot",
    "PGD",
    "RandomNoise",
    "NES",
    "SPSA",
    "Square",
    "QueryOnly",
    "Attack",
    "AttackResult",
]
