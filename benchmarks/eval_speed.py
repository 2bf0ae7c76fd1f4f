"""Time to a robust-accuracy number, and the reliable preset against AutoAttack, measured side by side.

Part "early-stop" (undefended models, where most samples break within a few steps): the robust accuracy
of full-budget PGD-10 (torchattacks, and advlab with ``early_stop=False``) against ``advlab.evaluate``
with the same PGD-10 and early stopping. Printed: robust accuracies, gradient evaluations (per sample
backward passes) and the ratios full / evaluate for gradients and for time against torchattacks.

Part "reliable" (an adversarially trained digits CNN, L-inf eps 0.1, all 599 test digits): AutoAttack's
standard version (the ``pyautoattack`` package: APGD-CE, APGD-T, FAB-T, Square) against advlab's
``preset="reliable"``: robust accuracies, their difference in percentage points, and the time ratio.
The robust model is trained on first use (PGD-7 adversarial training, a few minutes on a CPU) and cached
in ``benchmarks/.cache/``.

    python benchmarks/eval_speed.py                     # both parts, 1 thread
    python benchmarks/eval_speed.py --part early-stop --models digits-cnn
    python benchmarks/eval_speed.py --part reliable --limit 200

``evaluate_no_checks`` is ``evaluate(..., EvalConfig(..., sanity=False))``: the same cascade without the sanity checks (a
second forward and a clean-point gradient on 16 samples of the first batch, random noise on the survivors).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab import attacks, data, evaluate, zoo
from advlab.defenses.training import TrainConfig, fit
from advlab.evaluation import EvalConfig

CACHE = Path(__file__).resolve().parent / ".cache"
EARLY = {  # model -> (eps, batch)
    "digits-cnn": (0.3, 599),
    "cifar-resnet18": (8 / 255, 128),
    "efficientnet-lite0": (2 / 255, 16),
}


def robust_acc(model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float(((model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)).float().mean())


def timed(fn: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def early_stop_part(name: str) -> dict[str, Any]:
    from pgd_speed import load_batch  # the same batches as the PGD speed benchmark

    eps, n = EARLY[name]
    torch.manual_seed(0)
    model = zoo.load(name, pretrained=name != "cifar-resnet18")
    x, y = load_batch(name, model, n)
    alpha = eps / 4
    rows: dict[str, Any] = {"model": name, "eps": eps, "batch": n}
    full, t_full = timed(lambda: attacks.PGD(eps=eps, alpha=alpha, steps=10)(model, x, y))
    rows["advlab_full"] = {"robust_accuracy": robust_acc(model, x, full.x_adv, y), "gradients": full.gradient_evaluations, "seconds": t_full}
    rep, t_ev = timed(lambda: evaluate(model, (x, y), EvalConfig(attacks=(attacks.PGD(eps=eps, alpha=alpha, steps=10),), batch_size=n)))
    rows["advlab_evaluate"] = {"robust_accuracy": rep.robust_accuracy, "gradients": rep.gradient_evaluations, "seconds": t_ev}
    rep, t_ev = timed(lambda: evaluate(model, (x, y), EvalConfig(attacks=(attacks.PGD(eps=eps, alpha=alpha, steps=10),), batch_size=n, sanity=False)))
    rows["evaluate_no_checks"] = {"robust_accuracy": rep.robust_accuracy, "gradients": rep.gradient_evaluations, "seconds": t_ev}
    try:
        import torchattacks
    except Exception as e:  # noqa: BLE001 - any import failure means "not available"
        rows["torchattacks"] = {"error": f"not installed ({type(e).__name__})"}
    else:
        ta = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=10, random_start=True)
        xa, t_ta = timed(lambda: ta(x, y))
        rows["torchattacks"] = {"robust_accuracy": robust_acc(model, x, xa, y), "gradients": 10 * n, "seconds": t_ta}
    return rows


def robust_digits(epochs: int = 40) -> nn.Module:
    """digits-cnn adversarially trained with PGD-7 at L-inf 0.1 (Madry et al.), cached after the first call."""
    from safetensors.torch import load_file, save_file

    path = CACHE / f"digits-cnn-pgd7-e0.1-ep{epochs}.safetensors"
    model = zoo.load("digits-cnn", pretrained=False)
    if path.exists():
        model.net.load_state_dict(load_file(str(path)))  # type: ignore[union-attr]
        return model.eval()
    torch.manual_seed(0)
    x, y = data.load("digits:train")
    pgd = attacks.PGD(eps=0.1, alpha=0.025, steps=7)
    print(f"training the robust digits CNN ({epochs} epochs of PGD-7 adversarial training; cached in {path}) ...", flush=True)
    fit(model, x, y, TrainConfig(epochs=epochs), perturb=lambda m, xb, yb: pgd(m, xb, yb).x_adv)
    CACHE.mkdir(exist_ok=True)
    save_file(model.net.state_dict(), str(path))  # type: ignore[union-attr]
    return model.eval()


def reliable_part(limit: int) -> dict[str, Any]:
    model = robust_digits()
    x, y = data.load("digits:test")
    x, y = x[:limit], y[:limit]
    eps = 0.1
    rows: dict[str, Any] = {"model": "digits-cnn (PGD-7 adversarially trained)", "eps": eps, "images": len(y)}
    rep, t = timed(lambda: evaluate(model, (x, y), EvalConfig(preset="reliable", eps=eps, norm="linf", batch_size=len(y))))
    rows["advlab_reliable"] = {"robust_accuracy": rep.robust_accuracy, "seconds": t, "gradients": rep.gradient_evaluations,
                               "clean_accuracy": rep.clean_accuracy, "flags": rep.flags}  # fmt: skip
    print(f"clean accuracy {rep.clean_accuracy:.2%}; advlab reliable: robust {rep.robust_accuracy:.2%} in {t:.1f} s "
          f"({rep.gradient_evaluations} gradients)", flush=True)
    for a in rep.per_attack:
        print(f"   {a['attack']:<12} robust after {a['robust_accuracy_after']:.2%}  {a['seconds']:.1f} s", flush=True)
    try:
        from pyautoattack import AutoAttack
    except Exception as e:  # noqa: BLE001
        rows["autoattack"] = {"error": f"not installed ({type(e).__name__}); bash scripts/bootstrap.sh bench"}
        return rows
    aa = AutoAttack(model, norm="Linf", eps=eps, version="standard", seed=0)
    out, t = timed(lambda: aa.run_standard_evaluation(x, y, batch_size=len(y)))
    xa = out[0] if isinstance(out, tuple) else out  # pyautoattack returns (x_adv, y_adv)
    rows["autoattack"] = {"robust_accuracy": robust_acc(model, x, xa, y), "seconds": t}
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["early-stop", "reliable", "all"], default="all")
    p.add_argument("--models", default="digits-cnn,cifar-resnet18,efficientnet-lite0")
    p.add_argument("--limit", type=int, default=599, help="digits for the reliable part")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="write the numbers to this file")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s), cpu")
    out: dict[str, Any] = {}
    if args.part in ("early-stop", "all"):
        print("\n== time to a robust-accuracy number: full-budget PGD-10 vs evaluate() with early stopping ==")
        print(f"{'model':<20}{'eps':>8}  {'row':<18}{'robust acc':>11}{'gradients':>11}{'seconds':>9}")
        for name in args.models.split(","):
            r = early_stop_part(name)
            out[f"early-stop/{name}"] = r
            for key in ("torchattacks", "advlab_full", "advlab_evaluate", "evaluate_no_checks"):
                v = r[key]
                if "error" in v:
                    print(f"{name:<20}{r['eps']:8.4f}  {key:<18}{v['error']}")
                else:
                    print(f"{name:<20}{r['eps']:8.4f}  {key:<18}{v['robust_accuracy']:11.2%}{v['gradients']:11d}{v['seconds']:9.2f}")
            ev, full = r["advlab_evaluate"], r["advlab_full"]
            line = f"  -> evaluate spends {ev['gradients'] / full['gradients']:.2f}x the gradients of full-budget PGD-10"
            if "seconds" in r["torchattacks"]:
                line += f"; torchattacks time / evaluate time = {r['torchattacks']['seconds'] / ev['seconds']:.2f}x"
            print(line)
    if args.part in ("reliable", "all"):
        print("\n== the reliable preset vs AutoAttack (standard), adversarially trained digits CNN, L-inf eps 0.1 ==")
        r = reliable_part(args.limit)
        out["reliable"] = r
        adv = r["advlab_reliable"]
        aa = r["autoattack"]
        if "error" in aa:
            print(f"AutoAttack: {aa['error']}")
        else:
            print(f"AutoAttack standard: robust {aa['robust_accuracy']:.2%} in {aa['seconds']:.1f} s")
            print(f"  -> difference {100 * (adv['robust_accuracy'] - aa['robust_accuracy']):+.2f} pp; "
                  f"advlab time / AutoAttack time = {adv['seconds'] / aa['seconds']:.3f}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
