"""digits-cnn in NCHW against channels_last: CPU time of PGD-10 on 256 digits:test images, one thread.

Both models carry the shipped weights; ``DigitsCNN(channels_last=False)`` is the plain NCHW network, the zoo's
default stores its convolution weights channels_last and converts its input. Each repeat times both layouts
back to back (round robin, so that noise from other processes hits both), with ``time.process_time`` (CPU
seconds of this process) at ``torch.set_num_threads(1)``; printed: each layout's min and median, and the
ratios channels_last / NCHW of the minima and of the medians (< 1: channels_last is faster). The logits are
checked to agree within 1e-5 first.

    python benchmarks/digits_layout.py [--repeats 5] [--n 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from advlab import data, zoo
from advlab.attacks import PGD
from advlab.zoo.checkpoint import load_weights
from advlab.zoo.digits import DigitsCNN
from advlab.zoo.normalize import Normalized
from advlab.zoo.registry import _digits_weights


def models() -> dict[str, torch.nn.Module]:
    """``{"nchw": ..., "channels_last": ...}``: digits-cnn with the shipped weights in both layouts, eval mode."""
    nchw = DigitsCNN(channels_last=False)
    load_weights(nchw, _digits_weights())
    return {"nchw": Normalized(nchw).eval(), "channels_last": zoo.load("digits-cnn")}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=256, help="digits:test images per PGD run")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    x, y = data.load("digits:test", limit=args.n)
    nets = models()
    with torch.no_grad():
        diff = float((nets["nchw"](x) - nets["channels_last"](x)).abs().max())
    assert diff <= 1e-5, f"the layouts disagree by {diff}"
    attack = PGD(eps=0.1, steps=10)
    for net in nets.values():  # warm-up (oneDNN primitive caches)
        attack(net, x, y)
    times: dict[str, list[float]] = {k: [] for k in nets}
    for _ in range(args.repeats):
        for name, net in nets.items():
            t0 = time.process_time()
            attack(net, x, y)
            times[name].append(time.process_time() - t0)
    for name, ts in times.items():
        print(
            f"{name:>13}: min {min(ts) * 1e3:7.1f} ms  median {statistics.median(ts) * 1e3:7.1f} ms  "
            f"({args.repeats} repeats)"
        )
    cl, base = times["channels_last"], times["nchw"]
    print(
        f"channels_last / nchw: min {min(cl) / min(base):.3f}  median "
        f"{statistics.median(cl) / statistics.median(base):.3f}"
        f"  (max |logit difference| {diff:.1e})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
