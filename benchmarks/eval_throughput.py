"""``advlab.evaluate`` on a folder of photos against the model's ideal forward + backward throughput.

The script makes an ImageFolder in a temporary directory: ``--n`` PNG photos of ``--size`` x ``--size`` pixels in
class folders ``0/ .. 3/``, class k cut from sample photo k (chelsea, coffee, rocket, motorcycle) by a random crop
(40-95% of the short side, anywhere), a random horizontal flip and a random brightness (x 0.75-1.25), seeded. The
model is a small CNN in a model file (3 strided 3x3 convolutions 3 -> 16 -> 32 -> 64, global average pool, a linear
layer to 4 classes; seeded random weights; ``input_size`` = ``--size``), loaded with ``zoo.load``. The attack is
PGD L-inf 4/255 with ``--steps`` steps (early stopping: each image stops at its first success), or a preset
(``--preset fast``), every image attacked (``attack_misclassified=True``: a random model is mostly wrong),
sanity checks on, as ``advlab.evaluate(model, "folder:DIR", config)`` runs by default.

Rows, timed round robin over ``--repeats`` (``time.process_time`` of this process at one torch thread, and wall
time; min and median):

* ``ideal fwd+bwd``: one forward + backward with respect to the input of one batch of ``--batch`` images already in
  memory (``torch.autograd.grad(cross_entropy(model(x), y), x)``), the model's own cost; ``ideal fwd``: a forward
  under ``no_grad``;
* ``evaluate folder``: ``advlab.evaluate(model, "folder:DIR", config)``, all ``--n`` images decoded from disk;
* ``evaluate tensors``: the same on the same images decoded beforehand into one ``(x, y)`` pair.

Printed: images/s of each row; the ratio of ``evaluate folder``'s images/s to the ideal fwd+bwd images/s (how many
images an evaluation gets through per image the bare model could take one gradient step on); the model-pass floor
of the evaluation (its counted gradient evaluations x the ideal fwd+bwd seconds per image + its other forwards x the
ideal forward seconds per image) divided by its time (1.00: no time outside the model); folder / tensors. Also the
peak resident memory (ru_maxrss) after evaluating the first ``--n // 10`` images, then all ``--n``.

    python benchmarks/eval_throughput.py                          # 3,000 photos of 64x64, PGD-5, 2 repeats
    python benchmarks/eval_throughput.py --preset fast --size 96
    python benchmarks/eval_throughput.py --quick                   # smoke test: 60 photos of 32x32, PGD-1
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image, ImageEnhance

import advlab
from advlab import zoo
from advlab.attacks import PGD
from advlab.data.images import read_image
from advlab.data.sets import SAMPLE_PHOTOS
from advlab.evaluation import EvalConfig

MODEL_FILE = """import torch
from torch import nn

def make():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 4),
    )
    net.input_size = {size}
    return net
"""


def make_folder(root: Path, n: int, size: int, seed: int = 0) -> None:
    """``n`` PNG photos of ``size`` x ``size`` in ``root/0 .. root/3``: random crops, flips and brightness of the
    first four sample photos (class k from photo k), as described in the module docstring."""
    rng = random.Random(seed)
    photos = [Image.fromarray(p.load()).convert("RGB") for p in SAMPLE_PHOTOS[:4]]
    for k in range(4):
        (root / str(k)).mkdir(parents=True)
    for i in range(n):
        k = i % 4
        img = photos[k]
        side = int(min(img.size) * rng.uniform(0.4, 0.95))
        left, top = rng.randint(0, img.width - side), rng.randint(0, img.height - side)
        crop = img.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.75, 1.25))
        crop.save(root / str(k) / f"{i:05d}.png")


def read_all(root: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of the folder decoded into one (N, 3, size, size) tensor in [0, 1], labels the folder index."""
    paths = sorted(root.glob("*/*.png"))
    x = torch.stack([read_image(p, size) for p in paths])
    return x, torch.tensor([int(p.parent.name) for p in paths])


