r"""Recognizability of prototypes: ``--recipe natural`` against ``--recipe adversarial`` on efficientnet-lite0.

For N ImageNet classes drawn by a fixed, documented seed (``sorted(torch.randperm(1000, generator=
torch.Generator().manual_seed(SEED))[:N])``, SEED = 0 by default) and each start, both recipes evolve one
prototype per class with :func:`advlab.prototypes.generate` (min mode, one batch of N pairs; a start of K images,
such as ``samples``, the four sample photos, gives image k the classes k, k + K, ...), and each prototype
is judged by the model itself and by other models (default efficientnet-lite1 and -lite2, the prototypes
resized to their input size) and the judges' ensemble: top-1 agreement with the target, the mean target
probability and the Inception-Score-style number (:func:`advlab.prototypes.judge`).

Throughput: each recipe's (pair, step)s per CPU second as a ratio to the ideal forward + backward throughput at
the same batch (``--ideal-steps`` back-to-back passes w.r.t. the input, frozen parameters, timed right before
the recipe's run: the rows are interleaved). Times are ``time.process_time()`` at ``torch.set_num_threads(1)``
(``--threads N``: summed over the N threads; the ratios stay side by side at the same setting).

    python benchmarks/recognizability.py                                  # 10 classes, blank:gray
    python benchmarks/recognizability.py --classes 100 --starts blank:gray noise:gaussian samples
    python benchmarks/recognizability.py --classes 4 --steps-natural 20 --steps-adversarial 20 \
        --judges efficientnet-lite1
    python benchmarks/recognizability.py --robust-digits --out-dir robust/   # robust vs standard digits CNN, a picture
    python benchmarks/recognizability.py --class-seed 1 --classes 20 --recipes natural \
        --natural scale=0.1,jitter=0.035,rotate=10

``--robust-digits``: a standard and a PGD-trained digits CNN (same epochs and seed), their prototypes under both
recipes judged by a third, independently trained digits CNN: does robustness make prototypes recognizable?
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from advlab import prototypes, zoo
from advlab.attacks.base import frozen_parameters
from advlab.data.images import resize_batch
from advlab.prototypes import Config, Evolution


def classes(n: int, seed: int, num_classes: int = 1000) -> list[int]:
    """The benchmark's classes: the first n of a seeded permutation of the (1000 ImageNet) classes, sorted."""
    return sorted(torch.randperm(num_classes, generator=torch.Generator().manual_seed(seed))[:n].tolist())


def ingredients(text: str) -> dict[str, float]:
    """``scale=0.1,rotate=10`` -> {"scale": 0.1, "rotate": 10.0} (recipe ingredients, numbers)."""
    pairs = [kv.partition("=") for kv in text.split(",") if kv]
    out = {k.strip().replace("-", "_"): float(v) for k, _, v in pairs}
    return {k: int(v) if k == "transforms_per_step" else v for k, v in out.items()}


def ideal_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> float:
    """CPU seconds per forward + backward w.r.t. the input of the batch ``x`` (mean over ``steps`` passes, after
    one untimed pass that allocates the batch's buffers)."""
    with frozen_parameters(model):
        for i in range(steps + 1):
            if i == 1:
                t0 = time.process_time()
            xr = x.detach().requires_grad_(True)
            torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
    return (time.process_time() - t0) / steps


def verdicts(
    model: torch.nn.Module, judges: dict[str, torch.nn.Module], x: torch.Tensor, t: torch.Tensor
) -> dict[str, Any]:
    """Each judge's (and the ensemble's) verdict on the prototypes ``x`` of targets ``t``, with its top-1 class
    of each."""
    probs = {"self": prototypes.class_probabilities(model, x)}
    for name, j in judges.items():
        size = j.info.input_size  # type: ignore[attr-defined]
        probs[name] = prototypes.class_probabilities(j, resize_batch(x, size))
    if len(judges) > 1:
        probs["ensemble"] = prototypes.ensemble([probs[name] for name in judges])
    return {k: {**prototypes.judge(p, t), "top1": p.argmax(1).tolist()} for k, p in probs.items()}


