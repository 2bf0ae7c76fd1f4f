"""Attack strength under mixed precision: robust accuracy with the attacks in float32 and under autocast.

``advlab eval --amp`` runs the attacks on ``zoo.Autocast(model)`` (bfloat16) and counts a success only when
the float32 model confirms it (``evaluate(..., attack_model=)``); a claimed success that float32 does not
confirm is searched again in float32. That is safe (no success is claimed that the deployed model does not
show) but the search itself may get weaker: its gradients come from the reduced-precision model. This
benchmark measures by how much, per model and attack:

* ``float32``: the reference;
* ``bfloat16 / float16, confirmed``: attacks under autocast, successes re-checked in float32 (what --amp does);
* ``bfloat16 / float16, unchecked``: everything under autocast, the reduced-precision model's own verdict (what a
  naive AMP evaluation would report; it can claim successes the float32 model does not show).

Columns: robust accuracy (higher = weaker attack), its difference to float32 in percentage points, samples
broken only by float32 / only by the row, and seconds (on a CPU, autocast is no speed-up: the times here
say nothing about a GPU).

    python benchmarks/amp_strength.py                         # digits-cnn: all 599 test digits, eps 0.1
    python benchmarks/amp_strength.py --models digits-cnn,efficientnet-lite0 --dtypes bfloat16,float16
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from advlab import attacks, data, evaluate, zoo
from advlab.evaluation import EvalConfig

#: model -> (eps, data)
SETTINGS: dict[str, tuple[float, str]] = {
    "digits-cnn": (0.1, "digits:test"),
    "efficientnet-lite0": (0.2 / 255, "samples16"),
}


def _data(name: str, model: torch.nn.Module, spec: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    if spec == "samples16":  # the 16 photos of benchmarks/pgd_speed.py, labelled with the model's clean predictions
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from pgd_speed import load_batch

        return load_batch(name, model, 16)
    return data.load(spec, limit=limit)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="digits-cnn")
    ap.add_argument("--dtypes", default="bfloat16,float16")
    ap.add_argument("--limit", type=int, help="only the first N images")
    ap.add_argument(
        "--eps", type=float, help="L-inf eps in pixel units for every model (default: per model, see SETTINGS)"
    )
    ap.add_argument("--suites", default="PGD-10,fast preset")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the numbers to this file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows: list[dict[str, Any]] = []
    print(
        f"attack strength under autocast: torch {torch.__version__}, CPU, {args.threads} thread(s), load average "
        f"{os.getloadavg()[0]:.2f}"
    )
    for name in args.models.split(","):
        eps, spec = SETTINGS[name]
        eps = args.eps or eps
        model = zoo.load(name)
        x, y = _data(name, model, spec, args.limit)
        suites = {
            "PGD-10": {"attacks": (attacks.PGD(eps=eps, steps=10, seed=0),)},
            "fast preset": {"preset": "fast", "seed": 0},
        }
        print(f"\n== {name}: {len(x)} images of {spec}, L-inf eps {eps:.4g}")
        print(
            f"   {'attack':<12}{'precision':<28}{'robust acc':>11}{'diff pp':>9}{'only fp32':>10}{'only this':>10}"
            f"{'seconds':>9}"
        )
        for suite, kw in suites.items():
            if suite not in args.suites.split(","):
                continue
            ref = None
            variants: list[tuple[str, torch.nn.Module, torch.nn.Module | None]] = [("float32", model, None)]
            for d in args.dtypes.split(","):
                amp = zoo.Autocast(model, getattr(torch, d))
                variants += [(f"{d}, confirmed (--amp)", model, amp), (f"{d}, unchecked", amp, None)]
            for label, judge, attack_model in variants:
                t0 = time.perf_counter()
                try:
                    rep = evaluate(judge, (x, y), EvalConfig(**kw, eps=eps, batch_size=256), attack_model=attack_model)
                except RuntimeError as e:  # e.g. float16 autocast unsupported here
                    print(f"   {suite:<12}{label:<28}  not supported: {str(e).splitlines()[0][:60]}")
                    continue
                sec = time.perf_counter() - t0
                broken = rep.samples.broken
                if ref is None:
                    ref = rep
                diff = 100 * (rep.robust_accuracy - ref.robust_accuracy)
                only_ref, only_this = (
                    int((ref.samples.broken & ~broken).sum()),
                    int((broken & ~ref.samples.broken).sum()),
                )
                print(
                    f"   {suite:<12}{label:<28}{rep.robust_accuracy:>11.4f}{diff:>+9.2f}{only_ref:>10}{only_this:>10}"
                    f"{sec:>9.2f}"
                )
                rows.append(
                    {
                        "model": name,
                        "attack": suite,
                        "precision": label,
                        "robust_accuracy": rep.robust_accuracy,
                        "diff_pp": diff,
                        "only_fp32": only_ref,
                        "only_this": only_this,
                        "seconds": sec,
                    }
                )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
