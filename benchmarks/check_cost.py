"""What the reliable evaluation's checks cost: ``evaluate`` with its checks (``sanity=True``: the probe, the noise,
steps, zero-gradient, unconstrained and finite-difference checks, the indicators) against the same cascade without
them (``sanity=False``), side by side in one process.

Settings: efficientnet-lite0 on the 4 sample photos at L-inf 8/255 (every photo breaks at once, so the checks have
almost nothing left to look at) and the shipped digits CNN on the first ``--limit`` test digits at L-inf 0.1
(a third stay unbroken: the checks run on those). ``time.process_time`` at ``torch.set_num_threads(1)``, one untimed
warm-up, then ``--repeats`` round-robin rounds; printed per setting: min and median CPU seconds of each and the
ratios to no checks (the goal for the checks: at most 1.25x), the model passes per image, and the robust
accuracies (equal unless a check broke more samples). A third arm adds the active test (``EvalConfig.active_test``
samples), a cost bounded by that number, not by the data.

    python benchmarks/check_cost.py
    python benchmarks/check_cost.py --repeats 5 --limit 200
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from advlab import data, zoo
from advlab.evaluation import EvalConfig, EvalReport, evaluate


def settings(limit: int) -> dict[str, tuple[torch.nn.Module, tuple[torch.Tensor, torch.Tensor], float]]:
    lite = zoo.load("efficientnet-lite0")
    photos = data.load_for_model("samples", 224, 3, model_classes=lite.info.data_classes)[:2]
    x, y = data.load("digits:test")
    return {
        "lite0 / 4 photos / linf 8/255": (lite, (photos[0], photos[1]), 8 / 255),
        f"digits-cnn / {limit} digits / linf 0.1": (zoo.load("digits-cnn"), (x[:limit], y[:limit]), 0.1),
    }


#: the arms: (checks on, active test samples)
ARMS = {"no checks": (False, 0), "checks": (True, 0), "checks + active test": (True, EvalConfig.active_test)}


def timed(
    model: torch.nn.Module, xy: tuple[torch.Tensor, torch.Tensor], eps: float, arm: tuple[bool, int]
) -> tuple[float, EvalReport]:
    t0 = time.process_time()
    rep = evaluate(model, xy, EvalConfig(eps=eps, sanity=arm[0], active_test=arm[1]))
    return time.process_time() - t0, rep


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--limit", type=int, default=120)
    args = p.parse_args()
    torch.set_num_threads(1)
    for name, (model, xy, eps) in settings(args.limit).items():
        timed(model, xy, eps, ARMS["checks"])  # warm-up
        times: dict[str, list[float]] = {arm: [] for arm in ARMS}
        reports: dict[str, EvalReport] = {}
        for _ in range(args.repeats):
            for arm, how in ARMS.items():
                sec, reports[arm] = timed(model, xy, eps, how)
                times[arm].append(sec)
        off = times["no checks"]
        print(f"{name} (process s, min/median; ratio to no checks):")
        for arm, t in times.items():
            r = reports[arm]
            print(
                f"  {arm:<22} {min(t):7.2f} / {statistics.median(t):7.2f}  {min(t) / min(off):5.2f}x / "
                f"{statistics.median(t) / statistics.median(off):5.2f}x  fwd {r.forwards_per_image:6.1f} bwd "
                f"{r.backwards_per_image:6.1f} per image, robust {r.robust_accuracy:.4f}, trust {r.trust}, "
                f"active test {r.active_test}"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
