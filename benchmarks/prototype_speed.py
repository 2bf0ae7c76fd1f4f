"""Prototype throughput: (start, target) steps per second as a ratio to the model's ideal forward + backward
throughput at the same batch size, measured side by side in one run.

For each model one batch of pairs (one start, the first B classes as targets) is evolved for ``--steps`` steps:

* "ideal": ``steps + 1`` back-to-back forward + backward passes w.r.t. the input only (frozen parameters),
  i.e. B * (steps + 1) target-steps of pure model cost;
* "min, no convergence": :func:`advlab.prototypes.generate` in min mode with tol = 0, so every pair runs every
  step: the cost of the shared step (:class:`advlab.attacks.step.Iterate`: steepest direction, projection),
  the objective and the recorded trajectories on top of the model (goal: >= 0.9 at 10 or more pairs);
* "min, tol 1e-4": the default, where converged pairs stop: target-steps actually computed, per second;
* "max": max mode (double backprop: about three times the model cost per step, reported, not a goal);
* "natural recipe": ``prototypes.recipe("natural")`` (Fourier parametrization, one random view per step, the
  BN prior where the model has BatchNorm): the cost of the FFTs, the view and the prior on top of the model;
* "natural, 4 views/step": the same with four views per image and step, so four times the model's forwards
  and backwards per step (its ideal is four times the ideal row's cost: ratio ~0.25 is the expected).

Rows are interleaved round-robin over ``--repeats`` rounds and the median and minimum reported, with the
bookkeeping per step of "min, no convergence" ((its time - the ideal's) / (steps + 1), in ms).

    python benchmarks/prototype_speed.py   # digits-cnn (10 targets x 10 starts) and efficientnet-lite0 (10 targets)
    python benchmarks/prototype_speed.py --quick --models digits-cnn
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from advlab import prototypes, zoo
from advlab.attacks.base import frozen_parameters
from advlab.prototypes import Config

#: model -> (start spec, starts, targets, steps, quick steps)
SETTINGS: dict[str, tuple[str, int, int, int, int]] = {
    "digits-cnn": ("digits:test", 10, 10, 100, 20),
    "efficientnet-lite0": ("blank:gray", 1, 10, 20, 3),
}


def rows_for(
    model: torch.nn.Module, name: str, steps: int, n_starts: int | None = None
) -> dict[str, Callable[[], int]]:
    """Each row runs once and returns the number of target-steps it computed."""
    spec, default_starts, n_targets, _, _ = SETTINGS[name]
    n_starts = n_starts or default_starts
    info = model.info  # type: ignore[attr-defined]
    starts = prototypes.parse_start(spec, info.channels, info.input_size, limit=n_starts)
    targets = list(range(n_targets))
    batch = len(starts.x) * n_targets
    x = starts.x.repeat_interleave(n_targets, 0)
    y = torch.tensor(targets).repeat(len(starts.x))

    def ideal() -> int:
        with frozen_parameters(model):
            for _ in range(steps + 1):
                xr = x.detach().requires_grad_(True)
                torch.autograd.grad(F.cross_entropy(model(xr), y), xr)
        return batch * (steps + 1)

    def run(cfg: Config) -> Callable[[], int]:
        def go() -> int:
            ev = prototypes.generate(model, starts, targets, cfg, batch_size=batch).evolution
            return int((ev.stopped + 1).sum())

        return go

    return {
        "ideal (fwd + bwd)": ideal,
        "min, no convergence": run(Config(mode="min", steps=steps, tol=0.0)),
        "min, tol 1e-4": run(Config(mode="min", steps=steps)),
        "max (double backprop)": run(Config(mode="max", steps=steps)),
        "natural recipe": run(prototypes.recipe("natural", model, steps=steps)),
        "natural, 4 views/step": run(prototypes.recipe("natural", model, steps=steps, transforms_per_step=4)),
    }


def bench(name: str, steps: int, repeats: int, n_starts: int | None = None) -> dict[str, Any]:
    model = zoo.load(name)
    rows = rows_for(model, name, steps, n_starts)
    times: dict[str, list[float]] = {k: [] for k in rows}
    work: dict[str, int] = {}
    for k, fn in rows.items():  # warm-up
        work[k] = fn()
    keys = list(rows)
    for r in range(repeats):
        for i in range(len(keys)):
            k = keys[(i + r) % len(keys)]
            t0 = time.process_time()  # CPU time of this process: less sensitive to other jobs on the shared cores
            fn_work = rows[k]()
            times[k].append(time.process_time() - t0)
            work[k] = fn_work
    spec, default_starts, n_targets, _, _ = SETTINGS[name]
    n_starts = n_starts or default_starts
    print(
        f"\n== {name}: {spec}, {n_starts} start(s) x {n_targets} targets per batch, {steps} steps; load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    print(f"   {'row':<24}{'target-steps':>13}{'median s':>10}{'steps/s':>10}{'x ideal':>9}{'min s':>9}{'x ideal':>9}")
    ideal = "ideal (fwd + bwd)"
    out: dict[str, Any] = {"model": name, "steps": steps, "rows": {}}
    for k in keys:
        med, low = statistics.median(times[k]), min(times[k])
        rate, rate_min = work[k] / med, work[k] / low
        ratio = rate / (work[ideal] / statistics.median(times[ideal]))
        ratio_min = rate_min / (work[ideal] / min(times[ideal]))
        print(f"   {k:<24}{work[k]:>13}{med:>10.3f}{rate:>10.1f}{ratio:>8.2f}x{low:>9.3f}{ratio_min:>8.2f}x")
        out["rows"][k] = {
            "target_steps": work[k],
            "median_s": med,
            "min_s": low,
            "throughput_ratio_median": ratio,
            "throughput_ratio_min": ratio_min,
        }
    per_step = {
        f: (f(times["min, no convergence"]) - f(times[ideal])) / (steps + 1) * 1e3 for f in (statistics.median, min)
    }
    print(
        f"   bookkeeping per step (min, no convergence - ideal): {per_step[statistics.median]:.3f} ms median, "
        f"{per_step[min]:.3f} ms min"
    )
    out["bookkeeping_ms_per_step"] = {"median": per_step[statistics.median], "min": per_step[min]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(SETTINGS), help="comma list of: " + ", ".join(SETTINGS))
    ap.add_argument("--steps", type=int, help="steps per run (default per model)")
    ap.add_argument(
        "--starts",
        type=int,
        help="start images per batch (default per model: 10 digits, 1 grey image); pairs = starts x 10 targets",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="few steps, one repeat (a smoke test)")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}, {os.cpu_count()} CPUs")
    results = []
    for name in args.models.split(","):
        if name not in SETTINGS:
            print(f"unknown model {name!r}; choose from {', '.join(SETTINGS)}", file=sys.stderr)
            return 2
        steps = args.steps or SETTINGS[name][4 if args.quick else 3]
        results.append(bench(name, steps, 1 if args.quick else args.repeats, args.starts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
