"""Attacks by name, and building one from user options (what the CLI and config files use).

``make("pgd", eps=8/255, steps=10)`` builds ``PGD(eps=8/255, steps=10)``; an option the attack does not
have is an error that says so ("cw is not bounded by an eps-ball: it takes no eps"), never ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from advlab.attacks.base import REGISTRY, Attack
from advlab.errors import AdvlabError


def attack_classes() -> dict[str, type[Attack]]:
    """Every registered attack by its ``name`` (fgsm, pgd, mifgsm, apgd, apgd-t, noise, cw, deepfool, lbfgs,
    onehot, nes, spsa, square, fab, fab-t, ...): exactly the classes decorated with
    :func:`advlab.attacks.base.register`."""
    import advlab.attacks  # noqa: F401  (importing the package registers every attack module)

    return dict(REGISTRY)


def options(cls: type[Attack]) -> set[str]:
    """The fields a user may set on ``cls``."""
    return {f.name for f in dataclasses.fields(cls) if f.init}


def make(name: str, **given: Any) -> Attack:
    """The attack ``name`` configured with ``given`` (None values are left at the attack's default).

    Raises :class:`AdvlabError` for an unknown name, an option the attack does not take, or a value it
    rejects, with one line a user can act on.
    """
    classes = attack_classes()
    if name not in classes:
        raise AdvlabError(f"unknown attack {name!r}; choose from {', '.join(classes)}")
    cls = classes[name]
    given = {k: v for k, v in given.items() if v is not None}
    allowed = options(cls)
    for key in given:
        if key in allowed:
            continue
        if key == "norm":
            raise AdvlabError(f"{name} is an L2 attack: it takes no norm option")
        if key == "eps":
            raise AdvlabError(
                f"{name} is not bounded by an eps-ball: it takes no eps "
                "(in advlab eval, --eps bounds which of its successes count)"
            )
        hint = cls.instead.get(key) or f"it takes {', '.join(sorted(allowed - {'seed', 'quantize'}))}"
        raise AdvlabError(f"{name} takes no {key.replace('_', '-')} option; {hint}")
    try:
        return cls(**given)  # a bad value raises at construction (``validate``)
    except (TypeError, ValueError) as e:
        raise AdvlabError(f"{name}: {e}") from None
