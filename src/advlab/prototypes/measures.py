"""What a prototype run measures: recognition points, summaries, and human-recognizability proxies.

Recognition point of a pair: the first step at which the target becomes top-1, and the first steps at which
its probability passes 0.5, 0.9 and 0.99, each with the L2 and L-inf distance from the start there (-1 / nan
when never). Proxies for "would a person see the class": other models' verdicts on the prototypes (transfer),
and an Inception-Score-style number IS = exp(E_x KL(p(y|x) || p(y))) over the prototype set (Salimans et al.
2016), which is high when each prototype is confidently one class and the set covers many classes; its
maximum is the number of distinct targets. Several judges vote as an :func:`ensemble` (their mean
probabilities); :func:`verdicts` gathers how the model itself, each judge and their ensemble see a set of
prototypes; :func:`amplified_difference` shows what a run changed in a noise or photo start;
:func:`trajectory_rows` lays every recorded step out as table rows. The top-1 agreement with the targets is
:func:`advlab.evaluation.metrics.clean_accuracy` with the targets as labels.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from advlab.data.images import resize_batch
from advlab.device import device_of
from advlab.evaluation.metrics import clean_accuracy, hit_target
from advlab.prototypes.evolve import Evolution

THRESHOLDS = (0.5, 0.9, 0.99)
#: what a summary advises when some pairs had an exactly zero input gradient at their start
ZERO_START_ADVICE = "zero gradient at the start: try noise:gaussian"


def _first(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True per row, -1 when none."""
    hit = mask.any(1)
    idx = mask.float().argmax(1)
    return torch.where(hit, idx, torch.full_like(idx, -1))


