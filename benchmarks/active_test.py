"""The binarization test (``advlab.evaluation.active``) on the digits CNN: found rate of the reliable preset's attacks
against crippled ones, and its cost against evaluating the same samples.

On the first ``--samples`` test digits, for L-inf 0.1 and L2 0.5, each row runs ``active_test`` with an attack
ensemble (each attack on the samples still unbroken, as the cascade runs them) and prints found / tested, skipped,
the model's forwards and backwards per sample (the test's own forwards to build, verify and judge the tasks plus
the attacks' on the binarized model) and process time. The reference row, ``evaluate``, is the cost of the
reliable ensemble on the same samples with their true labels on the model itself (one clean forward, then the
attacks on the correctly classified ones), which is what the test adds to. ``--trap round`` runs it all on
``RoundQuantized(digits-cnn)`` (an input quantizer with zero gradients, :mod:`advlab.zoo.traps`), where the
gradient attacks should fail the test.

    python benchmarks/active_test.py                    # 64 digits, ~1-2 min on 2 CPU cores
    python benchmarks/active_test.py --samples 16 --threads 1
    python benchmarks/active_test.py --trap round
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from advlab import data, zoo
from advlab.attacks.apgd import APGD
from advlab.attacks.base import Attack
from advlab.attacks.pgd import PGD
from advlab.evaluation.active import active_test
from advlab.evaluation.presets import preset_attacks
from advlab.zoo.traps import RoundQuantized


def ensemble(
    attacks: Sequence[Attack], cost: list[int]
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """``run_attacks``: each attack on the samples still unbroken; adds its forwards and backwards to ``cost``."""

    def run(model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x_adv, todo = x.clone(), torch.ones(len(x), dtype=torch.bool)
        for atk in attacks:
            idx = todo.nonzero().flatten()
            if len(idx) == 0:
                break
            res = atk(model, x[idx], labels[idx])
            x_adv[idx] = res.x_adv
            todo[idx[res.success.cpu()]] = False
            cost[0] += int(res.forwards.sum())
            cost[1] += int(res.backwards.sum())
        return x_adv

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--inner-points", type=int, default=255, help="inner points per sample (the evaluation uses 63)"
    )
    parser.add_argument("--trap", choices=["none", "round"], default="none", help="wrap the CNN in a trap")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model: nn.Module = zoo.load("digits-cnn").eval()
    if args.trap == "round":
        model = RoundQuantized(model)
    x, y = data.load("digits:test")
    x, y = x[: args.samples], y[: args.samples]
    n = len(x)
    print(f"digits-cnn{' in RoundQuantized' if args.trap == 'round' else ''}, {n} test digits, seed {args.seed}")
    print(f"{'ball':<10} {'attacks':<24} {'found/tested':>12} {'skipped':>7} {'fwd/sample':>10} {'bwd/sample':>10} s")
    for eps, norm in ((0.1, "linf"), (0.5, "l2")):
        ball = f"{norm} {eps}"
        cost = [0, 0]
        t0 = time.process_time()
        with torch.no_grad():
            right = model(x).argmax(1) == y
        ensemble(preset_attacks("reliable", eps, norm), cost)(model, x[right], y[right])
        evaluate_fwd, evaluate_bwd = (n + cost[0]) / n, cost[1] / n
        t = time.process_time() - t0
        print(f"{ball:<10} {'evaluate (reliable)':<24} {'':>20} {evaluate_fwd:>10.1f} {evaluate_bwd:>10.1f} {t:>6.1f}")
        rows: list[tuple[str, Sequence[Attack]]] = [
            ("reliable", preset_attacks("reliable", eps, norm)),
            ("PGD-10", [PGD(eps=eps, norm=norm, steps=10)]),
            ("APGD-CE, 1 step", [APGD(eps=eps, norm=norm, steps=1)]),
            ("PGD-10, step eps/100", [PGD(eps=eps, norm=norm, steps=10, alpha=eps / 100)]),
        ]
        for name, attacks in rows:
            cost = [0, 0]
            t0 = time.process_time()
            res = active_test(
                model, x, eps, norm, ensemble(attacks, cost), samples=n, seed=args.seed, inner_points=args.inner_points
            )
            t = time.process_time() - t0
            fwd, bwd = (res.forwards + cost[0]) / n, cost[1] / n
            shown = f"{res.found}/{res.tested}"
            print(f"{ball:<10} {name:<24} {shown:>12} {res.skipped:>7} {fwd:>10.1f} {bwd:>10.1f} {t:>6.1f}")


if __name__ == "__main__":
    main()
