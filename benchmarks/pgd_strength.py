"""PGD-10 strength against torchattacks, Foolbox and ART over several seeds: robust accuracy per seed, side by side.

The random start decides a few images either way, so one run per library (as in ``pgd_speed.py``) cannot
say which attack is stronger. Here every library attacks the digits CNN on all 599 test digits (L-inf 0.1,
alpha 0.025, 10 steps, one uniform random start) once per seed, and the robust accuracies are printed per
seed with their means and standard deviations. Every library draws its own starts (advlab's start of an image
depends only on the seed and the image itself, so that it does not change with the batch; torchattacks and
Foolbox draw from ``torch.manual_seed(s)``, ART from ``np.random.seed(s)``), so the columns compare through
their means. Image for image, the same attack without a random start is deterministic: the last line compares
advlab's ``PGD(random_start=False).perturb`` (the last iterate) and its full result (the best iterate) with
torchattacks' ``PGD(random_start=False)``. The attacks are built exactly as in ``pgd_speed.py``.

    python benchmarks/pgd_strength.py --seeds 8
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import numpy as np
import torch

from advlab import data, zoo
from pgd_speed import Problem, advlab_row, art_row, foolbox_row, torchattacks_row

ROWS = {"advlab": advlab_row, "torchattacks": torchattacks_row, "foolbox": foolbox_row, "art": art_row}


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

    results: dict[str, list[float]] = {}
    for name, build in ROWS.items():
        try:
            run, finish = build(model, Problem(x, y, 0.1, 0.025, 10, torch.device("cpu")))
        except Exception as e:  # noqa: BLE001 - any import or set-up failure means "not available"
            print(f"{name}: not available ({type(e).__name__})")
            continue
        acc = []
        for s in range(args.seeds):
            torch.manual_seed(s)
            np.random.seed(s)
            # advlab's generator comes from the attack's seed, not the global one
            call: Callable[[], object] = (lambda s=s: _advlab(model, x, y, s)) if name == "advlab" else run
            acc.append(robust(finish(call())))
        results[name] = acc
    names = list(results)
    print(f"{'seed':>4}" + "".join(f"  {n:>12}" for n in names))
    for s in range(args.seeds):
        print(f"{s:>4}" + "".join(f"  {results[n][s]:12.2%}" for n in names))
    print(f"{'mean':>4}" + "".join(f"  {statistics.mean(results[n]):12.2%}" for n in names))
    if args.seeds > 1:
        print(f"{'std':>4}" + "".join(f"  {statistics.stdev(results[n]):12.2%}" for n in names))
    _deterministic(model, x, y, robust)
    return 0


def _deterministic(
    model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, robust: Callable[[torch.Tensor], float]
) -> None:
    """PGD-10 without a random start in advlab and torchattacks: the same iterates up to float rounding."""
    from advlab import attacks

    atk = attacks.PGD(eps=0.1, alpha=0.025, steps=10, norm="linf", random_start=False)
    last, best = atk.perturb(model, x, y), atk(model, x, y).x_adv
    line = f"no random start: advlab last iterate {robust(last):.2%}, best iterate {robust(best):.2%}"
    try:
        import torchattacks

        ta = torchattacks.PGD(model, eps=0.1, alpha=0.025, steps=10, random_start=False)(x, y)
        gap = float((ta - last).abs().max())
        line += f", torchattacks {robust(ta):.2%}; max |x_adv difference| to torchattacks {gap:.3g}"
    except Exception as e:  # noqa: BLE001 - any import or set-up failure means "not available"
        line += f", torchattacks not available ({type(e).__name__})"
    print(line)


def _advlab(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    from advlab import attacks

    return attacks.PGD(eps=0.1, alpha=0.025, steps=10, norm="linf", random_start=True, seed=seed)(model, x, y)


if __name__ == "__main__":
    raise SystemExit(main())
