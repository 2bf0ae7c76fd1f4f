"""Trap models with obfuscated gradients: advlab's reliable preset, AutoAttack standard and an adaptive reference,
side by side.

Every trap of :mod:`advlab.zoo.traps` wraps the shipped digits CNN (``zoo.load("digits-cnn")``, its honest twin);
on the first ``--limit`` test digits at L-inf ``--eps`` (0.1) each row prints the robust accuracy (%) and the
process time (s) of

* advlab: ``evaluate(trap, (x, y), EvalConfig(preset="reliable", eps, norm="linf"))`` on the trap alone, with its
  ``trust`` and what it adapted (BPDA, EOT, log-probabilities, gradient-free fallback);
* AutoAttack standard (the ``pyautoattack`` package: APGD-CE, APGD-T, FAB-T, Square 5000 queries; seed 0), its
  adversarial examples judged on the trap;
* the adaptive reference, written out here, that differentiates the twin: L-inf PGD (50 steps of eps/8, no random
  start) with the cross-entropy, the logit margin and the targeted margin to each of the 3 likeliest wrong classes
  (a sample is robust when it survives all five runs), run on
  - quantizers (round, threshold, int-cast): BPDA through the twin, ``twin(x + stop(q(x) - x))`` (the twin at the
    trap's own quantized image, the quantizer the identity in the backward);
  - high-frequency: BPDA through the twin, ``twin(x) + stop(trap(x) - twin(x))`` (the trap's logits, the twin's
    gradient);
  - NumPy preprocessing (``numpy``; ``numpy-flat`` hands the images back flattened, ``numpy-hwc`` channels last),
    the whole model outside autograd (``numpy-logits``: its logits through NumPy) and probability outputs:
    transfer from the twin (PGD on the twin's logits; gamma 1 and the softmax change no decision); ``numpy-pil``
    (one 8-bit image at a time, as PIL hands them over): BPDA with the twin's backward, and transfer;
  - noisy input: EOT-PGD (each gradient the mean over 16 draws);
  - kWTA (on the shipped CNN, and ``kwta-trained``: a digits CNN trained from scratch with kWTA in place, 20
    epochs on digits:train, as Xiao et al. train theirs) and the steep staircase: BPDA with the twin's backward
    (``twin(x) + stop(trap(x) - twin(x))``) and transfer from the twin; for kWTA also PGD on the trap itself (CE,
    margin: its gradients are honest);
  - JPEG purification: BPDA through the twin at the purified image, and transfer;
  - random resize-and-pad: EOT-PGD (16 draws per gradient, in one batch; CE, margin, 1 target) and transfer;
  - grad-mode decoy, the three custom backwards: transfer from the twin, which is the trap's own forward (under
    torch.no_grad for the decoy): white-box on the model the user calls;
  - input-seeded noise: EOT-PGD on the twin behind fresh Gaussian noise of the same sigma, and transfer, each point
    with 8 copies moved by 1e-3 per pixel (each copy a fresh draw of the trap's pseudo-random noise);
  - reject (a detector with an 11th "reject" output firing off the 1/16 grid): PGD on the twin, and the same at the
    largest eps on the grid (1/16) rounded onto the grid. Robust accuracy counts as advlab and AutoAttack do: any
    decision but the label is a success, the reject too (a rejected input is not classified right). The detector
    rule (a success must be a wrong *real* class; a reject at an attacked point is the defense's success, Carlini &
    Wagner 2017) is in the reference's note: `advlab detect` measures detectors that way, `evaluate` does not;
  judged on the trap (eval mode, torch.no_grad), the per-sample union of every attack of the row.

advlab runs with ``keep_adversarials=True``, and its note gives the robust accuracy recomputed from ``report.x_adv``
on the trap as a user calls it (eval mode, torch.no_grad; for the randomized traps the expected accuracy there over
16 draws): it should equal the reported number.

The ``union`` column is the per-sample union of every valid attack of the row (the reference's points,
AutoAttack's and advlab's adversarial examples), judged the same way: the strongest evaluation known for the trap,
never above any of them; ``over`` is advlab minus the union in percentage points (the goal: at most 2).

For the randomized traps (noisy, resize-pad) every column is the expected robust accuracy over 16 fresh draws at
that method's adversarial points (right on the clean draw and on the adversarial draw; advlab's own
``expected_accuracy``), with the single-draw numbers in the notes. The NaN traps have no reference: ``nan`` has
NaN logits on images whose top-left pixel an attack brightens above 0.05 (no clean test digit), ``nan-clean`` on
every image (advlab refuses it).

    python benchmarks/traps.py                      # all traps, 200 digits
    python benchmarks/traps.py --limit 100 --traps round,noisy --json traps.json
    python benchmarks/traps.py --methods advlab,reference       # without AutoAttack (its Square is the slow part)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from advlab import data, zoo
from advlab.errors import AdvlabError
from advlab.evaluation import EvalConfig, evaluate
from advlab.zoo import traps

DRAWS = 16  # draws of the noisy trap per expected accuracy, and per EOT gradient of the reference
STEPS, TARGETS = 50, 3


def make_traps(twin: nn.Module) -> dict[str, nn.Module]:
    return {
        "round": traps.RoundQuantized(twin),
        "threshold": traps.ThresholdQuantized(twin),
        "int-cast": traps.IntCastQuantized(twin),
        "high-frequency": traps.HighFrequency(twin),
        "numpy": traps.NumpyPreprocessed(twin),
        "numpy-flat": traps.NumpyPreprocessed(twin, layout="flat"),
        "numpy-hwc": traps.NumpyPreprocessed(twin, layout="channels-last"),
        "numpy-pil": traps.NumpyPreprocessed(twin, layout="pil"),
        "numpy-logits": traps.NumpyLogits(twin),
        "noisy": traps.NoisyInput(twin, sigma=0.25, seed=0),
        "probabilities": traps.ProbabilityOutputs(twin),
        "nan": traps.NaNLogits(twin),
        "nan-clean": traps.NaNLogits(twin, bright=-1.0),
        "kwta": traps.KWinnersTakeAll(twin, ratio=0.2),
        "staircase": traps.SteepStaircase(twin, step=1.0, steepness=1000.0),
        "grad-mode": traps.GradModeDecoy(twin),
        "resize-pad": traps.RandomResizePad(twin, canvas=1.25, seed=0),
        "backward-zero": traps.CustomBackward(twin, mode="zero"),
        "backward-negated": traps.CustomBackward(twin, mode="negated"),
        "backward-noisy": traps.CustomBackward(twin, mode="noisy", seed=0),
        "reject": traps.RejectOffGrid(twin),
        "jpeg": traps.JpegPurified(twin, quality=0.08),
        "seeded-noise": traps.InputSeededNoise(twin, sigma=0.15, seed=0),
    }


#: the randomized traps: every column their expected accuracy over DRAWS fresh draws
RANDOMIZED = ("noisy", "resize-pad")
#: the traps whose forward is the twin's own, exactly (under torch.no_grad for grad-mode): transfer is exact
TWIN_FORWARD = (
    "numpy",
    "numpy-flat",
    "numpy-hwc",
    "numpy-logits",
    "probabilities",
    "grad-mode",
    "backward-zero",
    "backward-negated",
    "backward-noisy",
)


def kwta_trained(ratio: float = 0.2, epochs: int = 20) -> nn.Module:
    """A k-winners-take-all digits CNN trained with kWTA in place (seed 0; the kWTA trap's twin is the bare CNN,
    whose weights learnt to work through the kWTA mask)."""
    from advlab.defenses.training import TrainConfig, fit

    torch.manual_seed(0)
    trap = traps.KWinnersTakeAll(zoo.load("digits-cnn", pretrained=False), ratio=ratio)
    x, y = data.load("digits:train")
    fit(trap, x, y, TrainConfig(epochs=epochs, seed=0))
    return trap.eval()


def twin_input(trap: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The image the trap hands its twin (a forward pre-hook on ``trap.twin``)."""
    seen: list[torch.Tensor] = []
    handle = trap.twin.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            trap(x)
    finally:
        handle.remove()
    return seen[0]


