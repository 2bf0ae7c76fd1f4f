"""advlab's ``preset="autoattack"`` against AutoAttack standard itself, like for like, side by side in one process.

Per setting (the shipped digits CNN, ``zoo.load("digits-cnn")``, on the first ``--limit`` test digits,
``data.load("digits:test")``; L-inf 0.1 and L2 0.5 by default): AutoAttack's standard version from the installed
``pyautoattack`` package (APGD-CE, APGD-T on 9 targets, FAB-T on 9 targets, Square 5,000 queries; seed 0), then
``advlab.evaluate(model, (x, y), EvalConfig(preset="autoattack", eps=eps, norm=norm, sanity=False))`` (the same four
attacks, seed 0; the sanity checks are off because AutoAttack has none of advlab's). Printed: the robust accuracy of
each, the test digits only one of them left robust (the disagreement; the goal is at most 2 of 600), process time
(``time.process_time``, one thread: ``torch.set_num_threads(1)``) and its ratio advlab / AutoAttack, and advlab's
stages. Each runs once per setting (minutes on a CPU): the time ratio is one measurement, not a median over repeats.
A run without ``pyautoattack`` prints advlab's row and "not installed" for AutoAttack.

    .venv/bin/python benchmarks/autoattack_preset.py                      # 600 digits (all 599), both settings
    .venv/bin/python benchmarks/autoattack_preset.py --limit 200 --settings linf/0.1 --json aa.json
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from typing import Any

import torch
from torch import nn

from advlab import data, evaluate, zoo
from advlab.evaluation import EvalConfig
from eval_speed import report_numbers  # (run as a script: benchmarks/ is on the path)

SETTINGS = ("linf/0.1", "l2/0.5")


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> dict[str, Any]:
    """AutoAttack standard, seed 0: robust accuracy, per-image robust flags, process time."""
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", seed=0, device="cpu")
    logging.getLogger("auto-attack").setLevel(logging.WARNING)  # its per-stage log lines
    t0 = time.process_time()
    xa, _ = aa.run_standard_evaluation(x, y, batch_size=len(y))
    seconds = time.process_time() - t0
    with torch.no_grad():
        robust = (model(x).argmax(1) == y) & (model(xa).argmax(1) == y)
    return {"robust_accuracy": float(robust.float().mean()), "seconds": seconds, "robust": robust}


def run_advlab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> dict[str, Any]:
    """``preset="autoattack"``: robust accuracy, per-image robust flags, process time, its stages."""
    t0 = time.process_time()
    rep = evaluate(model, (x, y), EvalConfig(preset="autoattack", eps=eps, norm=norm, batch_size=len(y), sanity=False))
    return report_numbers(rep, time.process_time() - t0)


def compare(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> dict[str, Any]:
    """One setting: both runs, printed side by side; returns the numbers (JSON-able)."""
    n = len(y)
    print(f"\n-- {norm} eps {eps:g}: {n} test digits, digits-cnn", flush=True)
    try:
        aa: dict[str, Any] | None = run_autoattack(model, x, y, norm, eps)
    except ImportError as e:
        aa = None
        print(f"  autoattack  not installed ({type(e).__name__}: {e})")
    adv = run_advlab(model, x, y, norm, eps)
    print(f"  {'':24} {'robust acc':>10} {'robust':>7} {'process s':>10}")
    if aa is not None:
        print(
            f"  {'AutoAttack standard':24} {aa['robust_accuracy']:10.2%} {int(aa['robust'].sum()):7d} "
            f"{aa['seconds']:10.1f}"
        )
    print(
        f"  {'advlab preset=autoattack':24} {adv['robust_accuracy']:10.2%} {int(adv['robust'].sum()):7d} "
        f"{adv['seconds']:10.1f}"
    )
    out: dict[str, Any] = {
        "images": n,
        "advlab": {k: v for k, v in adv.items() if k != "robust"},
        "autoattack": None if aa is None else {k: v for k, v in aa.items() if k != "robust"},
    }
    if aa is not None:
        only_adv = (adv["robust"] & ~aa["robust"]).nonzero().flatten().tolist()
        only_aa = (aa["robust"] & ~adv["robust"]).nonzero().flatten().tolist()
        ratio = adv["seconds"] / max(aa["seconds"], 1e-9)
        print(
            f"  disagreement: {len(only_adv) + len(only_aa)} of {n} images (indices within the run) "
            f"(robust under advlab only: {only_adv}; under AutoAttack only: {only_aa})"
        )
        print(f"  process time advlab / AutoAttack: {ratio:.2f}x")
        out.update({"robust_advlab_only": only_adv, "robust_autoattack_only": only_aa, "time_ratio": ratio})
    for s in adv["stages"]:
        print(
            f"    advlab {s['stage']:8} attacked {s['attacked']:4d} broke {s['broken']:4d} "
            f"backwards {s['backwards']:8d} robust after {s['robust_after']:.2%}"
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=600, help="N test digits (599 in all)")
    p.add_argument("--start", type=int, default=0, help="the first test digit (default 0; chunks for parallel runs)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated norm/eps (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--json", help="write the numbers here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = zoo.load("digits-cnn").eval()
    x, y = data.load("digits:test")
    x, y = x[args.start : args.start + args.limit], y[args.start : args.start + args.limit]
    results = {}
    for setting in args.settings.split(","):
        norm, eps = setting.split("/")
        results[setting] = compare(model, x, y, norm, float(eps))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
