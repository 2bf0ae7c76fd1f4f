"""``advlab selftest``: every minimum-norm attack against models whose minimal adversarial distance is known exactly
(:mod:`advlab.experiments.known`); prints each attack's distance ratio to the true minimum and exits 1 when an
attack is worse than it should be (0 when all pass). Writes nothing."""

from __future__ import annotations

import argparse
import json

from advlab.cli.common import SEED_RANGE, add_command, bounded_int, say, seed_int
from advlab.errors import AdvlabError
from advlab.experiments import known

#: the most samples per known-answer problem (every attack of the suite runs on each)
MAX_N = 10_000


def register(sub: argparse._SubParsersAction, flags: argparse.ArgumentParser) -> None:
    p = add_command(
        sub,
        flags,
        "selftest",
        help="known-answer tests of the minimum-norm attacks",
        description="Run FMN (L0, L1, L2, L-inf), DDN, C&W, L-BFGS, DeepFool and FAB (L1, L2, L-inf) on a random "
        "linear classifier and a maxout network\n"
        "(8x8 inputs) whose minimal adversarial distances are computed exactly (box included), and compare.\n"
        "ratio = distance found / true minimum (1 is optimal; inf: not found). An attack fails when fewer samples\n"
        "than it needs are within its tolerance, or when it beats the true minimum (a broken measure).\n\n"
        f"attacks: {', '.join(known.SUITE)}\n\n"
        "examples:\n"
        "  advlab selftest\n"
        "  advlab selftest --attacks fmn,ddn --n 128 --seed 1",
    )
    p.add_argument("--attacks", help="comma-separated labels of the suite (default: all)")
    p.add_argument("--n", type=bounded_int(1, MAX_N), default=64, help=f"samples per problem (1..{MAX_N})")
    p.add_argument("--seed", type=seed_int, default=0, help=f"seed of the random problems ({SEED_RANGE})")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    labels = [a.strip() for a in args.attacks.split(",") if a.strip()] if args.attacks else None
    for label in labels or []:
        if label not in known.SUITE:
            raise AdvlabError(f"unknown self-test attack {label!r}; choose from {', '.join(known.SUITE)}")
    checks = known.selftest(labels, n=args.n, seed=args.seed)
    if args.json:
        print(json.dumps([c.to_dict() for c in checks], indent=2))
    else:
        say(
            args,
            f"{'attack':9} {'model':7} {'norm':5} {'median':>8} {'worst':>8} {'min':>8} {'within':>7} "
            f"{'need':>12}  result",
        )
        for c in checks:
            need = f"{c.expect.need:.0%} <= {1 + c.expect.tol:.2f}"
            say(
                args,
                f"{c.attack:9} {c.problem:7} {c.norm:5} {c.median:8.4f} {c.worst:8.3f} {c.below:8.4f} "
                f"{c.within:7.1%} {need:>12}  {'ok' if c.passed else 'FAIL'}",
            )
        failed = [c for c in checks if not c.passed]
        say(
            args,
            f"{len(checks) - len(failed)} of {len(checks)} checks passed"
            + (f"; failed: {', '.join(sorted({c.attack for c in failed}))}" if failed else ""),
        )
    return 1 if any(not c.passed for c in checks) else 0
