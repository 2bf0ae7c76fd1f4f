"""The detector experiment of research note 004: train a detector on one attack, then attack it as the lecture says.

Steps (:mod:`advlab.defenses.detector` holds the detector, its threshold and the guarded model):

1. :func:`calibration_split` holds out a seeded fraction of the training images (clean) for the threshold;
2. :func:`train_on_attack` runs the eps-bounded training attack on the rest, trains a detector to tell those
   clean images from the successful adversarial ones, and sets the threshold tau that flags at most ``fpr``
   of the held-out clean images;
3. :func:`evaluate_detector` measures on the test images: the false-positive rate at tau, the clean accuracy,
   per held-out attack (the first is the training attack itself) the success rate, the ROC AUC of the
   detector (successful adversarial vs clean images, and all vs clean), the share flagged at tau and the share
   that succeeds unflagged; the non-adaptive success (the training attack, which ignores the detector,
   counted only where it misclassifies AND is not flagged) and the adaptive success (:func:`adaptive_attack`,
   PGD on :class:`~advlab.defenses.detector.Guarded` with the guarded loss: fooling classifier and detector
   at once, in the same ball).

Rates go through :mod:`advlab.evaluation.metrics`: an attack's success is ``argmax f(x_adv) != y``
(untargeted), so the success rate, the unflagged success and the misclassified share are
:func:`~advlab.evaluation.metrics.attack_success_rate` of per-image booleans; clean accuracy is
:func:`~advlab.evaluation.metrics.clean_accuracy`. Scores are P("adversarial") in [0, 1]; eps in pixel units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import Attack
from advlab.attacks.catalog import make
from advlab.defenses import detector as D
from advlab.errors import AdvlabError
from advlab.evaluation.metrics import attack_success_rate, clean_accuracy

#: the adaptive PGD takes at least this many steps (the training attack's, when it takes more)
MIN_ADAPTIVE_STEPS = 10


@dataclass(frozen=True)
class DetectorSetup:
    """How the detector is trained and calibrated: the classifier's ``layer`` it reads, ``pool`` ("auto",
    "flatten", "mean"), ``hidden`` units of its MLP (0: logistic regression), training ``epochs``, the
    false-positive rate ``fpr`` in (0, 1) on held-out clean images at the threshold, the ``seed`` of its
    initialization and shuffling, and ``batch_size`` images per attack and scoring batch."""

    layer: str
    pool: str = "auto"
    hidden: int = 64
    epochs: int = 50
    fpr: float = D.DEFAULT_FPR
    seed: int = 0
    batch_size: int = 256


def calibration_split(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit, calibration) indices into range(n), each sorted: a seeded random ``fraction`` (rounded, at least 1)
    for calibration, the rest (at least 2) to train on."""
    if not 0 < fraction < 1:
        raise AdvlabError(f"the calibration share must be a fraction in (0, 1), got {fraction:g}")
    k = round(fraction * n)
    if k < 1 or n - k < 2:
        raise AdvlabError(f"{n} training images: too few to hold out {fraction:g} of them and train on the rest")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values


