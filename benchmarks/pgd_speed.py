"""PGD-10 speed: advlab against torchattacks, Foolbox 3 and ART, measured side by side, printed as ratios.

For each model the same batch is attacked by every library with the same threat model (L-inf, eps, alpha =
eps / 4, 10 steps, one random start) and timed against two floors measured in the same run:

* "10 x ideal step": ten back-to-back forward + backward passes w.r.t. the input only (parameters frozen,
  ``torch.autograd.grad(cross_entropy(model(x), y), x)``): the model's cost with no attack code at all;
* "ideal eager loop": a hand-written eager PGD-10 (random start, sign step, projection, clamp);
* "eager loop + score": the same plus one forward on its result, the floor for any PGD that reports which
  samples it broke (advlab's full result does: 11 forwards, 10 backwards; ``PGD.perturb`` does not).

Every row is run once untimed (warm-up; it also counts the model's forward and backward passes per sample
with hooks), then ``--repeats`` timed runs are interleaved round-robin over the rows, so that noise from other
processes hits every library alike; the median and the minimum are reported. Robust accuracy is the fraction of
``x_adv`` that the (float32) model still classifies as ``y``, computed the same way for every row, outside the timer.

    python benchmarks/pgd_speed.py                         # all three models, 1 thread, 3 repeats
    python benchmarks/pgd_speed.py --quick --models digits-cnn
    python benchmarks/pgd_speed.py --device cuda --channels-last --compile --json pgd.json

Peers are optional: one that does not import gets a "not installed" row (``bash scripts/bootstrap.sh bench``
installs them). This is a plain script; it only prints and, with ``--json``, writes one file.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from advlab import attacks, data, zoo
from advlab.attacks.base import frozen_parameters

STEPS = 10


@dataclass(frozen=True)
class Setting:
    """One benchmarked model: its L-inf radius in [0, 1] pixel units and its batch sizes (full and --quick)."""

    eps: float
    batch: int
    quick_batch: int
    what: str


SETTINGS: dict[str, Setting] = {
    "digits-cnn": Setting(0.1, 599, 64, "digits:test (599 images; the first N), true labels"),
    "cifar-resnet18": Setting(
        8 / 255, 128, 8, "torch.rand images (seed 0), random-init weights, labels = clean predictions"
    ),
    "efficientnet-lite0": Setting(
        8 / 255,
        16,
        4,
        "the 4 sample photos x 4 variants (as is, flipped, dimmed, flipped + low contrast), labels = clean predictions",
    ),
}


# ----------------------------------------------------------------------------------------------- data
def load_batch(name: str, model: nn.Module, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The images (CPU, float32, [0, 1]) and labels for model ``name``; labels are the model's own clean
    predictions where the data has no meaningful labels for it (random images, random weights)."""
    if name == "digits-cnn":
        x, y = data.load("digits:test")
        return x[:n], y[:n]
    if name == "cifar-resnet18":
        x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    elif name == "efficientnet-lite0":
        photos, _, _ = data.load_for_model("samples", 224, 3)
        variants = [photos, photos.flip(-1), photos * 0.85, ((photos.flip(-1) - 0.5) * 0.8 + 0.5)]
        x = torch.cat(variants).clamp(0, 1)
        x = x[torch.arange(n) % len(x)]
    else:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(SETTINGS)}")
    with torch.no_grad():
        y = model(x).argmax(1)
    return x, y


# ----------------------------------------------------------------------------------------------- model wrappers
class ChannelsLastInput(nn.Module):
    """Hands the network its input in channels_last layout whatever the caller passed (ART builds its tensors
    from NumPy arrays, which are contiguous NCHW)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


class Autocast(nn.Module):
    """The model's forward under ``torch.autocast(dtype)``; logits come back in float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, dtype=self.dtype):
            out = self.model(x)
        return out.float()


@dataclass
class Counts:
    forwards: int = 0
    backwards: int = 0


