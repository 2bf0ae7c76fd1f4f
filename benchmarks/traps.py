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
  - NumPy preprocessing and probability outputs: transfer from the twin (PGD on the twin's logits; gamma 1 and the
    softmax change no decision);
  - noisy input: EOT-PGD (each gradient the mean over 16 draws);
  judged on the trap.

For the noisy trap every column is the expected robust accuracy over 16 fresh draws at that method's adversarial
points (right on the clean draw and on the adversarial draw; advlab's own ``expected_accuracy``), with AutoAttack's
single-draw number in the notes. The NaN traps have no reference: ``nan`` has NaN logits on images whose top-left
pixel an attack brightens above 0.05 (no clean test digit), ``nan-clean`` on every image (advlab refuses it).

    python benchmarks/traps.py                      # all traps, 200 digits (~10 min of process time)
    python benchmarks/traps.py --limit 100 --traps round,noisy --json traps.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import time
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
        "noisy": traps.NoisyInput(twin, sigma=0.25, seed=0),
        "probabilities": traps.ProbabilityOutputs(twin),
        "nan": traps.NaNLogits(twin),
        "nan-clean": traps.NaNLogits(twin, bright=-1.0),
    }


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


def pgd_runs(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> list[torch.Tensor]:
    """The reference's five PGD runs on ``model`` (CE, margin, 3 targeted margins): their final points."""
    wrong = nn.functional.one_hot(y, 10).bool()
    with torch.no_grad():
        likeliest = model(x).masked_fill(wrong, float("-inf")).topk(TARGETS, 1).indices
    out = []
    for goal in ["ce", "margin", *range(TARGETS)]:
        xa = x.clone()
        for _ in range(STEPS):
            xg = xa.detach().requires_grad_(True)
            z = model(xg)
            zy = z.gather(1, y[:, None])[:, 0]
            if goal == "ce":
                obj = nn.functional.cross_entropy(z, y, reduction="sum")
            elif goal == "margin":
                obj = (z.masked_fill(wrong, float("-inf")).amax(1) - zy).sum()
            else:
                obj = (z.gather(1, likeliest[:, goal : goal + 1])[:, 0] - zy).sum()
            (g,) = torch.autograd.grad(obj, xg)
            xa = (x + (xa + eps / 8 * g.sign() - x).clamp(-eps, eps)).clamp(0, 1)
        out.append(xa.detach())
    return out


def judged(trap: nn.Module, x: torch.Tensor, y: torch.Tensor, points: list[torch.Tensor], noisy: bool) -> float:
    """Robust accuracy on the trap at each sample's worst point: the fraction right on x and on every point. For the
    noisy trap: the expected fraction over DRAWS fresh draws at each sample's worst point, the point chosen with
    another DRAWS draws (choosing and measuring on the same draws would bias the minimum low)."""
    with torch.no_grad():
        if not noisy:
            robust = trap(x).argmax(1) == y
            for p in points:
                robust &= trap(p).argmax(1) == y
            return float(robust.float().mean())

        def expected(p: torch.Tensor) -> torch.Tensor:
            return torch.stack(
                [((trap(x).argmax(1) == y) & (trap(p).argmax(1) == y)).float() for _ in range(DRAWS)]
            ).mean(0)

        worst = torch.stack([expected(p) for p in points]).argmin(0)
        chosen = torch.stack(points)[worst, torch.arange(len(y))]
        return float(expected(chosen).mean())


def reference(name: str, trap: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    if name.startswith("nan"):
        return {"robust": None, "what": "-"}
    t0 = time.process_time()
    if name in ("round", "threshold", "int-cast", "high-frequency"):
        model, what = Bpda(trap, quantizer=name != "high-frequency"), "BPDA through the twin"
    elif name == "noisy":
        model, what = Eot(trap), f"EOT-PGD ({DRAWS} draws)"
    else:
        model, what = trap.twin, "transfer from the twin"
    robust = judged(trap, x, y, pgd_runs(model, x, y, eps), name == "noisy")
    return {"robust": robust, "seconds": time.process_time() - t0, "what": what}


def run_advlab(name: str, trap: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict[str, Any]:
    t0 = time.process_time()
    try:
        rep = evaluate(trap, (x, y), EvalConfig(preset="reliable", eps=eps, norm="linf"))
    except AdvlabError as e:
        return {"robust": None, "seconds": time.process_time() - t0, "note": f"refused: {e}"}
    seconds = time.process_time() - t0
    e = rep.expected_accuracy
    robust = e["robust"] if e is not None else rep.robust_accuracy
    note = f"single draw {rep.robust_accuracy:.1%}; " if e is not None else ""
    return {
        "robust": robust,
        "seconds": seconds,
        "trust": rep.trust,
        "attacks": rep.attacks,
        "adaptations": rep.adaptations,
        "warnings": rep.warnings,
        "note": note + "attacks " + ", ".join(rep.attacks),
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
    if name != "noisy":
        return {"robust": judged(trap, x, y, [xa], False), "seconds": seconds, "note": ""}
    with torch.no_grad():
        single = float(((trap(x).argmax(1) == y) & (trap(xa).argmax(1) == y)).float().mean())
    return {"robust": judged(trap, x, y, [xa], True), "seconds": seconds, "note": f"single draw {single:.1%}"}


def _cell(r: dict[str, Any]) -> str:
    return "   -   " if r.get("robust") is None else f"{100 * r['robust']:6.1f}%"


def print_row(name: str, row: dict[str, dict[str, Any]]) -> None:
    adv, aa, ref = row["advlab"], row["autoattack"], row["reference"]
    secs = "  ".join(f"{r.get('seconds', 0):6.1f}" for r in (adv, aa, ref))
    print(
        f"{name:<15}{_cell(adv):>9} {adv.get('trust', '-'):>5}{_cell(aa):>9}{_cell(ref):>9}   {secs}   {ref['what']}",
        flush=True,
    )
    for label, r in (("advlab", adv), ("AutoAttack", aa)):
        if r.get("note"):
            print(f"{'':<15}{label}: {r['note']}")
    for line in adv.get("adaptations", []) + adv.get("warnings", []):
        print(f"{'':<15}  - {line[:150]}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--limit", type=int, default=200, help="test digits")
    p.add_argument("--eps", type=float, default=0.1, help="L-inf radius, [0, 1] pixel units")
    p.add_argument("--traps", default=",".join(make_traps(nn.Identity())), help="comma-separated trap names")
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args()
    torch.set_num_threads(1)
    twin = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    x, y = x[: args.limit], y[: args.limit]
    every = make_traps(twin)
    print(
        f"torch {torch.__version__}, 1 thread; {len(y)} test digits, L-inf eps {args.eps:g}; twin: digits-cnn; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    print(
        f"{'trap':<15}{'advlab':>9} {'trust':>5}{'AutoAtt':>9}{'ref':>9}   {'s adv':>6}  {'s AA':>6}  "
        f"{'s ref':>6}   reference"
    )
    out: dict[str, Any] = {}
    runners: dict[str, Callable[..., dict[str, Any]]] = {
        "advlab": run_advlab,
        "autoattack": run_autoattack,
        "reference": reference,
    }
    for name in args.traps.split(","):
        trap = every[name]
        row = {k: f(name, trap, x, y, args.eps) for k, f in runners.items()}
        print_row(name, row)
        out[name] = row
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"images": len(y), "eps": args.eps, "rows": out}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
