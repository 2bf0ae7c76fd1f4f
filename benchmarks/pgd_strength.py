"""PGD-10 strength against torchattacks over several seeds: robust accuracy per seed, side by side.

The random start decides a few images either way, so one run per library (as in ``pgd_speed.py``) cannot
say which attack is stronger. Here both draw their uniform start from the same seed (advlab from
``seed=s``, torchattacks from ``torch.manual_seed(s)``) on the digits CNN, all 599 test digits, L-inf 0.1,
alpha 0.025, and the robust accuracies are printed per seed with their means.

    python benchmarks/pgd_strength.py --seeds 8
"""

from __future__ import annotations

import argparse
import statistics

import torch

from advlab import attacks, data, zoo


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=8)
    args = p.parse_args()
    torch.set_num_threads(1)
    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    with torch.no_grad():
        correct = model(x).argmax(1) == y

    def robust(x_adv: torch.Tensor) -> float:
        with torch.no_grad():
            return float((correct & (model(x_adv).argmax(1) == y)).float().mean())

    try:
        import torchattacks
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        torchattacks = None
        print(f"torchattacks not installed ({type(e).__name__}); advlab only")
    print(f"{'seed':>4}  {'advlab':>8}  {'torchattacks':>12}")
    ours, theirs = [], []
    for s in range(args.seeds):
        ours.append(robust(attacks.PGD(eps=0.1, alpha=0.025, steps=10, seed=s)(model, x, y).x_adv))
        line = f"{s:>4}  {ours[-1]:8.2%}"
        if torchattacks is not None:
            torch.manual_seed(s)
            theirs.append(robust(torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10, random_start=True)(x, y)))
            line += f"  {theirs[-1]:12.2%}"
        print(line)
    print(f"mean  {statistics.mean(ours):8.2%}" + (f"  {statistics.mean(theirs):12.2%}" if theirs else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