@contextmanager
def counting(model: nn.Module) -> Iterator[Counts]:
    """Count the samples that go forward through ``model``, and backward through its output, while inside."""
    counts = Counts()

    def on_forward(_module: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        n = len(args[0])
        counts.forwards += n
        if isinstance(out, torch.Tensor) and out.requires_grad:

            def on_backward(grad: torch.Tensor) -> None:
                counts.backwards += n

            out.register_hook(on_backward)

    handle = model.register_forward_hook(on_forward)
    try:
        yield counts
    finally:
        handle.remove()


# ----------------------------------------------------------------------------------------------- rows
@dataclass
class Problem:
    """What every row attacks: the batch, the labels, the threat model, the device."""

    x: torch.Tensor
    y: torch.Tensor
    eps: float
    alpha: float
    num_classes: int
    device: torch.device


Run = Callable[[], Any]  # the timed call; returns the library's raw output
Finish = Callable[[Any], torch.Tensor | None]  # raw output -> x_adv on the device (untimed); None: not an attack


@dataclass
class Row:
    """One line of the table. ``build(model, problem)`` returns ``(run, finish)``; ``model`` is the variant named by
    ``variant`` ("fp32": the model as loaded; "amp": under --dtype autocast; "compiled": torch.compile of "amp")."""

    name: str
    variant: str
    build: Callable[[nn.Module, Problem], tuple[Run, Finish]]
    own_counts: bool = False  # the library reports its own forward/backward counts (no hooks needed)
    status: str = ""  # "not installed", "failed: ..." or "" (ran)
    times: list[float] = field(default_factory=list)
    robust: list[float] = field(default_factory=list)
    linf: float = 0.0
    forwards: float | None = None
    backwards: float | None = None
    run: Run | None = None
    finish: Finish | None = None


def ideal_step_row(model: nn.Module, p: Problem) -> tuple[Run, Finish]:
    """Ten forward + backward passes w.r.t. the input only (timed as one block; the step is a tenth of it)."""
    x = p.x.detach().clone()

    def run() -> None:
        with frozen_parameters(model):
            for _ in range(STEPS):
                xr = x.detach().requires_grad_(True)
                loss = F.cross_entropy(model(xr), p.y)
                torch.autograd.grad(loss, xr)

    return run, lambda _out: None


def eager_loop_row(model: nn.Module, p: Problem) -> tuple[Run, Finish]:
    """A minimal eager PGD-10: uniform random start in the ball, ascend CE by alpha * sign(grad), project, clamp."""

    def run() -> torch.Tensor:
        with frozen_parameters(model):
            x_adv = (p.x + (2 * torch.rand_like(p.x) - 1) * p.eps).clamp(0, 1)
            for _ in range(STEPS):
                x_adv.requires_grad_(True)
                loss = F.cross_entropy(model(x_adv), p.y)
                (g,) = torch.autograd.grad(loss, x_adv)
                x_adv = x_adv.detach() + p.alpha * g.sign()
                x_adv = torch.minimum(torch.maximum(x_adv, p.x - p.eps), p.x + p.eps).clamp(0, 1)
        return x_adv

    return run, lambda out: out


def scored_loop_row(model: nn.Module, p: Problem) -> tuple[Run, Finish]:
    """The eager loop plus one gradient-free forward on its result: the floor for a PGD that reports success."""
    run, _ = eager_loop_row(model, p)

    def scored() -> tuple[torch.Tensor, torch.Tensor]:
        x_adv = run()
        with torch.no_grad():
            return x_adv, model(x_adv).argmax(1) != p.y

    return scored, lambda out: out[0]


def _advlab_pgd(p: Problem) -> attacks.PGD:
    return attacks.PGD(eps=p.eps, alpha=p.alpha, steps=STEPS, norm="linf", random_start=True, seed=0, early_stop=False)


def advlab_row(model: nn.Module, p: Problem) -> tuple[Run, Finish]:
    """The full result: x_adv, success, logits, norms and counts (11 forwards: the last iterate is scored)."""
    atk = _advlab_pgd(p)
    return (lambda: atk(model, p.x, p.y)), (lambda res: res.x_adv)


def advlab_perturb_row(model: nn.Module, p: Problem) -> tuple[Run, Finish]:
    """``PGD.perturb``: the last iterate only, as adversarial training uses it (10 forwards, 10 backwards)."""
    atk = _advlab_pgd(p)
    return (lambda: atk.perturb(model, p.x, p.y)), (lambda out: out)


def torchattacks_row(model: nn.Module, p: Problem) -> tuple[Run, Finish]:
    import torchattacks

    atk = torchattacks.PGD(model, eps=p.eps, alpha=p.alpha, steps=STEPS, random_start=True)
    return (lambda: atk(p.x, p.y)), (lambda out: out)


def foolbox_row(model: nn.Module, p: Problem) -> tuple[Run, Finish]:
    import foolbox as fb

    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=p.device)
    atk = fb.attacks.LinfPGD(abs_stepsize=p.alpha, steps=STEPS, random_start=True)
    return (lambda: atk(fmodel, p.x, p.y, epsilons=p.eps)), (lambda out: out[1])  # (raw, clipped, success)