def one(
    model: torch.nn.Module,
    judges: dict[str, torch.nn.Module],
    start: str,
    targets: list[int],
    recipe: str,
    steps: int | None,
    ideal_steps: int,
    out_dir: Path | None,
    over: dict[str, float] | None = None,
) -> dict[str, Any]:
    info = model.info  # type: ignore[attr-defined]
    starts = prototypes.parse_start(start, info.channels, info.input_size)
    cfg = prototypes.recipe(recipe, model, steps=steps, **(over or {}))  # steps None: the recipe's own
    # a start of several images (the sample photos): image k takes the targets k, k + K, k + 2K, ... (K images)
    shares = [targets[k :: len(starts.x)] for k in range(min(len(starts.x), len(targets)))]
    x = starts.x[:1].expand(len(shares[0]), -1, -1, -1)  # the ideal at the runs' batch: the first image's share
    ideal_per_pair = ideal_seconds(model, x, torch.tensor(shares[0]), ideal_steps) / len(shares[0])
    t0 = time.process_time()
    evs = [
        prototypes.generate(model, starts.x[k : k + 1], ts, cfg, batch_size=len(ts), strip_pairs=[]).evolution
        for k, ts in enumerate(shares)
    ]
    seconds = time.process_time() - t0
    ev = Evolution.cat(evs)
    pair_steps = int((ev.stopped + 1).sum())
    row = {
        "start": start,
        "recipe": recipe,
        "steps": cfg.steps,
        "config": repr(cfg),
        "cpu_seconds": round(seconds, 1),
        "pair_steps_per_cpu_second": round(pair_steps / seconds, 3),
        "ratio_to_ideal": round(ideal_per_pair * pair_steps / seconds, 3),
        "images": len(shares),
        "targets": ev.target.tolist(),
        "final_top1_self": int((ev.final_top1 == ev.target).sum()),
        **verdicts(model, judges, ev.x, ev.target),
    }
    if out_dir is not None:
        from advlab.report import image_grid

        names = info.class_names
        titles = [f"{names[t][:14]}\np={float(p):.2f}" for t, p in zip(ev.target.tolist(), ev.final_prob, strict=True)]
        fig = image_grid(ev.x, titles, ncols=min(len(targets), 10), cell=1.6)
        fig.savefig(out_dir / f"{recipe}_{start.replace(':', '-')}.png", dpi=80)
        torch.save(ev.x, out_dir / f"{recipe}_{start.replace(':', '-')}.pt")
    return row


