"""Zoo models in channels_last against NCHW: CPU time of PGD and of one forward + backward, one thread.

``zoo.load(name)`` lays out the built-in models channels_last (``memory_format="auto"``); this measures why. For
each model, ``zoo.load(name, memory_format="contiguous")`` (NCHW) and ``memory_format="channels_last"`` get the
same NCHW batch of sample photos (the 4 photos, flipped and dimmed, repeated to ``--batch``) at the model's size.
Rows: PGD L-inf 4/255 with ``--steps`` steps (early stopping off: the full budget), and the ideal step, one forward
+ backward with respect to the input (``torch.autograd.grad(cross_entropy(model(x), y), x)``). Each repeat times
every (row, layout) back to back, round robin, so noise from other processes hits both layouts; time is
``time.process_time`` (CPU seconds of this process) at ``torch.set_num_threads(1)`` after one untimed warm-up.
A third row, ``channels_last nhwc-in``, gives the channels_last model the batch in channels_last
too (what the zoo does not do: it converts the weights only). Printed: min and median per row, and the ratio
NCHW / channels_last of the minima and of the medians (> 1: channels_last is faster).
Logits and input gradients are checked to agree first (relative 1e-4).

    python benchmarks/channels_last.py                          # lite0, batch 8, PGD-5, 5 repeats (~2 min)
    python benchmarks/channels_last.py --models efficientnet-lite0,efficientnet-lite1,efficientnet-lite2,resnet18
    python benchmarks/channels_last.py --quick                  # smoke test: batch 2, PGD-1, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch

from advlab import data, zoo
from advlab.attacks import PGD

LAYOUTS = ("contiguous", "channels_last")


def batch(size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` NCHW images at ``size``: the sample photos as is, flipped, dimmed, flipped and dimmed, repeated."""
    x, _ = data.load("samples", size)
    variants = torch.cat([x, x.flip(3), 0.7 * x, 0.7 * x.flip(3)])
    reps = -(-n // len(variants))
    return variants.repeat(reps, 1, 1, 1)[:n].contiguous(), torch.zeros(n, dtype=torch.long)


def ideal_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One forward + backward with respect to the input: the model's own cost of one attack step."""
    x = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y), x)
    return g


def check_agree(models: dict[str, torch.nn.Module], x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """Max |logit difference| and max |gradient difference| relative to the largest gradient, between layouts."""
    a, b = (models[k] for k in LAYOUTS)
    with torch.no_grad():
        dl = float((a(x) - b(x)).abs().max())
    ga, gb = ideal_step(a, x, y), ideal_step(b, x, y)
    dg = float((ga - gb).abs().max() / ga.abs().max().clamp_min(1e-30))
    assert dl <= 1e-3 and dg <= 1e-4, f"the layouts disagree: logits {dl:.2e}, gradients {dg:.2e}"
    return dl, dg


def time_rows(rows: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """CPU seconds of every row per repeat, the rows interleaved round robin after one untimed warm-up each."""
    for run in rows.values():
        run()
    times: dict[str, list[float]] = {k: [] for k in rows}
    for _ in range(repeats):
        for name, run in rows.items():
            t0 = time.process_time()
            run()
            times[name].append(time.process_time() - t0)
    return times


def bench_model(name: str, n: int, steps: int, repeats: int) -> dict[str, object]:
    """Time PGD and the ideal step of ``name`` in both layouts; returns every number (seconds, ratios)."""
    models = {fmt: zoo.load(name, memory_format=fmt) for fmt in LAYOUTS}
    models["channels_last"].load_state_dict(models["contiguous"].state_dict())  # the same weights (random-init models)
    info = zoo.info_of(models["contiguous"])
    x, y = batch(info.input_size, n) if info.channels == 3 else data.load("digits:test", limit=n)
    dl, dg = check_agree(models, x, y)
    attack = PGD(eps=4 / 255, alpha=1 / 255, steps=steps, early_stop=False)
    rows: dict[str, Callable[[], object]] = {}
    xcl = x.contiguous(memory_format=torch.channels_last)
    for fmt, model, inp in (
        *((f, m, x) for f, m in models.items()),
        ("channels_last nhwc-in", models[LAYOUTS[1]], xcl),
    ):
        rows[f"pgd-{steps} {fmt}"] = lambda m=model, i=inp: attack(m, i, y)
        rows[f"fwd+bwd {fmt}"] = lambda m=model, i=inp: ideal_step(m, i, y)
    times = time_rows(rows, repeats)
    print(
        f"== {name}: batch {tuple(x.shape)} NCHW input; max |logit diff| {dl:.1e}, max relative gradient diff {dg:.1e}"
    )
    print(f"   {'row':<28} {'min s':>8} {'median s':>9}")
    for row, ts in times.items():
        print(f"   {row:<28} {min(ts):8.3f} {statistics.median(ts):9.3f}")
    ratios = {}
    for kind in (f"pgd-{steps}", "fwd+bwd"):
        for fast in ("channels_last", "channels_last nhwc-in"):
            base, cl = times[f"{kind} contiguous"], times[f"{kind} {fast}"]
            ratios[f"{kind} {fast}"] = (min(base) / min(cl), statistics.median(base) / statistics.median(cl))
            r = ratios[f"{kind} {fast}"]
            print(f"   {kind}: NCHW / {fast:<21}  min {r[0]:.3f}x  median {r[1]:.3f}x")
    return {"model": name, "batch": list(x.shape), "logit_diff": dl, "grad_diff": dg, "times": times, "ratios": ratios}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="efficientnet-lite0", help="comma list of zoo models")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=5, help="PGD steps")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="batch 2, PGD-1, 1 repeat (smoke test)")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.steps, args.repeats = 2, 1, 1
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), time.process_time, {args.repeats} repeats")
    results = [bench_model(m.strip(), args.batch, args.steps, args.repeats) for m in args.models.split(",")]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