def ideal(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The two floors on one batch: forward + backward with respect to the input, and a forward alone."""

    def fwd_bwd() -> object:
        xg = x.clone().requires_grad_(True)
        return torch.autograd.grad(torch.nn.functional.cross_entropy(model(xg), y), xg)

    def fwd() -> object:
        with torch.no_grad():
            return model(x)

    return {"ideal fwd+bwd": fwd_bwd, "ideal fwd": fwd}


def time_rows(rows: dict[str, Callable[[], object]], repeats: int) -> dict[str, dict[str, list[float]]]:
    """Process and wall seconds of every row per repeat, rows interleaved round robin (the first repeat is also
    the warm-up of the cheap rows: those are repeated ``inner`` times per timing)."""
    out: dict[str, dict[str, list[float]]] = {k: {"cpu": [], "wall": []} for k in rows}
    for _ in range(repeats):
        for name, run in rows.items():
            inner = 20 if name.startswith("ideal") else 1
            c0, w0 = time.process_time(), time.perf_counter()
            for _ in range(inner):
                run()
            out[name]["cpu"].append((time.process_time() - c0) / inner)
            out[name]["wall"].append((time.perf_counter() - w0) / inner)
    return out


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def config_of(args: argparse.Namespace, limit: int | None = None) -> EvalConfig:
    """The evaluation: PGD-``steps`` L-inf 4/255 or ``--preset``, every image attacked, at ``--batch``."""
    eps = 4 / 255
    attacks = None if args.preset else (PGD(eps=eps, steps=args.steps),)
    return EvalConfig(
        attacks=attacks, preset=args.preset, eps=eps, attack_misclassified=True, batch_size=args.batch, limit=limit
    )


def report(args: argparse.Namespace, times: dict[str, dict[str, list[float]]], counts: dict[str, float]) -> dict:
    """Print the table and the ratios; returns them."""
    per_batch = {"ideal fwd+bwd": args.batch, "ideal fwd": args.batch}
    print(f"   {'row':<18} {'min cpu s':>10} {'median cpu s':>13} {'median wall s':>14} {'images/s (min cpu)':>19}")
    rate = {}
    for row, t in times.items():
        rate[row] = per_batch.get(row, args.n) / min(t["cpu"])
        print(
            f"   {row:<18} {min(t['cpu']):10.4f} {statistics.median(t['cpu']):13.4f} "
            f"{statistics.median(t['wall']):14.4f} {rate[row]:19.1f}"
        )
    t_fb, t_f = (min(times[k]["cpu"]) / args.batch for k in ("ideal fwd+bwd", "ideal fwd"))
    floor = counts["gradients"] * t_fb + max(counts["forwards"] - counts["gradients"], 0) * t_f
    ratios = {
        "evaluate_over_ideal_fwd_bwd": rate["evaluate folder"] / rate["ideal fwd+bwd"],
        "model_floor_over_evaluate": floor / min(times["evaluate folder"]["cpu"]),
        "folder_over_tensors_time": min(times["evaluate folder"]["cpu"]) / min(times["evaluate tensors"]["cpu"]),
        "median_evaluate_over_ideal_fwd_bwd": (args.n / statistics.median(times["evaluate folder"]["cpu"]))
        / (args.batch / statistics.median(times["ideal fwd+bwd"]["cpu"])),
    }
    print(
        f"   evaluate folder / ideal fwd+bwd images/s: min {ratios['evaluate_over_ideal_fwd_bwd']:.3f}  median "
        f"{ratios['median_evaluate_over_ideal_fwd_bwd']:.3f}\n"
        f"   per image: {counts['gradients'] / args.n:.2f} gradient evaluations, {counts['forwards'] / args.n:.2f} "
        f"forwards; model-pass floor / evaluate time: {ratios['model_floor_over_evaluate']:.3f}\n"
        f"   evaluate folder / evaluate tensors (time): {ratios['folder_over_tensors_time']:.3f}"
    )
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=3000, help="photos in the folder")
    ap.add_argument("--size", type=int, default=64, help="their side, pixels (also the model's input size)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="PGD steps (without --preset)")
    ap.add_argument("--preset", choices=("fast", "reliable"), help="a preset instead of PGD")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="60 photos of 32x32, batch 16, PGD-1, 1 repeat")
    ap.add_argument("--json", help="write every number here")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.size, args.batch, args.steps, args.repeats = 60, 32, 16, 1, 1
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="advlab-eval-throughput-") as tmp:
        root = Path(tmp) / "photos"
        t0 = time.perf_counter()
        make_folder(root, args.n, args.size)
        (Path(tmp) / "small_cnn.py").write_text(MODEL_FILE.format(size=args.size))
        model = zoo.load(f"{Path(tmp) / 'small_cnn.py'}:make")
        spec = f"folder:{root}"
        print(
            f"torch {torch.__version__}, 1 thread; {args.n} PNGs of {args.size}x{args.size} made in "
            f"{time.perf_counter() - t0:.1f} s; batch {args.batch}; "
            f"{args.preset or f'PGD-{args.steps}'} L-inf 4/255; {args.repeats} repeats"
        )
        first = advlab.evaluate(model, spec, config_of(args, limit=max(args.n // 10, 1)))
        rss_small = peak_rss_mb()
        full = advlab.evaluate(model, spec, config_of(args))
        rss_full = peak_rss_mb()
        print(
            f"   peak RSS {rss_small:.0f} MB after {first.n} images, {rss_full:.0f} MB after {full.n} "
            f"(robust accuracy {full.robust_accuracy:.3f}, clean {full.clean_accuracy:.3f}, trust {full.trust})"
        )
        x, y = read_all(root, args.size)
        rows = ideal(model, x[: args.batch], y[: args.batch])
        rows["evaluate folder"] = lambda: advlab.evaluate(model, spec, config_of(args))
        rows["evaluate tensors"] = lambda: advlab.evaluate(model, (x, y), config_of(args))
        times = time_rows(rows, args.repeats)
    counts = {"gradients": float(full.gradient_evaluations), "forwards": float(full.forward_evaluations)}
    ratios = report(args, times, counts)
    if args.json:
        payload = {"args": vars(args), "times": times, "counts": counts, "ratios": ratios}
        payload["peak_rss_mb"] = {"first": rss_small, "all": rss_full}
        Path(args.json).write_text(json.dumps(payload, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
