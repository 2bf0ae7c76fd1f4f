"""Success rate against the query budget: the score-based black-box attacks (NES, SPSA, Square) next to
random noise with the same number of queries and white-box PGD-10 / PGD-100 at the same eps.

Digits part: the first ``--n`` test digits the digits CNN classifies correctly (so success = a right
answer changed), untargeted, L-inf ``--eps`` (a comma list runs one table per eps). Every black-box
attack runs once per budget in ``--budgets`` with ``max_queries`` = the budget and its default settings
(each sample stops at its first success), so a column is what a user with that budget gets; for Square
the size schedule itself depends on the budget. Per row: the success rate at each budget, then, at the
largest budget, the median queries of the broken samples and the mean queries per image. The PGD rows
(``early_stop=True``, default step 2.5 eps / steps, random start) count gradients instead: the median
gradients of the broken samples and the mean gradients per image (each also costs one forward).

``--lite``: efficientnet-lite0 on the 4 sample photos (labels: its own clean predictions), L-inf 4/255,
each black-box attack at ``--lite-budget`` queries: success and queries per photo.

    python benchmarks/blackbox_queries.py                         # digits, eps 0.1 and 0.2 (a few minutes on 1 thread)
    python benchmarks/blackbox_queries.py --eps 0.2 --budgets 10,100,1000 --lite
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advlab import attacks, data, zoo

BLACK_BOX: dict[str, Callable[[float, int], attacks.Attack]] = {
    "noise": lambda eps, q: attacks.RandomNoise(eps=eps, tries=q),
    "nes": lambda eps, q: attacks.NES(eps=eps, max_queries=q),
    "spsa": lambda eps, q: attacks.SPSA(eps=eps, max_queries=q),
    "square": lambda eps, q: attacks.Square(eps=eps, max_queries=q),
}


def _floats(text: str) -> list[float]:
    return [float(t) for t in text.split(",") if t.strip()]


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def _median(v: torch.Tensor) -> float:
    return float(v.float().median()) if v.numel() else float("nan")


def run(atk: attacks.Attack, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[attacks.AttackResult, float]:
    t0 = time.perf_counter()
    res = atk(model, x, y)
    return res, time.perf_counter() - t0


def digits_table(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, budgets: list[int]) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    head = (
        f"{'attack':<16}"
        + "".join(f"{'q=' + str(b):>8}" for b in budgets)
        + f"{'median q':>10}{'mean q':>9}{'seconds':>9}"
    )
    print(
        f"\n== digits-cnn, {len(x)} clean-correct test digits, untargeted L-inf eps {eps:g}: "
        "success rate by query budget"
    )
    print(head)
    print("-" * len(head))
    for name, build in BLACK_BOX.items():
        rates, seconds = [], 0.0
        for b in budgets:
            res, dt = run(build(eps, b), model, x, y)
            assert int(res.forwards.max()) <= b and int(res.backwards.sum()) == 0
            rates.append(res.success_rate)
            seconds += dt
        med, mean = _median(res.forwards[res.success]), float(res.forwards.float().mean())
        rows[name] = {
            "success": dict(zip(budgets, rates, strict=True)),
            "median_queries": med,
            "mean_queries": mean,
            "seconds": seconds,
        }
        print(f"{name:<16}" + "".join(f"{r:8.1%}" for r in rates) + f"{med:10.0f}{mean:9.1f}{seconds:9.1f}")
    print(f"\n{'white box':<16}{'success':>8}{'median grads':>14}{'mean grads':>12}{'seconds':>9}")
    for steps in (10, 100):
        res, dt = run(attacks.PGD(eps=eps, steps=steps, early_stop=True), model, x, y)
        med, mean = _median(res.backwards[res.success]), float(res.backwards.float().mean())
        rows[f"pgd-{steps}"] = {
            "success": res.success_rate,
            "median_gradients": med,
            "mean_gradients": mean,
            "seconds": dt,
        }
        print(f"{'PGD-' + str(steps):<16}{res.success_rate:8.1%}{med:14.0f}{mean:12.1f}{dt:9.1f}")
    return rows


def lite_table(budget: int) -> dict[str, Any]:
    model = zoo.load("efficientnet-lite0")
    x, _, _ = data.load_for_model("samples", 224, 3)
    with torch.no_grad():
        y = model(x).argmax(1)
    eps = 4 / 255
    print(
        f"\n== efficientnet-lite0, the {len(x)} sample photos (labels: its clean predictions), "
        f"L-inf 4/255, {budget} queries"
    )
    print(f"{'attack':<16}{'success':>8}  {'queries per photo':<28}{'seconds':>9}")
    rows: dict[str, Any] = {}
    for name, build in BLACK_BOX.items():
        res, dt = run(build(eps, budget), model, x, y)
        rows[name] = {"success": res.success_rate, "queries": res.forwards.tolist(), "seconds": dt}
        print(f"{name:<16}{res.success_rate:8.1%}  {str(res.forwards.tolist()):<28}{dt:9.1f}")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200, help="clean-correct test digits")
    p.add_argument("--eps", type=_floats, default=[0.1, 0.2], help="comma list of L-inf radii (one table each)")
    p.add_argument("--budgets", type=_ints, default=[10, 30, 100, 300, 1000], help="comma list of query budgets")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--lite", action="store_true", help="also efficientnet-lite0 on the 4 sample photos")
    p.add_argument("--lite-budget", type=int, default=300)
    p.add_argument("--json", help="write every number to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}")
    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    x, y = x[ok][: args.n], y[ok][: args.n]
    out: dict[str, Any] = {"digits": {str(e): digits_table(model, x, y, e, sorted(args.budgets)) for e in args.eps}}
    if args.lite:
        out["lite"] = lite_table(args.lite_budget)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