class Bpda(nn.Module):
    """The reference's view of a trap: its forward values, the twin's backward (see the module docstring)."""

    def __init__(self, trap: nn.Module, quantizer: bool) -> None:
        super().__init__()
        self.trap, self.quantizer = trap, quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.quantizer:
            return self.trap.twin(x + (twin_input(self.trap, x) - x).detach())
        z = self.trap.twin(x)
        with torch.no_grad():
            target = self.trap(x)
        return z + (target - z).detach()


class Eot(nn.Module):
    """The mean logits of ``draws`` forwards of a randomized model (each gradient an expectation over draws)."""

    def __init__(self, model: nn.Module, draws: int = DRAWS) -> None:
        super().__init__()
        self.model, self.draws = model, draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.model(x).log_softmax(1) for _ in range(self.draws)]).mean(0)


class EotBatched(nn.Module):
    """:class:`Eot` with the ``draws`` forwards as one batch (the same expectation, fewer calls)."""

    def __init__(self, model: nn.Module, draws: int = DRAWS) -> None:
        super().__init__()
        self.model, self.draws = model, draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.model(x.repeat(self.draws, *[1] * (x.dim() - 1))).log_softmax(1)
        return z.view(self.draws, len(x), -1).mean(0)


GOALS: tuple[str | int, ...] = ("ce", "margin", *range(TARGETS))


