"""Per-sample minimal distances in ``advlab attack``: for a minimum-norm attack (FMN, DDN, C&W, DeepFool, L-BFGS,
one-hot: any attack without an eps), each image's distance (the norm of its adversarial perturbation in the
attack's norm, inf where it failed, 0 where the model was already wrong), the robust-accuracy curve over every
eps at once and its area. Writes distances.csv, distances.safetensors and robust_curve.png."""

from __future__ import annotations

import math
from typing import Any

import torch

from advlab import runs
from advlab.attacks.minimal import distances
from advlab.cli.common import csv_text
from advlab.evaluation.metrics import clean_correct, robust_accuracy_area
from advlab.experiments.optimality import curve_points
from advlab.types import AttackResult


def is_minimal(atk: Any) -> bool:
    """Whether ``atk`` is a minimum-norm attack (no eps-ball)."""
    return not hasattr(atk, "eps")


def columns(res: AttackResult, x: torch.Tensor, atk: Any) -> dict[str, torch.Tensor]:
    """The batch's ``distance`` column (CPU float) for a minimum-norm attack; nothing for an eps-bounded one."""
    return {"distance": distances(res, x, atk.threat_norm)} if is_minimal(atk) else {}


def _correct(cols: dict[str, torch.Tensor], y: torch.Tensor) -> torch.Tensor:
    return clean_correct(y.cpu(), cols["clean_logits"].argmax(1).cpu())


def summary(cols: dict[str, torch.Tensor], y: torch.Tensor, atk: Any) -> dict[str, Any]:
    """metrics.json entries: the norm, eps_max (the largest finite distance of a correct image), the area under
    robust accuracy from 0 to eps_max, that area over eps_max (the mean robust accuracy on [0, eps_max]), the
    median distance and the curve ([eps, robust accuracy] pairs)."""
    if "distance" not in cols:
        return {}
    d, correct = cols["distance"].float(), _correct(cols, y)
    finite = d[correct & torch.isfinite(d)]
    top = float(finite.max()) if len(finite) else 0.0
    a = robust_accuracy_area(d, correct, top) if top > 0 else 0.0
    return {
        "distance_norm": atk.threat_norm,
        "distance_median": round(float(finite.median()), 6) if len(finite) else None,
        "eps_max": round(top, 6),
        "robust_accuracy_area": round(a, 6),
        "robust_accuracy_area_normalized": round(a / top, 6) if top > 0 else None,
        "robust_curve": curve_points(d, correct, top) if top > 0 else [],
    }


def write(
    run_dir: runs.Run, cols: dict[str, torch.Tensor], y: torch.Tensor, metrics: dict[str, Any], title: str
) -> None:
    """distances.csv (index, label, clean correct, distance), distances.safetensors and robust_curve.png."""
    if "distance" not in cols:
        return
    from advlab.report import line_plot

    d, correct = cols["distance"].float(), _correct(cols, y)
    rows = [
        {
            "index": i,
            "label": int(y[i]),
            "clean_correct": bool(correct[i]),
            "distance": "inf" if math.isinf(float(d[i])) else round(float(d[i]), 8),
        }
        for i in range(len(d))
    ]
    run_dir.save_text("distances.csv", csv_text(rows))
    run_dir.save_tensors(
        "distances.safetensors",
        {"distance": d.contiguous(), "y": y.cpu().contiguous(), "clean_correct": correct},
        metadata={"norm": str(metrics.get("distance_norm")), "attack": str(metrics.get("config"))},
    )
    curve = metrics.get("robust_curve") or []
    if curve:
        fig = line_plot(
            {"robust accuracy": [c[1] for c in curve]},
            f"eps ({metrics['distance_norm']}, pixel units)",
            "accuracy",
            f"{title}: area {metrics['robust_accuracy_area']:.4g} up to eps {metrics['eps_max']:.4g}",
            x=[c[0] for c in curve],
            markers=False,
        )
        run_dir.save_figure("robust_curve.png", fig)