def art_row(model: nn.Module, p: Problem) -> tuple[Run, Finish]:
    from art.attacks.evasion import ProjectedGradientDescentPyTorch
    from art.estimators.classification import PyTorchClassifier

    clf = PyTorchClassifier(
        model=model,
        loss=nn.CrossEntropyLoss(),
        input_shape=tuple(p.x.shape[1:]),
        nb_classes=p.num_classes,
        clip_values=(0.0, 1.0),
        device_type="gpu" if p.device.type == "cuda" else "cpu",
    )
    atk = ProjectedGradientDescentPyTorch(
        clf,
        norm=np.inf,
        eps=p.eps,
        eps_step=p.alpha,
        max_iter=STEPS,
        num_random_init=1,
        batch_size=len(p.x),
        verbose=False,
    )
    x_np, y_np = p.x.cpu().numpy(), p.y.cpu().numpy()  # ART works on NumPy arrays: its users hold them already
    return (lambda: atk.generate(x=x_np, y=y_np)), (lambda out: torch.from_numpy(out).to(p.device))


def make_rows(compile_: bool) -> list[Row]:
    rows = [
        Row("10 x ideal step", "amp", ideal_step_row),
        Row("ideal eager loop", "amp", eager_loop_row),
        Row("eager loop + score", "amp", scored_loop_row),
        Row("advlab", "amp", advlab_row, own_counts=True),
        Row("advlab x_adv only", "amp", advlab_perturb_row),
    ]
    if compile_:
        rows.append(Row("advlab compiled", "compiled", advlab_row, own_counts=True))
        rows.append(Row("advlab x_adv compiled", "compiled", advlab_perturb_row))
    rows += [
        Row("torchattacks", "fp32", torchattacks_row),
        Row("foolbox", "fp32", foolbox_row),
        Row("art", "fp32", art_row),
    ]
    return rows


# ----------------------------------------------------------------------------------------------- measuring
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}"


def check_row(row: Row, out: Any, p: Problem, model: nn.Module) -> None:
    """Robust accuracy and the largest |x_adv - x| of one run (untimed, float32 model, same for every row)."""
    x_adv = row.finish(out) if row.finish is not None else None
    if x_adv is None:
        return
    with torch.no_grad():
        row.robust.append(float((model(x_adv.to(p.x.dtype)).argmax(1) == p.y).float().mean()))
    row.linf = max(row.linf, float((x_adv - p.x).abs().max()))


def warm_up(row: Row, variants: dict[str, nn.Module], base: nn.Module, p: Problem) -> None:
    """Build the row and run it once untimed, counting the model's forward/backward passes per sample."""
    model = variants[row.variant]
    try:
        row.run, row.finish = row.build(model, p)
    except ImportError:
        row.status = "not installed"
        return
    except Exception as e:  # noqa: BLE001 - a peer that cannot be set up is reported, not fatal
        row.status = f"failed: {one_line(e)}"
        return
    try:
        if row.own_counts or row.variant == "compiled":
            out = row.run()
            if hasattr(out, "forwards"):
                row.forwards = float(out.forwards.float().mean())
                row.backwards = float(out.backwards.float().mean())
        else:
            with counting(base) as counts:
                out = row.run()
            row.forwards, row.backwards = counts.forwards / len(p.x), counts.backwards / len(p.x)
        sync(p.device)
        check_row(row, out, p, base)
        row.robust.clear()
    except Exception as e:  # noqa: BLE001 - e.g. torch.compile failing on this machine
        row.status = f"failed: {one_line(e)}"


