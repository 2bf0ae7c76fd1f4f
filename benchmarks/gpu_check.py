"""The figures of ``scripts/gpu_check.sh`` (one GPU, efficientnet-lite0), as ratios measured in one process.

``speed``: on one batch of ``--batch`` images (the 4 sample photos, flipped and dimmed, repeated) at 224x224 on
the device, the ideal step (one forward + backward with respect to the input,
``torch.autograd.grad(cross_entropy(model(x), y), x)``) in five settings: NCHW and channels_last weights in
strict float32 (TF32 off for matmuls and cuDNN), NCHW and channels_last with TF32 on, and channels_last under
bfloat16 autocast (``zoo.Autocast``: float32 logits); then advlab's PGD-``--steps`` (L-inf 8/255, full budget,
``memory_format="auto"``, PyTorch's default TF32 settings). Timed round robin over ``--repeats`` after a warm-up
(CUDA synchronized, ``time.perf_counter``; on the CPU ``time.process_time``); min and median. Printed and written:
images/s of every row; each ideal row's speed-up over strict float32 NCHW; PGD images/s against the ideal
(``steps x`` the best ideal step's seconds / PGD's seconds: 1.00 = no time outside the model); and for TF32 and
bfloat16 the input gradient's cosine to strict float32's (per image: mean and min) and whether top-1 agrees.

``folder``: writes ``--n`` JPEG photos at 256x256 into ImageNet synset folders named after the 4 sample photos' classes
(tabby, espresso, missile, moped; random crops, flips, brightness), for ``advlab eval``.

    python benchmarks/gpu_check.py speed --device cuda --batch 256 --json speed.json
``summary``: reads what ``scripts/gpu_check.sh`` left in its folder (``steps.tsv``, ``speed.json``, the two eval
runs' ``metrics.json``) and writes ``figures.md``, the lines to paste into the README's "GPU figures".

    python benchmarks/gpu_check.py folder DIR --n 512
    python benchmarks/gpu_check.py summary OUTDIR
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from PIL import Image, ImageEnhance

from advlab import zoo
from advlab.attacks import PGD
from advlab.data import load_for_model
from advlab.data.classes import imagenet_synsets
from advlab.data.sets import SAMPLE_PHOTOS


@contextlib.contextmanager
def tf32(on: bool) -> Iterator[None]:
    """TF32 for matmuls and cuDNN convolutions on or off inside the block (restored after)."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def photo_batch(n: int, device: torch.device) -> torch.Tensor:
    """``n`` images at 224: the sample photos as is, flipped, dimmed, flipped and dimmed, repeated."""
    x, _, _ = load_for_model("samples", 224, 3)
    variants = torch.cat([x, x.flip(3), 0.7 * x, 0.7 * x.flip(3)])
    return variants.repeat(-(-n // len(variants)), 1, 1, 1)[:n].contiguous().to(device)


def input_gradient(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, input gradient of the mean cross-entropy): the ideal step."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    (g,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), x)
    return logits.detach(), g


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Seconds of one call: wall time with the GPU synchronized, or CPU time of this process on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize(device)
        return time.perf_counter() - t0
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def settings(device: torch.device) -> dict[str, tuple[torch.nn.Module, bool]]:
    """The ideal-step rows: name -> (model, TF32 on)."""
    nchw = zoo.load("efficientnet-lite0", device=device, memory_format="contiguous")
    cl = zoo.load("efficientnet-lite0", device=device, memory_format="channels_last")
    return {
        "fp32 nchw": (nchw, False),
        "fp32 channels_last": (cl, False),
        "tf32 nchw": (nchw, True),
        "tf32 channels_last": (cl, True),
        "bf16 channels_last": (zoo.Autocast(cl), False),
    }


def agreement(rows: dict[str, tuple[torch.nn.Module, bool]], x: torch.Tensor, y: torch.Tensor) -> dict[str, dict]:
    """Per row: the input gradient's cosine to strict float32 NCHW's (per image, mean and min), top-1 agreement."""
    with tf32(False):
        ref_logits, ref_grad = input_gradient(rows["fp32 nchw"][0], x, y)
    out = {}
    for name, (model, on) in rows.items():
        with tf32(on):
            logits, g = input_gradient(model, x, y)
        cos = torch.nn.functional.cosine_similarity(g.flatten(1), ref_grad.flatten(1), dim=1)
        top1 = (logits.argmax(1) == ref_logits.argmax(1)).float().mean()
        out[name] = {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min()), "top1_agree": float(top1)}
    return out


def speed(args: argparse.Namespace) -> dict:
    """The ``speed`` figures (see the module docstring); printed and returned."""
    device = torch.device(args.device)
    x = photo_batch(args.batch, device)
    rows = settings(device)
    with torch.no_grad():
        y = rows["fp32 nchw"][0](x).argmax(1)
    agree = agreement(rows, x, y)
    pgd_model = zoo.load("efficientnet-lite0", device=device)
    attack = PGD(eps=8 / 255, alpha=2 / 255, steps=args.steps, early_stop=False)
    calls: dict[str, Callable[[], object]] = {}
    for name, (model, on) in rows.items():

        def step(m: torch.nn.Module = model, on: bool = on) -> object:
            with tf32(on):
                return input_gradient(m, x, y)

        calls[name] = step
    calls[f"pgd-{args.steps}"] = lambda: attack(pgd_model, x, y)
    for fn in calls.values():  # warm-up: cuDNN autotuning, oneDNN primitive caches
        fn()
    times: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(args.repeats):
        for name, fn in calls.items():
            times[name].append(timed(fn, device))
    return summarize(args, device, times, agree)


def summarize(args: argparse.Namespace, device: torch.device, times: dict[str, list[float]], agree: dict) -> dict:
    """Images/s, speed-ups over strict float32 NCHW, PGD against the best ideal step; printed and returned."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"== efficientnet-lite0, batch {args.batch} at 224x224 on {name}, torch {torch.__version__}")
    base = min(times["fp32 nchw"])
    best = min(min(times[k]) for k in times if not k.startswith("pgd"))
    pgd = times[f"pgd-{args.steps}"]
    out: dict = {"device": name, "batch": args.batch, "steps": args.steps, "times": times, "rows": {}}
    print(
        f"   {'row':<20} {'min s':>9} {'median s':>9} {'images/s':>9} {'x fp32 nchw':>11} {'grad cos':>9} {'top1':>5}"
    )
    for row, ts in times.items():
        a = agree.get(row, {})
        entry = {"images_per_s": args.batch / min(ts), "speedup": base / min(ts), **a}
        out["rows"][row] = entry
        cos = f"{a['cosine_mean']:.4f}" if a else "-"
        top1 = f"{a['top1_agree']:.2f}" if a else "-"
        print(
            f"   {row:<20} {min(ts):9.4f} {statistics.median(ts):9.4f} {entry['images_per_s']:9.1f} "
            f"{entry['speedup']:10.2f}x {cos:>9} {top1:>5}"
        )
    out["pgd_over_ideal"] = args.steps * best / min(pgd)
    out["pgd_over_ideal_median"] = args.steps * best / statistics.median(pgd)
    print(
        f"   PGD-{args.steps}: {args.batch / min(pgd):.1f} images/s; {args.steps} x best ideal step / PGD time: "
        f"min {out['pgd_over_ideal']:.3f}, median {out['pgd_over_ideal_median']:.3f} (1.00: no time outside the model)"
    )
    return out


def folder(root: Path, n: int, seed: int = 0) -> None:
    """``n`` 256x256 JPEGs in synset folders, random crops / flips / brightness of the labelled sample photos."""
    rng = random.Random(seed)
    synsets = imagenet_synsets()
    photos = [(Image.fromarray(p.load()).convert("RGB"), synsets[p.label]) for p in SAMPLE_PHOTOS]
    for i in range(n):
        img, synset = photos[i % len(photos)]
        side = int(min(img.size) * rng.uniform(0.6, 1.0))
        left, top = rng.randint(0, img.width - side), rng.randint(0, img.height - side)
        crop = img.crop((left, top, left + side, top + side)).resize((256, 256), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop = ImageEnhance.Brightness(crop).enhance(rng.uniform(0.8, 1.2))
        (root / synset).mkdir(parents=True, exist_ok=True)
        crop.save(root / synset / f"{i:05d}.jpg", quality=92)


def _metrics(path: Path) -> dict:
    """A run's metrics.json, or {} when the step did not write one."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def summary(out: Path) -> str:
    """``figures.md`` from the files of one ``gpu_check.sh`` run (see the module docstring); returns its text."""
    lines = ["| step | exit | seconds |", "| --- | --- | --- |"]
    steps = (
        [r.split("\t") for r in (out / "steps.tsv").read_text().splitlines()] if (out / "steps.tsv").exists() else []
    )
    lines += [f"| {' | '.join(r)} |" for r in steps]
    speed_fig = _metrics(out / "speed.json")
    if speed_fig:
        lines += ["", f"efficientnet-lite0, batch {speed_fig['batch']} at 224x224 on {speed_fig['device']}:", ""]
        lines += ["| row | images/s | x fp32 NCHW | gradient cosine to fp32 (mean / min) | top-1 agrees |"]
        lines += ["| --- | --- | --- | --- | --- |"]
        for row, e in speed_fig["rows"].items():
            cos = f"{e['cosine_mean']:.4f} / {e['cosine_min']:.4f}" if "cosine_mean" in e else "-"
            top1 = f"{e['top1_agree']:.2f}" if "top1_agree" in e else "-"
            lines.append(f"| {row} | {e['images_per_s']:.1f} | {e['speedup']:.2f}x | {cos} | {top1} |")
        lines.append(
            f"\nPGD-{speed_fig['steps']}: {speed_fig['steps']} x the best ideal step / PGD's time = "
            f"{speed_fig['pgd_over_ideal']:.3f} (min), {speed_fig['pgd_over_ideal_median']:.3f} (median)"
        )
    for name in ("eval_reliable", "eval_torchrun"):
        m = _metrics(out / name / "metrics.json")
        if m:
            rate = m["n"] / m["seconds"] if m.get("seconds") else float("nan")
            lines.append(
                f"{name}: {m['n']} images, robust accuracy {m['robust_accuracy']:.4f}, clean "
                f"{m['clean_accuracy']:.4f}, {m.get('seconds', float('nan')):.1f} s in evaluate ({rate:.1f} images/s)"
            )
    one, ranks = _metrics(out / "eval_reliable" / "metrics.json"), _metrics(out / "eval_torchrun" / "metrics.json")
    if one and ranks:
        same = all(one.get(k) == ranks.get(k) for k in ("n", "clean_accuracy", "robust_accuracy"))
        lines.append(f"torchrun (1 process) equals the single process: {'yes' if same else 'NO'}")
    text = "\n".join(lines) + "\n"
    (out / "figures.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="part", required=True)
    s = sub.add_parser("speed")
    s.add_argument("--device", default="cuda")
    s.add_argument("--batch", type=int, default=256)
    s.add_argument("--steps", type=int, default=10)
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--json")
    f = sub.add_parser("folder")
    f.add_argument("root", type=Path)
    f.add_argument("--n", type=int, default=512)
    sub.add_parser("summary").add_argument("out", type=Path)
    args = ap.parse_args(argv)
    if args.part == "summary":
        print(summary(args.out), end="")
        return 0
    if args.part == "folder":
        folder(args.root, args.n)
        return 0
    torch.set_num_threads(1) if args.device == "cpu" else None
    out = speed(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
