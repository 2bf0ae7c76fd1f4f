"""Run names, in the convention of research note 000 with every setting that tells two runs apart:

``<model>_<train_dataset>-<mode>-<atk_dataset>_<method>[-<norm>][_eps<eps>][_alpha<alpha>][_steps<n>]``
``[_to-<target>][_n<limit>][_<hash>]`` (one name, written here on two lines)

e.g. ``digits-cnn_digits-attack-digits_pgd-linf_eps8_255_steps10_n40_3f2a9c``. Numbers read as people write them
(:func:`number_text`: 8/255 -> ``8_255``, 0.1 -> ``0.1``); ``<hash>`` is 6 hex digits of every other setting
(loss, restarts, seed, weights, ...), so runs that differ anywhere get different names and the same command always
gets the same one (which ``--resume`` relies on).
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from advlab.threat import eps_text


def format_number(v: float) -> str:
    """Short scientific form: 0.03 -> "3e-2", 0.001 -> "1e-3", 8/255 -> "3.137e-2", 1 -> "1", 0 -> "0"."""
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e4:
        return str(int(v))
    mantissa, exp = f"{v:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exp)}"


def number_text(v: float) -> str:
    """A number in a run name as people write it: a whole number of 8-bit levels k/255 -> "k_255" (8/255 -> "8_255"),
    else up to 4 significant digits (0.1 -> "0.1", 0.0005 -> "0.0005", 1 -> "1", 1e-05 -> "1e-05")."""
    return eps_text(float(v)).replace("/", "_")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def settings_hash(settings: Any) -> str:
    """6 hex digits of ``repr(settings)`` (stable across processes and Python versions, unlike ``hash``)."""
    return hashlib.blake2b(repr(settings).encode(), digest_size=3).hexdigest()


def run_name(
    model: str,
    train_dataset: str,
    mode: str,
    atk_dataset: str,
    method: str,
    eps: float | None = None,
    alpha: float | None = None,
    *,
    attack: Any = None,
    norm: str | None = None,
    target: Any = None,
    limit: int | None = None,
    settings: Any = None,
) -> str:
    """The name of a run (see the module docstring), e.g. ``run_name("resnet18", "imagenet", "min", "svhn", "pgd",
    8 / 255, 0.001)`` -> ``resnet18_imagenet-min-svhn_pgd_eps8_255_alpha0.001``.

    ``attack``: the attack object; its ``norm``, ``eps``, ``alpha`` and ``steps`` are shown (``eps`` / ``alpha``
    given here win, as ``norm`` does) and its repr goes into the hash. ``target``, ``limit``: shown when given.
    ``settings``: everything else that changes the results (hashed, with the attack's repr, target and limit); no hash
    without ``attack`` or ``settings``.
    """
    norm = norm if norm is not None else getattr(attack, "norm", None)
    eps = eps if eps is not None else _number(getattr(attack, "eps", None))
    alpha = alpha if alpha is not None else _number(getattr(attack, "alpha", None))
    steps = getattr(attack, "steps", None)
    name = f"{_slug(model)}_{_slug(train_dataset)}-{_slug(mode)}-{_slug(atk_dataset)}_{_slug(method)}"
    name += f"-{_slug(str(norm))}" if isinstance(norm, str) else ""
    name += f"_eps{number_text(eps)}" if eps is not None else ""
    name += f"_alpha{number_text(alpha)}" if alpha is not None else ""
    name += f"_steps{steps}" if isinstance(steps, int) and not isinstance(steps, bool) else ""
    name += f"_to-{_slug(str(target))}" if target is not None else ""
    name += f"_n{limit}" if limit is not None else ""
    if attack is not None or settings is not None:
        name += "_" + settings_hash((repr(attack), target, limit, settings))
    return name


def _number(v: Any) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None