def robust_digits(out_dir: Path | None, epochs: int, eps: float, steps: int) -> list[dict[str, Any]]:
    """Robust vs standard (Santurkar et al. 2019, perceptually aligned gradients): two digits CNNs trained alike
    (``epochs``, seed 0), one with PGD adversarial training at L-inf ``eps``. From 20 test digits towards every
    other class, pixel PGD prototypes (min mode, ``steps`` steps of eps / 25) within L-inf budgets 0.1 .. 1, judged
    by a third CNN trained with seed 2: how often it names the target (of the 180 pairs whose target is not the
    digit shown)."""
    from advlab.data import load
    from advlab.defenses import training as train
    from advlab.zoo.digits import DigitsCNN

    x, y = load("digits:train")
    nets = {}
    for name, kw in (
        ("standard", {}),
        ("robust", {"adversarial": "pgd", "eps": eps, "adv_steps": 3}),
        ("judge", {"seed": 2}),
    ):
        net = DigitsCNN()
        t0 = time.process_time()
        train.fit(net, x, y, train.TrainConfig(epochs=epochs, **{"seed": 0, **kw}))
        nets[name] = net.eval()
        print(f"# trained {name} digits CNN ({kw or 'standard'}) in {time.process_time() - t0:.0f} cpu-s", flush=True)
    starts = prototypes.parse_start("digits:test", 1, 8, limit=20)
    other = starts.labels.repeat_interleave(10) != torch.arange(10).repeat(
        len(starts.x)
    )  # pairs whose target is not the digit shown
    rows, pictures, curves = [], [], {"standard": [], "robust": []}
    budgets = (0.1, 0.2, 0.3, 0.5, 1.0)
    for eps in budgets:
        for name in ("standard", "robust"):
            cfg = Config(steps=steps, eps=eps, alpha=eps / 25)
            ev = prototypes.generate(nets[name], starts, list(range(10)), cfg, batch_size=100).evolution
            j = prototypes.judge(prototypes.class_probabilities(nets["judge"], ev.x[other]), ev.target[other])
            row = {
                "eps": eps,
                "model": name,
                "self_top1": float((ev.final_top1 == ev.target)[other].float().mean()),
                "judge": j,
            }
            rows.append(row)
            curves[name].append(j["top1_agreement"])
            if eps == 0.3:
                pictures.append(ev.x[:10])
            print(
                f"eps {eps:4.2f} {name:9s} self top-1 {row['self_top1']:.0%}  judge top-1 {j['top1_agreement']:.0%} "
                f"p {j['target_probability_mean']:.3f}",
                flush=True,
            )
    if out_dir is not None:
        from advlab.report import image_grid, line_plot

        titles = [f"{name} -> {k}" for name in ("standard", "robust") for k in range(10)]
        image_grid(torch.cat(pictures), titles, ncols=10, cell=1.1).savefig(out_dir / "robust_vs_standard.png", dpi=80)
        line_plot(
            {f"{k} CNN": v for k, v in curves.items()},
            "L-inf budget eps",
            "independent judge: top-1 = target",
            "targeted prototypes from test digits (target != digit)",
            x=list(budgets),
        ).savefig(out_dir / "robust_vs_standard_curve.png", dpi=80)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--judges", nargs="*", default=["efficientnet-lite1", "efficientnet-lite2"])
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--class-seed", type=int, default=0)
    ap.add_argument("--starts", nargs="+", default=["blank:gray"])
    ap.add_argument("--recipes", nargs="+", default=["natural", "adversarial"])
    ap.add_argument("--steps-natural", type=int, help="default: the recipe's")
    ap.add_argument("--steps-adversarial", type=int, help="default: the recipe's")
    ap.add_argument("--ideal-steps", type=int, default=5)
    ap.add_argument("--out-dir", type=Path, help="write each recipe's grid (PNG) and prototypes (.pt) here")
    ap.add_argument("--json", type=Path, help="write the rows here")
    ap.add_argument(
        "--robust-digits", action="store_true", help="instead: prototypes of a PGD-trained digits CNN vs a standard one"
    )
    ap.add_argument("--epochs", type=int, default=20, help="--robust-digits: training epochs of each CNN")
    ap.add_argument("--eps", type=float, default=0.1, help="--robust-digits: adversarial training's L-inf radius")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (CPU seconds are summed over them)")
    ap.add_argument(
        "--natural",
        type=ingredients,
        default={},
        metavar="K=V,...",
        help="override natural-recipe ingredients, e.g. scale=0.1,jitter=0.035,rotate=10 (how the recipe was tuned)",
    )
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.out_dir:
        a.out_dir.mkdir(parents=True, exist_ok=True)
    if a.robust_digits:
        rows = robust_digits(a.out_dir, a.epochs, a.eps, 100)
        if a.json:
            a.json.write_text(json.dumps(rows, indent=2))
        return 0
    model = zoo.load(a.model).eval()
    judges = {j: zoo.load(j).eval() for j in a.judges}
    targets = classes(a.classes, a.class_seed, model.info.num_classes)  # type: ignore[attr-defined]
    print(
        f"# {a.model}, {len(targets)} classes (seed {a.class_seed}): {targets}; judges {', '.join(a.judges)}; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs, {a.threads} thread(s)",
        flush=True,
    )
    rows = []
    for start in a.starts:
        for recipe in a.recipes:
            steps = a.steps_natural if recipe == "natural" else a.steps_adversarial
            over = a.natural if recipe == "natural" else {}
            rows.append(one(model, judges, start, targets, recipe, steps, a.ideal_steps, a.out_dir, over))
            r = rows[-1]
            cells = "  ".join(
                f"{k}: top-1 {v['top1_agreement']:.0%} p {v['target_probability_mean']:.3f} IS "
                f"{v['inception_score']:.2f}"
                for k, v in r.items()
                if isinstance(v, dict)
            )
            print(
                f"{start:15s} {recipe:11s} {r['steps']:4d} steps  {r['cpu_seconds']:7.1f} cpu-s  ratio "
                f"{r['ratio_to_ideal']:.2f}  "
                f"self top-1 {r['final_top1_self']}/{len(targets)}  {cells}",
                flush=True,
            )
    if a.json:
        a.json.write_text(json.dumps({"classes": targets, "class_seed": a.class_seed, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
