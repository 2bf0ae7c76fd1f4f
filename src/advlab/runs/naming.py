"""Run names in the convention of seed 000: ``<model>_<train_dataset>-<mode>-<atk_dataset>_<method>_e<eps>_a<alpha>``."""

from __future__ import annotations

import re


def format_number(v: float) -> str:
    """Short scientific form used in run names: 0.03 -> "3e-2", 0.001 -> "1e-3", 8/255 -> "3.137e-2", 1 -> "1", 0 -> "0"."""
    if v != v or v in (float("inf"), float("-inf")):
        return str(v)
    if v == 0:
        return "0"
    if float(v).is_integer() and abs(v) < 1e4:
        return str(int(v))
    mantissa, exp = f"{v:.3e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exp)}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-") or "x"


def run_name(model: str, train_dataset: str, mode: str, atk_dataset: str, method: str,
             eps: float | None = None, alpha: float | None = None) -> str:  # fmt: skip
    """E.g. ``run_name("resnet18", "imagenet", "min", "svhn", "pgd", 0.03, 0.001)`` -> ``resnet18_imagenet-min-svhn_pgd_e3e-2_a1e-3``."""
    name = f"{_slug(model)}_{_slug(train_dataset)}-{_slug(mode)}-{_slug(atk_dataset)}_{_slug(method)}"
    if eps is not None:
        name += f"_e{format_number(eps)}"
    if alpha is not None:
        name += f"_a{format_number(alpha)}"
    return name