def pgd_runs(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, goals: tuple[str | int, ...] = GOALS
) -> list[torch.Tensor]:
    """The reference's PGD runs on ``model`` (by default five: CE, margin, 3 targeted margins; L-inf ``eps``,
    STEPS steps of eps/8 from x): their final points. Margins over the real classes only (the first 10 outputs)."""
    with torch.no_grad():
        z0 = model(x)[:, :10]
    wrong = nn.functional.one_hot(y, z0.shape[1]).bool()
    likeliest = z0.masked_fill(wrong, float("-inf")).topk(TARGETS, 1).indices
    out = []
    for goal in goals:
        xa = x.clone()
        for _ in range(STEPS):
            xg = xa.detach().requires_grad_(True)
            z = model(xg)[:, :10]
            zy = z.gather(1, y[:, None])[:, 0]
            if goal == "ce":
                obj = nn.functional.cross_entropy(z, y, reduction="sum")
            elif goal == "margin":
                obj = (z.masked_fill(wrong, float("-inf")).amax(1) - zy).sum()
            else:
                obj = (z.gather(1, likeliest[:, int(goal) : int(goal) + 1])[:, 0] - zy).sum()
            (g,) = torch.autograd.grad(obj, xg)
            xa = (x + (xa + eps / 8 * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        out.append(xa.detach())
    return out


def _right(out: torch.Tensor, y: torch.Tensor, reject_ok: bool) -> torch.Tensor:
    """Right decisions: the label, or (``reject_ok``, at an attacked point of the reject trap) the reject class."""
    pred = out.argmax(1)
    return (pred == y) | (pred == out.shape[1] - 1) if reject_ok else pred == y


def judged(
    trap: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    points: list[torch.Tensor],
    noisy: bool,
    reject_ok: bool = False,
) -> float:
    """Robust accuracy on the trap (eval mode, torch.no_grad) at each sample's worst point: the fraction right on x
    and on every point. For a randomized trap: the expected fraction over DRAWS fresh draws at each sample's worst
    point, the point chosen with another DRAWS draws (choosing and measuring on the same draws would bias the minimum
    low). ``reject_ok``: a reject at an attacked point is not a success (the reject trap; a clean reject is wrong)."""
    with torch.no_grad():
        if not noisy:
            robust = trap(x).argmax(1) == y
            for p in points:
                robust &= _right(trap(p), y, reject_ok)
            return float(robust.float().mean())

        def expected(p: torch.Tensor) -> torch.Tensor:
            return torch.stack(
                [((trap(x).argmax(1) == y) & _right(trap(p), y, reject_ok)).float() for _ in range(DRAWS)]
            ).mean(0)

        worst = torch.stack([expected(p) for p in points]).argmin(0)
        chosen = torch.stack(points)[worst, torch.arange(len(y))]
        return float(expected(chosen).mean())


def jittered(points: list[torch.Tensor], x: torch.Tensor, eps: float, copies: int, seed: int) -> list[torch.Tensor]:
    """``copies`` copies of each point moved by U(-1e-3, 1e-3) per pixel, back in the ball and [0, 1] (for a trap
    whose noise is a function of the pixels, each copy is a fresh draw)."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p in points:
        for _ in range(copies):
            q = p + (torch.rand(p.shape, generator=gen) * 2 - 1).to(p) * 1e-3
            out.append((x + (q - x).clamp(-eps, eps)).clamp(0, 1))
    return out


def reference(
    name: str, trap: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, cache: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The adaptive reference for one trap: the per-sample union of every attack listed in the module docstring,
    judged on the trap as a user calls it (eval mode, torch.no_grad)."""
    if name.startswith("nan"):
        return {"robust": None, "what": "-"}
    cache = {} if cache is None else cache
    t0 = time.process_time()
    noisy, note = name in RANDOMIZED, ""
    key = f"twin-{id(trap.twin)}"
    if key not in cache:  # PGD on the twin, shared by the rows that use transfer (and the same twin)
        cache[key] = pgd_runs(trap.twin, x, y, eps)
    twin_points: list[torch.Tensor] = cache[key]
    if name in ("round", "threshold", "int-cast"):
        points, what = pgd_runs(Bpda(trap, quantizer=True), x, y, eps), "BPDA through the twin"
    elif name == "jpeg":
        points = pgd_runs(Bpda(trap, quantizer=True), x, y, eps) + twin_points
        what = "BPDA through the twin (purifier the identity) + transfer"
    elif name == "high-frequency":
        points, what = pgd_runs(Bpda(trap, quantizer=False), x, y, eps), "BPDA through the twin"
    elif name in ("kwta", "kwta-trained", "staircase", "numpy-pil"):
        points = pgd_runs(Bpda(trap, quantizer=False), x, y, eps) + twin_points
        what = "BPDA (twin's backward) + transfer"
        if name.startswith("kwta"):
            points += pgd_runs(trap, x, y, eps, ("ce", "margin"))
            what += " + PGD on the trap"
    elif name == "noisy":
        points, what = pgd_runs(Eot(trap), x, y, eps), f"EOT-PGD ({DRAWS} draws)"
    elif name == "resize-pad":
        points = pgd_runs(EotBatched(trap), x, y, eps, ("ce", "margin", 0)) + twin_points
        what = f"EOT-PGD ({DRAWS} draws; CE, margin, 1 target) + transfer"
    elif name == "seeded-noise":
        proxy = traps.NoisyInput(trap.twin, sigma=trap.sigma, seed=1)  # the same noise, fresh draws
        base = pgd_runs(EotBatched(proxy), x, y, eps, ("ce", "margin", 0)) + twin_points
        points = base + jittered(base, x, eps, 8, seed=0)
        what = "EOT-PGD on fresh noise + transfer, each point and 8 jitters of 1e-3 (fresh draws)"
    elif name == "reject":
        # a success must be a wrong real class off the detector: points on the grid, within the ball
        levels = trap.levels
        e_grid = math.floor(eps * levels + 1e-9) / levels
        grid = [(x + torch.round((p - x) * levels) / levels).clamp(0, 1) for p in pgd_runs(trap.twin, x, y, e_grid)]
        points, what = grid + twin_points, f"PGD on the twin, and at eps {e_grid:.4f} rounded onto the 1/{levels} grid"
        lenient = judged(trap, x, y, grid, False, reject_ok=True)
        note = f"the detector rule (a reject at an attacked point is the defense's success): {lenient:.1%}"
    else:  # the twin's forward exactly: transfer is the white-box attack
        points, what = twin_points, "transfer from the twin (the trap's forward)"
    robust = judged(trap, x, y, points, noisy)
    return {"robust": robust, "seconds": time.process_time() - t0, "what": what, "note": note, "_points": points}


def recomputed(name: str, trap: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor) -> float:
    """The robust accuracy recomputed from a report's ``x_adv``, judged on the trap as a user calls it (eval mode,
    torch.no_grad), counting as advlab does (any decision but the label is a success, a reject too); for a randomized
    trap the expected accuracy over DRAWS fresh draws at x_adv."""
    trap.eval()
    return judged(trap, x, y, [x_adv.to(x)], name in RANDOMIZED)


def run_advlab(name: str, trap: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    t0 = time.process_time()
    try:
        rep = evaluate(trap, (x, y), EvalConfig(preset="reliable", eps=eps, norm="linf", keep_adversarials=True))
    except AdvlabError as e:
        return {"robust": None, "seconds": time.process_time() - t0, "note": f"refused: {e}"}
    except Exception as e:  # noqa: BLE001 - a crash of advlab on a trap is this row's result (with its traceback)
        tb = traceback.format_exc()
        return {
            "robust": None,
            "seconds": time.process_time() - t0,
            "note": f"CRASHED: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}",
            "traceback": tb,
        }
    seconds = time.process_time() - t0
    e = rep.expected_accuracy
    robust = e["robust"] if e is not None else rep.robust_accuracy
    note = f"single draw {rep.robust_accuracy:.1%}; " if e is not None else ""
    again = recomputed(name, trap, x, y, rep.x_adv) if rep.x_adv is not None else None
    if again is not None:
        note += f"recomputed from x_adv {again:.1%}; "
    return {
        "robust": robust,
        "single_draw": rep.robust_accuracy,
        "recomputed": again,
        "seconds": seconds,
        "trust": rep.trust,
        "attacks": rep.attacks,
        "adaptations": rep.adaptations,
        "warnings": rep.warnings,
        "note": note + "attacks " + ", ".join(rep.attacks),
        "_points": [] if rep.x_adv is None else [rep.x_adv.to(x)],
    }


def run_autoattack(name: str, trap: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    try:
        from pyautoattack import AutoAttack
    except ImportError as e:
        return {"robust": None, "note": f"pyautoattack not installed ({type(e).__name__})"}
    logging.getLogger("auto-attack").setLevel(logging.WARNING)
    aa = AutoAttack(trap, norm="Linf", eps=eps, version="standard", seed=0, device="cpu")
    t0 = time.process_time()
    try:
        with (
            contextlib.redirect_stdout(io.StringIO()),
            warnings.catch_warnings(),
        ):  # its zero-gradient notes, once per batch
            warnings.simplefilter("ignore")
            xa, _ = aa.run_standard_evaluation(x, y, batch_size=len(y))
    except Exception as e:  # noqa: BLE001 - AutoAttack's own failure is the result of this row
        return {
            "robust": None,
            "seconds": time.process_time() - t0,
            "note": f"crashed: {type(e).__name__}: {str(e).splitlines()[0][:90]}",
        }
    seconds = time.process_time() - t0
    xa = xa.to(x)
    if name not in RANDOMIZED:
        return {"robust": judged(trap, x, y, [xa], False), "seconds": seconds, "note": "", "_points": [xa]}
    with torch.no_grad():
        single = float(((trap(x).argmax(1) == y) & (trap(xa).argmax(1) == y)).float().mean())
    return {
        "robust": judged(trap, x, y, [xa], True),
        "seconds": seconds,
        "note": f"single draw {single:.1%}",
        "_points": [xa],
    }


def _cell(r: dict[str, Any]) -> str:
    return "   -   " if r.get("robust") is None else f"{100 * r['robust']:6.1f}%"


def union(name: str, trap: nn.Module, x: torch.Tensor, y: torch.Tensor, row: dict[str, dict[str, Any]]) -> float | None:
    """The per-sample union of every valid attack of the row (the reference's, AutoAttack's and advlab's points),
    judged on the trap as a user calls it: the strongest evaluation known for it. None without a reference."""
    if row["reference"].get("robust") is None:
        return None
    points = [p for r in row.values() for p in r.get("_points", [])]
    return judged(trap, x, y, points, name in RANDOMIZED)


def print_row(name: str, row: dict[str, dict[str, Any]]) -> None:
    adv, aa, ref, uni = row["advlab"], row["autoattack"], row["reference"], row["union"]
    secs = "  ".join(f"{r.get('seconds', 0):6.1f}" for r in (adv, aa, ref))
    over = (
        "   -"
        if None in (adv.get("robust"), uni.get("robust"))
        else f"{round(100 * (adv['robust'] - uni['robust']), 1) + 0.0:+5.1f}"
    )
    print(
        f"{name:<15}{_cell(adv):>9} {adv.get('trust', '-'):>5}{_cell(aa):>9}{_cell(ref):>9}{_cell(uni):>9}{over:>6}"
        f"   {secs}   {ref['what']}",
        flush=True,
    )
    for label, r in (("advlab", adv), ("AutoAttack", aa), ("reference", ref)):
        if r.get("note"):
            print(f"{'':<15}{label}: {r['note']}")
    if adv.get("traceback"):
        print("\n".join(f"{'':<15}| {line}" for line in adv["traceback"].rstrip().splitlines()))
    for line in adv.get("adaptations", []) + adv.get("warnings", []):
        print(f"{'':<15}  - {line[:150]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=200, help="test digits")
    p.add_argument("--eps", type=float, default=0.1, help="L-inf radius, [0, 1] pixel units")
    names = [*make_traps(nn.Identity()), "kwta-trained"]
    p.add_argument("--traps", default=",".join(names), help="comma-separated trap names")
    p.add_argument("--json", help="write the numbers to this file (after every row)")
    p.add_argument(
        "--methods", default="advlab,autoattack,reference", help="comma-separated columns to run (others left -)"
    )
    args = p.parse_args()
    torch.set_num_threads(1)
    twin = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    x, y = x[: args.limit], y[: args.limit]
    every = make_traps(twin)
    if "kwta-trained" in args.traps.split(","):
        every["kwta-trained"] = kwta_trained()
    print(
        f"torch {torch.__version__}, 1 thread; {len(y)} test digits, L-inf eps {args.eps:g}; twin: digits-cnn; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        f"{'trap':<15}{'advlab':>9} {'trust':>5}{'AutoAtt':>9}{'ref':>9}{'union':>9}{'over':>6}   {'s adv':>6}  "
        f"{'s AA':>6}  {'s ref':>6}   reference"
    )
    out: dict[str, Any] = {}
    runners: dict[str, Callable[..., dict[str, Any]]] = {
        "advlab": run_advlab,
        "autoattack": run_autoattack,
        "reference": reference,
    }
    cache: dict[str, Any] = {}  # the reference's PGD points on the twin, shared by the rows
    for name in args.traps.split(","):
        trap = every[name]
        chosen = args.methods.split(",")
        row: dict[str, dict[str, Any]] = {k: {"robust": None, "what": "-"} for k in runners}
        row.update({k: f(name, trap, x, y, args.eps) for k, f in runners.items() if k in chosen and k != "reference"})
        if "reference" in chosen:
            row["reference"] = reference(name, trap, x, y, args.eps, cache)
        row["union"] = {"robust": union(name, trap, x, y, row)}
        print_row(name, row)
        out[name] = {k: {f: v for f, v in r.items() if not f.startswith("_")} for k, r in row.items()}
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"images": len(y), "eps": args.eps, "rows": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
