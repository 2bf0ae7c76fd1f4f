"""Attacks: frozen configs called as ``attack(model, x, y, target=None) -> AttackResult``.

Images are [0, 1]; eps and step sizes are in [0, 1] pixel units; the device is ``x``'s; randomness comes
from ``seed``. Attacks never print or write files, and leave the model's mode and flags as they were.
"""

from __future__ import annotations

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.base import Attack
from advlab.attacks.blackbox import NES, SPSA, QueryOnly, Square
from advlab.attacks.cw import CW
from advlab.attacks.deepfool import DeepFool
from advlab.attacks.lbfgs import LBFGS
from advlab.attacks.noise import RandomNoise
from advlab.attacks.onehot import OneHot
from advlab.attacks.pgd import FGSM, MIFGSM, PGD
from advlab.types import AttackResult

__all__ = ["APGD", "APGDT", "CW", "DeepFool", "FGSM", "LBFGS", "MIFGSM", "OneHot", "PGD", "RandomNoise", "NES", "SPSA", "Square", "QueryOnly", "Attack", "AttackResult"]