def _at(values: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
    out = values.gather(1, step.clamp(min=0)[:, None]).squeeze(1)
    return torch.where(step >= 0, out, torch.full_like(out, float("nan")))


def recognition_points(ev: Evolution) -> dict[str, torch.Tensor]:
    """Per pair: ``top1_step`` and ``p50_step``/``p90_step``/``p99_step`` (-1: never), with ``*_l2``/``*_linf``
    there."""
    out: dict[str, torch.Tensor] = {}
    marks = {"top1": ev.top1 == ev.target[:, None]}
    marks.update({f"p{round(p * 100)}": ev.prob >= p for p in THRESHOLDS})
    for name, mask in marks.items():
        step = _first(mask)
        out[f"{name}_step"] = step
        out[f"{name}_l2"] = _at(ev.l2, step)
        out[f"{name}_linf"] = _at(ev.linf, step)
    return out


def _stats(v: torch.Tensor) -> dict[str, float | None]:
    v = v[~torch.isnan(v)].double() if v.is_floating_point() else v.double()
    if v.numel() == 0:
        return {"mean": None, "median": None, "min": None, "max": None}
    return {
        "mean": round(float(v.mean()), 6),
        "median": round(float(v.median()), 6),
        "min": round(float(v.min()), 6),
        "max": round(float(v.max()), 6),
    }


def inception_score(probs: torch.Tensor) -> float:
    """exp(mean_i KL(p_i || mean_j p_j)) for class probabilities ``probs`` (N, K)."""
    p = probs.double().clamp_min(1e-12)
    marginal = p.mean(0, keepdim=True)
    return float(torch.exp((p * (p.log() - marginal.log())).sum(1).mean()))


@torch.no_grad()
def class_probabilities(model: nn.Module, x: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Softmax outputs of ``model`` on ``x`` (on the model's device), batch by batch, returned on the CPU."""
    dev = device_of(model)
    return torch.cat(
        [model(x[i : i + batch_size].to(dev)).float().softmax(1).cpu() for i in range(0, len(x), batch_size)]
    )


def judge(probs: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    """A model's verdict on prototypes, from its probabilities (N, K): how often the target is top-1, the
    target's mean probability, and the Inception-Score-style number of the set."""
    t = targets.long()
    return {
        "top1_agreement": clean_accuracy(t, probs.argmax(1)),  # the targets are the labels: top-1 = target
        "target_probability_mean": float(probs.gather(1, t[:, None]).mean()),
        "inception_score": inception_score(probs),
    }


def reached_top1(ev: Evolution) -> int:
    """How many pairs end with their target as the model's top-1 class (``metrics.hit_target`` summed)."""
    return int(hit_target(ev.final_top1, ev.target).sum())


def summarize(ev: Evolution, class_names: Sequence[str] | None = None, resisting: int = 10) -> dict[str, Any]:
    """Summaries over all pairs: how many were reached, recognition distances and steps, convergence, and the
    classes that resist (lowest final target probability). Pairs whose input gradient was exactly zero at the
    start (:attr:`Evolution.zero_start`) are counted as ``zero_gradient_at_start``, never as converged, and the
    summary then carries ``advice`` (:data:`ZERO_START_ADVICE`)."""
    rp = recognition_points(ev)
    n = len(ev.target)
    final_p = ev.final_prob
    reached = final_p >= THRESHOLDS[-1]
    out: dict[str, Any] = {
        "pairs": n,
        "reached_top1": reached_top1(ev),
        "reached_p99": int(reached.sum()),
        "ever_top1": int((rp["top1_step"] >= 0).sum()),
    }
    for name in ("top1", *[f"p{round(p * 100)}" for p in THRESHOLDS]):
        hit = rp[f"{name}_step"] >= 0
        out[f"recognition_{name}"] = {
            "pairs": int(hit.sum()),
            "step": _stats(rp[f"{name}_step"][hit].float()),
            "l2": _stats(rp[f"{name}_l2"][hit]),
            "linf": _stats(rp[f"{name}_linf"][hit]),
        }
    out["converged"] = int(ev.converged.sum())
    out["convergence_step"] = _stats(ev.stopped[ev.converged].float())
    out["zero_gradient_at_start"] = int(ev.zero_start.sum())
    if out["zero_gradient_at_start"]:
        out["advice"] = ZERO_START_ADVICE
    out["final_probability"] = _stats(final_p)
    out["final_grad_norm"] = _stats(ev.final_grad_norm)
    out["final_l2"] = _stats(ev.l2.gather(1, ev.final[:, None]).squeeze(1))
    out["final_linf"] = _stats(ev.linf.gather(1, ev.final[:, None]).squeeze(1))
    per_class: dict[int, list[float]] = {}
    for t, p in zip(ev.target.tolist(), final_p.tolist(), strict=True):
        per_class.setdefault(t, []).append(p)
    worst = sorted(per_class.items(), key=lambda kv: sum(kv[1]) / len(kv[1]))[:resisting]
    out["resisting_classes"] = [
        {
            "class": t,
            "name": class_names[t] if class_names else str(t),
            "final_probability_mean": round(sum(ps) / len(ps), 6),
            "reached_p99": sum(p >= THRESHOLDS[-1] for p in ps),
            "pairs": len(ps),
        }
        for t, ps in worst
        if min(ps) < THRESHOLDS[-1]
    ]
    return out


def ensemble(probs: Sequence[torch.Tensor]) -> torch.Tensor:
    """The judges' ensemble: the mean of their class probabilities (each (N, K)), itself (N, K)."""
    return torch.stack([p.float() for p in probs]).mean(0)


def amplified_difference(x: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """The change from the start made visible: 0.5 + (x - x0) / (2 max |x - x0|) per image, in [0, 1]; grey is
    no change. For noise and photo starts, where the prototype itself looks like its start."""
    d = (x - x0).float()
    peak = d.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, *[1] * (d.ndim - 1))
    return (0.5 + d / (2 * peak)).clamp(0, 1)


def verdicts(
    x: torch.Tensor, target: torch.Tensor, model: nn.Module, judges: Sequence[tuple[str, nn.Module]]
) -> dict[str, Any]:
    """How the model itself (``self``), each judge (``judges``, by name) and, with two or more, the judges'
    ensemble (``judge_ensemble``) see the prototypes ``x`` (N, C, H, W) in [0, 1]: each a :func:`judge` verdict
    (top-1 agreement with ``target``, mean target probability, Inception-Score-style number). A judge with another
    input size sees ``x`` resized to it."""
    out: dict[str, Any] = {"self": judge(class_probabilities(model, x), target), "judges": {}}
    probs = []
    for name, other in judges:
        size = int(getattr(getattr(other, "info", None), "input_size", x.shape[-1]))
        probs.append(class_probabilities(other, x if x.shape[-1] == size else resize_batch(x, size)))
        out["judges"][name] = judge(probs[-1], target)
    if len(probs) > 1:
        out["judge_ensemble"] = judge(ensemble(probs), target)
    return out


def trajectory_rows(ev: Evolution, start_names: Sequence[str], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per pair and recorded step (up to the step the pair stopped at): the pair, its start and target
    (index and name), the target probability, the top-1 class, the margin, ||g||_2 and the L2 / L-inf distance from
    the start, rounded for a CSV file."""
    rows = []
    cols = {k: getattr(ev, k).tolist() for k in ("prob", "top1", "margin", "grad_norm", "l2", "linf")}
    for i in range(len(ev.target)):
        s, t = int(ev.start[i]), int(ev.target[i])
        for step in range(int(ev.stopped[i]) + 1):
            rows.append(
                {
                    "pair": i,
                    "start": s,
                    "start_name": start_names[s],
                    "target": t,
                    "target_name": class_names[t],
                    "step": step,
                    "target_probability": round(cols["prob"][i][step], 6),
                    "top1": cols["top1"][i][step],
                    "margin": round(cols["margin"][i][step], 5),
                    "grad_norm": f"{cols['grad_norm'][i][step]:.4g}",
                    "l2": round(cols["l2"][i][step], 5),
                    "linf": round(cols["linf"][i][step], 5),
                }
            )
    return rows