def run_attack(
    atk: Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_adv, success)`` of an untargeted ``atk`` run batch by batch; success (on the CPU) = argmax f(x_adv) != y."""
    xs, ok = [], []
    try:
        for i in range(0, len(x), batch_size):
            r = atk(model, x[i : i + batch_size], y[i : i + batch_size])
            xs.append(r.x_adv)
            ok.append(r.success.cpu())
    except ValueError as e:
        raise AdvlabError(f"{atk.name}: {e}") from None
    return torch.cat(xs), torch.cat(ok)


def predictions(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """argmax f(x) (N,) on the CPU, batch by batch, without gradients."""
    with torch.no_grad():
        return torch.cat([model(b).argmax(1) for b in x.split(batch_size)]).cpu()


def adaptive_attack(atk: Attack, eps: float, *, steps: int | None, c: float, kappa: float, seed: int) -> Attack:
    """The adaptive PGD on the guarded model: the training attack ``atk``'s ball (``eps``, its norm) and restarts,
    ``steps`` (default: ``atk``'s, at least :data:`MIN_ADAPTIVE_STEPS`), and the loss
    :func:`~advlab.defenses.detector.guarded_loss` ``(c, kappa)``."""
    steps = steps or max(MIN_ADAPTIVE_STEPS, int(getattr(atk, "steps", MIN_ADAPTIVE_STEPS)))
    return make(
        "pgd",
        eps=eps,
        norm=getattr(atk, "norm", "linf"),
        steps=steps,
        restarts=getattr(atk, "restarts", None),
        seed=seed,
        loss=D.guarded_loss(c, kappa),
    )


def train_on_attack(
    model: nn.Module, atk: Attack, x: torch.Tensor, y: torch.Tensor, x_cal: torch.Tensor, setup: DetectorSetup
) -> tuple[D.Detector, float, dict[str, Any]]:
    """The detector trained on ``x`` (clean) and the successful ``atk`` examples on it, its threshold on
    ``x_cal`` (clean, held out) at ``setup.fpr``, and the training metrics."""
    xa, ok = run_attack(atk, model, x, y, setup.batch_size)
    if not bool(ok.any()):
        raise AdvlabError(
            f"{atk.name} broke none of the {len(x)} training images: nothing to learn from; raise its eps or steps"
        )
    det = D.train_detector(
        model,
        setup.layer,
        x,
        xa[ok.to(xa.device)],
        epochs=setup.epochs,
        seed=setup.seed,
        hidden=setup.hidden,
        pool=setup.pool,
    )
    s_cal = det.score(x_cal, setup.batch_size)
    tau = D.threshold_at_fpr(s_cal, setup.fpr)
    return det, tau, training_metrics(det, atk, ok, s_cal, tau, setup)


def training_metrics(
    det: D.Detector, atk: Attack, ok: torch.Tensor, s_cal: torch.Tensor, tau: float, setup: DetectorSetup
) -> dict[str, Any]:
    """What training a detector measured: its layer and size, the training attack and how often it succeeded
    (``ok``: per clean training image), the calibration scores ``s_cal`` and the threshold ``tau`` at
    ``setup.fpr``."""
    return {
        "layer": det.layer,
        "pool": det.pool,
        "features": det.dim,
        "hidden": det.hidden,
        "training_attack": repr(atk),
        "eps": getattr(atk, "eps", None),
        "train_clean": len(ok),
        "train_adversarial": int(ok.sum()),
        "train_attack_success_rate": attack_success_rate(ok),
        "calibration_images": len(s_cal),
        "fpr_target": setup.fpr,
        "threshold": tau,
        "fpr_calibration": float((s_cal > tau).double().mean()),
    }


def held_out_row(
    held_atk: Attack, ok: torch.Tensor, s_adv: torch.Tensor, s_clean: torch.Tensor, tau: float
) -> tuple[dict[str, Any], Any]:
    """One held-out attack's row of :func:`held_out_rows` from its per-image success ``ok`` and the detector's scores
    ``s_adv`` of its adversarial images (``s_clean``: of the clean ones), and its ROC curve (successful vs clean;
    None when none succeeded)."""
    flagged = s_adv > tau
    row: dict[str, Any] = {
        "attack": repr(held_atk),
        "success_rate": attack_success_rate(ok),
        "successful": int(ok.sum()),
        "auc": None,
        "auc_all": D.roc_auc(s_clean, s_adv),
        "detected_at_threshold": None,
        "success_not_flagged": attack_success_rate(ok & ~flagged),
    }
    if not bool(ok.any()):
        return row, None
    row["auc"] = D.roc_auc(s_clean, s_adv[ok])
    row["detected_at_threshold"] = float(flagged[ok].float().mean())
    return row, D.roc_curve(s_clean, s_adv[ok])


def non_adaptive(held: list[tuple[str, Attack]], rows: dict[str, Any]) -> dict[str, Any]:
    """The non-adaptive result: the first held-out attack (it does not know the detector), its success rate without
    the detector and its share of successes the detector does not flag, from its row of :func:`held_out_rows`."""
    label, atk = held[0]
    return {
        "attack": repr(atk),
        "success_without_detector": rows[label]["success_rate"],
        "success_not_flagged": rows[label]["success_not_flagged"],
    }


def held_out_rows(
    held: list[tuple[str, Attack]],
    model: nn.Module,
    det: D.Detector,
    tau: float,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    s_clean: torch.Tensor,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per held-out (label, attack): success rate, ROC AUC of the detector (successful vs clean, and all vs
    clean), the share of the successful ones flagged at ``tau`` and the share that succeeds unflagged; and the
    ROC curves (:func:`~advlab.defenses.detector.roc_curve`, successful vs clean) by label. ``s_clean``: the
    detector's scores of the clean ``x``."""
    rows, curves = {}, {}
    for label, held_atk in held:
        xa, ok = run_attack(held_atk, model, x, y, batch_size)
        rows[label], curve = held_out_row(held_atk, ok, det.score(xa, batch_size).cpu(), s_clean, tau)
        if curve is not None:
            curves[label] = curve
    return rows, curves


def adaptive_success(
    adaptive: Attack, model: nn.Module, det: D.Detector, tau: float, x: torch.Tensor, y: torch.Tensor, batch_size: int
) -> dict[str, Any]:
    """The adaptive attack on the guarded model: the share that fools both (misclassified and not flagged),
    the share misclassified, the share flagged."""
    xa, _ = run_attack(adaptive, D.Guarded(model, det, tau), x, y, batch_size)
    evaded = D.evades(model, det, tau, xa, y, batch_size)
    return {
        "attack": repr(adaptive),
        "success": attack_success_rate(evaded),
        "misclassified": attack_success_rate(predictions(model, xa, batch_size) != y.cpu()),
        "flagged": float((det.score(xa, batch_size).cpu() > tau).float().mean()),
    }


def evaluate_detector(
    model: nn.Module,
    det: D.Detector,
    tau: float,
    attacks: tuple[list[tuple[str, Attack]], Attack],
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The test metrics of detector ``det`` at threshold ``tau`` on labelled images ``x``, ``y``, and the ROC curves.
    ``attacks``: (the held-out (label, attack) pairs, the training attack first; the adaptive attack)."""
    held, adaptive = attacks
    s_clean = det.score(x, batch_size)
    metrics: dict[str, Any] = {
        "fpr_test": float((s_clean > tau).double().mean()),
        "test_images": len(x),
        "clean_accuracy": clean_accuracy(y.cpu(), predictions(model, x, batch_size)),
    }
    rows, curves = held_out_rows(held, model, det, tau, x, y, batch_size, s_clean)
    metrics["held_out"] = rows
    metrics["non_adaptive"] = non_adaptive(held, rows)
    metrics["adaptive"] = adaptive_success(adaptive, model, det, tau, x, y, batch_size)
    return metrics, curves
