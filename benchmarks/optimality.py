"""Attack optimality (AttackBench, Cina et al. 2024) on the digits CNN: advlab's minimum-norm attacks against
torchattacks', Foolbox's and ART's implementations, at the same budget of forward + backward passes per image.

For each norm (L2, L-inf) every attack runs on the same N clean test digits; each image's reference distance
is the smallest any attack found, and each attack's optimality is 1 - (A - A*) / (clean_acc * eps_max - A*)
(:mod:`advlab.experiments.optimality`). advlab's APGD / APGD-T are made minimum-norm by a per-sample bisection
of 10 probes; the peers' bounded APGD cannot be searched per sample through their APIs and are left out.
Peers that do not import get a "not installed" row. One thread, CPU seconds (``time.process_time``).

    python benchmarks/optimality.py                   # 100 digits, budget 2000, standard and adversarially trained CNN
    python benchmarks/optimality.py --n 32 --budget 400 --no-robust    # quick
"""

from __future__ import annotations

import argparse

import torch

from advlab import data, zoo
from advlab.experiments.optimality import compare

ATTACKS = {
    "l2": [
        "fmn",
        "ddn",
        "cw",
        "deepfool",
        "apgd",
        "apgd-t",
        "foolbox:fmn",
        "foolbox:ddn",
        "foolbox:cw",
        "foolbox:deepfool",
        "torchattacks:cw",
        "torchattacks:deepfool",
        "art:cw",
        "art:deepfool",
    ],
    "linf": ["fmn", "deepfool", "apgd", "apgd-t", "foolbox:fmn", "foolbox:deepfool"],
}


def robust_model(x: torch.Tensor, y: torch.Tensor, epochs: int) -> torch.nn.Module:
    """The digits CNN trained with PGD adversarial training (L-inf 0.1, 7 steps) on the digits training set."""
    from advlab.defenses.training import TrainConfig, fit

    model = zoo.load("digits-cnn", pretrained=False)
    fit(model, x, y, TrainConfig(epochs=epochs, adversarial="pgd", eps=0.1))
    return model.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--budget", type=int, default=2000)
    p.add_argument("--norms", default="l2,linf")
    p.add_argument("--no-robust", action="store_true", help="skip the adversarially trained model")
    p.add_argument("--robust-only", action="store_true", help="only the adversarially trained model")
    p.add_argument("--epochs", type=int, default=10, help="adversarial training epochs")
    args = p.parse_args()
    torch.set_num_threads(1)
    x, y = data.load("digits:test")
    models = {} if args.robust_only else {"digits-cnn": lambda: zoo.load("digits-cnn").eval()}
    if not args.no_robust:  # trained when its turn comes, after the standard model's tables are out
        models[f"digits-cnn, PGD-trained ({args.epochs} epochs)"] = lambda: robust_model(
            *data.load("digits:train"), args.epochs
        )
    for label, build in models.items():
        model = build()
        with torch.no_grad():
            ok = model(x).argmax(1) == y
        xs, ys = x[ok][: args.n], y[ok][: args.n]
        for norm in args.norms.split(","):
            c = compare(model, xs, ys, ATTACKS[norm], norm, args.budget)
            print(f"\n== {label}, {norm}: {len(xs)} clean-correct test digits, budget {args.budget}", flush=True)
            print(c.markdown(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