def measure(rows: list[Row], p: Problem, base: nn.Module, repeats: int) -> None:
    """``repeats`` rounds; each round runs every live row once, starting one row later than the round before."""
    live = [r for r in rows if not r.status]
    for k in range(repeats):
        for i in range(len(live)):
            row = live[(i + k) % len(live)]
            if row.status or row.run is None:
                continue
            try:
                sync(p.device)
                t0 = time.perf_counter()
                out = row.run()
                sync(p.device)
                row.times.append(time.perf_counter() - t0)
                check_row(row, out, p, base)
            except Exception as e:  # noqa: BLE001
                row.status = f"failed: {one_line(e)}"


# ----------------------------------------------------------------------------------------------- one model
def bench_model(name: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    setting = SETTINGS[name]
    torch.manual_seed(0)
    model = zoo.load(name).eval()
    num_classes = int(model.info.num_classes)  # type: ignore[union-attr]
    x, y = load_batch(name, model, args.batch or (setting.quick_batch if args.quick else setting.batch))
    model = model.to(device)
    x, y = x.to(device), y.to(device)
    if args.channels_last:
        model = ChannelsLastInput(model.to(memory_format=torch.channels_last)).eval()
        x = x.contiguous(memory_format=torch.channels_last)
    if args.frozen:
        for q in model.parameters():
            q.requires_grad_(False)
    base = model
    amp = Autocast(base, torch.bfloat16).eval() if args.dtype == "bfloat16" else base
    variants = {"fp32": base, "amp": amp}
    if args.compile:
        variants["compiled"] = torch.compile(amp)
    p = Problem(x=x, y=y, eps=setting.eps, alpha=setting.eps / 4, num_classes=num_classes, device=device)
    with torch.no_grad():
        clean = float((base(x).argmax(1) == y).float().mean())

    print(f"\n== {name}: batch {tuple(x.shape)}, {setting.what}")
    print(
        f"   PGD-{STEPS} L-inf eps {setting.eps:.4g}, alpha {p.alpha:.4g}, random start; clean accuracy {clean:.3f}; "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    rows = make_rows(args.compile)
    t_start = time.perf_counter()
    for row in rows:
        warm_up(row, variants, base, p)
    measure(rows, p, base, args.repeats)
    elapsed = time.perf_counter() - t_start
    return report(name, rows, p, clean, elapsed, args)


def report(
    name: str, rows: list[Row], p: Problem, clean: float, elapsed: float, args: argparse.Namespace
) -> dict[str, Any]:
    """Print the table: medians and their ratios (what the issue asks for), and minima and theirs (other
    processes only ever add time, so on a busy machine the minimum is the steadier estimate)."""
    ran = [r for r in rows if r.times and not r.status]
    med = {r.name: statistics.median(r.times) for r in ran}
    low = {r.name: min(r.times) for r in ran}
    if "10 x ideal step" in med:
        print(
            f"   ideal step (1 forward + 1 backward w.r.t. x, {len(p.x)} images): median "
            f"{med['10 x ideal step'] / STEPS * 1e3:.2f} ms, "
            f"min {low['10 x ideal step'] / STEPS * 1e3:.2f} ms"
        )
    header = (
        f"   {'library':<18}{'median s':>10}{'x 10 steps':>12}{'x eager':>9}{'min s':>10}{'x 10 steps':>12}"
        f"{'x eager':>9}"
        f"{'robust acc':>12}{'fwd/bwd':>9}  notes"
    )
    print(header)
    print("   " + "-" * (len(header) - 3))
    out_rows = {}
    for r in rows:
        entry: dict[str, Any] = {"status": r.status or "ok", "times": r.times}
        out_rows[r.name] = entry
        if r not in ran:
            print(f"   {r.name:<18}{r.status or 'no timing'}")
            continue
        ratios = {}
        for stat, table in (("median", med), ("min", low)):
            for ref_key, ref in (("ideal", "10 x ideal step"), ("eager", "ideal eager loop")):
                ratios[f"{stat}_ratio_to_{ref_key}"] = table[r.name] / table[ref] if ref in table else float("nan")
        acc = statistics.mean(r.robust) if r.robust else None
        counts = f"{r.forwards:g}/{r.backwards:g}" if r.forwards is not None and r.backwards is not None else "-"
        notes = []
        if r.linf > p.eps + 1e-5:
            notes.append(f"linf {r.linf:.4g} > eps!")
        if args.dtype == "bfloat16" and r.variant != "fp32":
            notes.append("bf16 autocast")
        acc_s = f"{acc:.3f}" if acc is not None else "-"
        print(
            f"   {r.name:<18}{med[r.name]:>10.3f}{ratios['median_ratio_to_ideal']:>11.2f}x"
            f"{ratios['median_ratio_to_eager']:>8.2f}x"
            f"{low[r.name]:>10.3f}{ratios['min_ratio_to_ideal']:>11.2f}x{ratios['min_ratio_to_eager']:>8.2f}x"
            f"{acc_s:>12}{counts:>9}  {', '.join(notes)}"
        )
        entry.update(
            median_s=med[r.name],
            min_s=low[r.name],
            **ratios,
            robust_accuracy=acc,
            max_linf=r.linf,
            forwards_per_sample=r.forwards,
            backwards_per_sample=r.backwards,
        )
    print(
        f"   ({args.repeats} timed runs per row, round-robin; {elapsed:.0f} s for this model; load average now "
        f"{os.getloadavg()[0]:.2f})"
    )
    ideal = med.get("10 x ideal step")
    return {
        "model": name,
        "batch": list(p.x.shape),
        "eps": p.eps,
        "alpha": p.alpha,
        "steps": STEPS,
        "clean_accuracy": clean,
        "ideal_step_s": ideal / STEPS if ideal else None,
        "rows": out_rows,
    }


# ----------------------------------------------------------------------------------------------- main
def machine_line(device: torch.device, threads: int) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    peers = {}
    for mod, dist in (
        ("torchattacks", "torchattacks"),
        ("foolbox", "foolbox"),
        ("art", "adversarial-robustness-toolbox"),
    ):
        try:
            peers[dist] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - any import failure: not installed
            peers[dist] = None
    info = {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": threads,
        "device": str(device),
        "device_name": name,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "peers": peers,
    }
    versions = ", ".join(f"{k} {v or 'not installed'}" for k, v in peers.items())
    print(
        f"machine: torch {info['torch']}, python {info['python']}, threads {threads}, device {device} ({name}), "
        f"{info['cpus']} CPUs, load average {info['load_average'][0]:.2f}; {versions}"
    )
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)} (default: all)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument(
        "--threads", type=int, default=1, help="torch.set_num_threads (default 1, as the reference numbers)"
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed runs per row; median and min reported (default 3; 1 with --quick)",
    )
    ap.add_argument("--channels-last", action="store_true", help="model and inputs in channels_last, for every library")
    ap.add_argument("--compile", action="store_true", help="add a row: advlab on torch.compile(model)")
    ap.add_argument(
        "--dtype",
        default="float32",
        choices=["float32", "bfloat16"],
        help="bfloat16: autocast in the ideal step, the eager loop and advlab (peers stay float32)",
    )
    ap.add_argument(
        "--frozen",
        action="store_true",
        help="turn parameters' requires_grad off for every library "
        "(default: the model as loaded; advlab and the ideal rows freeze them themselves)",
    )
    ap.add_argument("--batch", type=int, default=None, help="images per model instead of the defaults (599 / 128 / 16)")
    ap.add_argument("--quick", action="store_true", help="small batches and 1 repeat: a smoke test")
    ap.add_argument("--json", metavar="PATH", help="write every number to PATH")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.repeats < 1 or args.threads < 1 or (args.batch is not None and args.batch < 1):
        ap.error("--repeats, --threads and --batch must be >= 1")
    args.model_list = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.model_list if m not in SETTINGS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; choose from {', '.join(SETTINGS)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch.cuda.is_available() is False")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    info = machine_line(device, args.threads)
    options = {
        k: getattr(args, k) for k in ("repeats", "batch", "channels_last", "compile", "dtype", "frozen", "quick")
    }
    print("options: " + ", ".join(f"{k}={v}" for k, v in options.items()))
    results = [bench_model(name, args, device) for name in args.model_list]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "options": options, "models": results}, f, indent=2)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
