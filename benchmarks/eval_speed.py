"""Time to a robust-accuracy number, and the reliable preset against AutoAttack, measured side by side.

Part "early-stop" (undefended models, where most samples break within a few steps): the robust accuracy
of full-budget PGD-10 (torchattacks, and advlab with ``early_stop=False``) against ``advlab.evaluate``
with the same PGD-10 and early stopping. Printed: robust accuracies, gradient evaluations (per sample
backward passes) and the ratios full / evaluate for gradients and for time against torchattacks.

Part "reliable": AutoAttack's standard version (the ``pyautoattack`` package: APGD-CE, APGD-T on 9 targets, FAB-T,
Square 5000 queries) against advlab's ``preset="reliable"`` (APGD-CE, then APGD-T on MALT's 2 closest targets), side
by side in one process for each setting of :data:`SETTINGS`: an adversarially trained and the shipped digits CNN, at
L-inf 0.1 and L2 0.5, on the first ``--limit`` test digits. Printed per setting: the robust accuracies and their
difference in percentage points, process time (``time.process_time``), forward and backward passes per image and
the ratios advlab / AutoAttack, the samples only one of them broke, and each one's stages. The passes are counted
the same way for both by :class:`Counted` (rows of every forward through the model, rows of every backward through
its input). The robust model is trained on first use (PGD-7 adversarial training at L-inf 0.1, a few minutes on a
CPU) and cached in ``benchmarks/.cache/``. AutoAttack runs once per setting (minutes each on a CPU), so the time
ratio is one measurement, not a min / median over repeats.

    python benchmarks/eval_speed.py                     # both parts, 1 thread
    python benchmarks/eval_speed.py --part early-stop --models digits-cnn
    python benchmarks/eval_speed.py --part reliable --limit 300 --json reliable.json
    python benchmarks/eval_speed.py --part reliable --settings robust/l2,undefended/l2
    python benchmarks/eval_speed.py --part targets      # how many APGD-T targets, by logit and by MALT order

``evaluate_no_checks`` is ``evaluate(..., EvalConfig(..., sanity=False))``: the same cascade without the sanity
checks (a second forward and a clean-point gradient on 16 samples of the first batch, random noise on the survivors).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
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
    rows["advlab_full"] = {
        "robust_accuracy": robust_acc(model, x, full.x_adv, y),
        "gradients": full.gradient_evaluations,
        "seconds": t_full,
    }
    rep, t_ev = timed(
        lambda: evaluate(
            model, (x, y), EvalConfig(attacks=(attacks.PGD(eps=eps, alpha=alpha, steps=10),), batch_size=n)
        )
    )
    rows["advlab_evaluate"] = {
        "robust_accuracy": rep.robust_accuracy,
        "gradients": rep.gradient_evaluations,
        "seconds": t_ev,
    }
    rep, t_ev = timed(
        lambda: evaluate(
            model,
            (x, y),
            EvalConfig(attacks=(attacks.PGD(eps=eps, alpha=alpha, steps=10),), batch_size=n, sanity=False),
        )
    )
    rows["evaluate_no_checks"] = {
        "robust_accuracy": rep.robust_accuracy,
        "gradients": rep.gradient_evaluations,
        "seconds": t_ev,
    }
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
    print(
        f"training the robust digits CNN ({epochs} epochs of PGD-7 adversarial training; cached in {path}) ...",
        flush=True,
    )
    fit(model, x, y, TrainConfig(epochs=epochs), perturb=lambda m, xb, yb: pgd(m, xb, yb).x_adv)
    CACHE.mkdir(exist_ok=True)
    save_file(model.net.state_dict(), str(path))  # type: ignore[union-attr]
    return model.eval()


#: (model, norm, eps) of the reliable part: both models at L-inf 0.1 (the digits' default eps) and at L2 0.5
#: (clean ~99%; APGD-CE leaves ~35% of the undefended and ~65% of the robust model's digits unbroken)
SETTINGS = [("robust", "linf", 0.1), ("robust", "l2", 0.5), ("undefended", "linf", 0.1), ("undefended", "l2", 0.5)]


class _CountBackward(torch.autograd.Function):
    """The identity on the model's input; its backward adds the rows of each gradient to ``counter.backwards``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, counter: Counted) -> torch.Tensor:  # noqa: ANN401
        ctx.counter = counter
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN401
        ctx.counter.backwards += len(grad)
        return grad, None


class Counted(nn.Module):
    """``model`` with every forward row and every backward row through its input counted, whoever calls it
    (the same count for AutoAttack and for advlab, independent of advlab's own per-sample counters)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.forwards, self.backwards = model, 0, 0
        self.train(model.training)  # the wrapper in the model's mode (else evaluate flags a training-mode module)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += len(x)
        return self.model(_CountBackward.apply(x, self) if torch.is_grad_enabled() and x.requires_grad else x)


def run_advlab(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> dict[str, Any]:
    """``preset="reliable"`` through :class:`Counted`: robust accuracy, process time, passes, per-stage table."""
    counted = Counted(model)
    t0 = time.process_time()
    rep = evaluate(counted, (x, y), EvalConfig(preset="reliable", eps=eps, norm=norm, batch_size=len(y)))
    return {
        **report_numbers(rep, time.process_time() - t0),
        "forwards": counted.forwards,
        "backwards": counted.backwards,
        "own_forwards": rep.forward_evaluations,
        "own_backwards": rep.gradient_evaluations,
        "warnings": rep.warnings,
        "trust": getattr(rep, "trust", None),
    }


def report_numbers(rep: Any, seconds: float) -> dict[str, Any]:
    """An evaluation's numbers for the side-by-side tables (also ``autoattack_preset.py``'s): robust and clean
    accuracy, ``seconds``, the per-image robust flags, and per stage its attack, config, samples attacked and broken,
    backward passes and the robust accuracy after it."""
    stages = [
        {
            "stage": a["attack"],
            "config": a["config"],
            "attacked": a["attacked"],
            "broken": a["broken"],
            "backwards": a["gradient_evaluations"],
            "robust_after": a["robust_accuracy_after"],
        }
        for a in rep.per_attack
    ]
    return {
        "robust_accuracy": rep.robust_accuracy,
        "clean_accuracy": rep.clean_accuracy,
        "seconds": seconds,
        "robust": (~rep.samples.broken & (rep.samples.clean_pred == rep.samples.y)).cpu(),
        "stages": stages,
    }


class _Stages(logging.Handler):
    """AutoAttack's "robust accuracy after APGD-CE: 85.31% ..." log lines, with the pass counts at that moment."""

    def __init__(self, counted: Counted) -> None:
        super().__init__(logging.DEBUG)
        self.counted, self.rows = counted, []

    def emit(self, record: logging.LogRecord) -> None:
        m = re.match(r"robust accuracy after (\S+): ([\d.]+)%", record.getMessage())
        if m:
            self.rows.append(
                {
                    "stage": m.group(1).lower(),
                    "robust_after": float(m.group(2)) / 100,
                    "forwards": self.counted.forwards,
                    "backwards": self.counted.backwards,
                }
            )


def run_autoattack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float) -> dict[str, Any]:
    """AutoAttack standard (APGD-CE, APGD-T on 9 targets, FAB-T on 9 targets, Square 5000 queries), seed 0."""
    from pyautoattack import AutoAttack

    counted = Counted(model)
    aa = AutoAttack(counted, norm={"linf": "Linf", "l2": "L2"}[norm], eps=eps, version="standard", seed=0, device="cpu")
    stages = _Stages(counted)
    logger = logging.getLogger("auto-attack")
    logger.addHandler(stages)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        t0 = time.process_time()
        xa, _ = aa.run_standard_evaluation(x, y, batch_size=len(y))
        seconds = time.process_time() - t0
    finally:
        logger.removeHandler(stages)
    with torch.no_grad():
        robust = (model(x).argmax(1) == y) & (model(xa).argmax(1) == y)
    return {
        "robust_accuracy": float(robust.float().mean()),
        "seconds": seconds,
        "forwards": counted.forwards,
        "backwards": counted.backwards,
        "stages": _stage_deltas(stages.rows),
        "robust": robust,
    }


def _stage_deltas(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per AutoAttack stage: its passes (differences of the running counts) and the robust accuracy after it."""
    out, fw, bw = [], 0, 0
    for r in rows:
        out.append(
            {
                "stage": r["stage"],
                "robust_after": r["robust_after"],
                "forwards": r["forwards"] - fw,
                "backwards": r["backwards"] - bw,
            }
        )
        fw, bw = r["forwards"], r["backwards"]
    return out


def reliable_models() -> dict[str, nn.Module]:
    return {"robust": robust_digits(), "undefended": zoo.load("digits-cnn").eval()}


def reliable_part(limit: int, settings: list[tuple[str, str, float]]) -> dict[str, Any]:
    """Per setting, AutoAttack standard then advlab reliable on the first ``limit`` test digits (one process)."""
    models = reliable_models()
    x, y = data.load("digits:test")
    x, y = x[:limit], y[:limit]
    out: dict[str, Any] = {}
    for name, norm, eps in settings:
        key = f"{name}/{norm}/{eps:g}"
        print(
            f"\n-- {key}: {len(y)} test digits, "
            f"{'PGD-7 adversarially trained' if name == 'robust' else 'shipped'} digits-cnn",
            flush=True,
        )
        try:
            aa = run_autoattack(models[name], x, y, norm, eps)
        except ImportError as e:
            aa = {"error": f"not installed ({type(e).__name__}); bash scripts/bootstrap.sh bench"}
        adv = run_advlab(models[name], x, y, norm, eps)
        print_setting(len(y), adv, aa)
        out[key] = {"images": len(y), "advlab_reliable": _jsonable(adv), "autoattack": _jsonable(aa)}
        if "error" not in aa:  # the test digits (indices) only one of them broke
            out[key]["broken_by_autoattack_only"] = (adv["robust"] & ~aa["robust"]).nonzero().flatten().tolist()
            out[key]["broken_by_advlab_only"] = (aa["robust"] & ~adv["robust"]).nonzero().flatten().tolist()
    return out


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "robust"}


def print_setting(n: int, adv: dict[str, Any], aa: dict[str, Any]) -> None:
    """Robust accuracy, process time, passes per image of both and the ratios; then each one's stages."""
    print(f"{'':<22}{'robust acc':>11}{'seconds':>9}{'fwd/img':>10}{'bwd/img':>10}")
    rows = [("advlab reliable", adv)] + ([("AutoAttack standard", aa)] if "error" not in aa else [])
    for label, r in rows:
        print(
            f"{label:<22}{r['robust_accuracy']:11.2%}{r['seconds']:9.1f}{r['forwards'] / n:10.1f}"
            f"{r['backwards'] / n:10.1f}"
        )
    if "error" in aa:
        print(f"AutoAttack: {aa['error']}")
    else:
        only_aa = int((adv["robust"] & ~aa["robust"]).sum())
        only_adv = int((aa["robust"] & ~adv["robust"]).sum())
        print(
            f"{'advlab - AutoAttack':<22}{100 * (adv['robust_accuracy'] - aa['robust_accuracy']):+10.2f}pp"
            f"{adv['seconds'] / aa['seconds']:8.3f}x{adv['forwards'] / aa['forwards']:9.4f}x"
            f"{adv['backwards'] / aa['backwards']:9.3f}x"
            f"   (broken by AutoAttack only: {only_aa}, by advlab only: {only_adv})"
        )
    print(
        "  advlab stages:  "
        + "; ".join(
            f"{s['stage']} {s['broken']}/{s['attacked']} broken, {s['backwards'] / n:.1f} bwd/img"
            for s in adv["stages"]
        )
    )
    if "error" not in aa:
        print(
            "  AutoAttack:     "
            + "; ".join(
                f"{s['stage']} -> {s['robust_after']:.2%}, {s['backwards'] / n:.1f} bwd/img" for s in aa["stages"]
            )
        )


def targets_part(limit: int, settings: list[tuple[str, str, float]], steps: int = 100) -> dict[str, Any]:
    """How many targets APGD-T needs after APGD-CE, by logit order (AutoAttack) and by MALT's order.

    Per setting: APGD-CE (``steps``, early stop) and, on every clean-correct digit, targeted APGD-DLR (``steps``, early
    stop) towards each wrong class in turn; then the cascade "APGD-CE, then the first k targets of an order" is
    read off per sample for k = 1, 2, 3, 9 (a sample falls at its first success; the gradients are the backwards it
    spent until then, plus MALT's 10 Jacobian rows). Robust accuracy and backward passes per image."""
    from advlab.attacks.apgd import malt_targets
    from advlab.attacks.base import Oracle

    models = reliable_models()
    x, y = data.load("digits:test")
    x, y = x[:limit], y[:limit]
    out: dict[str, Any] = {}
    for name, norm, eps in settings:
        m = models[name]
        with torch.no_grad():
            z = m(x)
        ok = z.argmax(1) == y
        xs, ys, zs = x[ok], y[ok], z[ok]
        ce = attacks.APGD(eps=eps, norm=norm, steps=steps, early_stop=True)(m, xs, ys)
        succ = torch.zeros(len(xs), zs.shape[1], dtype=torch.bool)
        cost = torch.zeros(len(xs), zs.shape[1])
        for t in range(zs.shape[1]):
            rows = (ys != t).nonzero().flatten()
            r = attacks.APGD(eps=eps, norm=norm, steps=steps, loss="dlr", early_stop=True)(
                m, xs[rows], ys[rows], target=torch.full_like(ys[rows], t)
            )
            succ[rows, t], cost[rows, t] = r.success.cpu(), r.backwards.float()
        ranked = zs.argsort(1, descending=True)
        orders = {
            "logits": ranked[ranked != ys[:, None]].view(len(xs), -1),
            "malt": malt_targets(Oracle(m, len(xs)), xs, ys, zs, 9, norm),
        }
        rows_out = {}
        for order, cls in orders.items():
            for k in (0, 1, 2, 3, 9):
                alive, spent = ~ce.success.cpu(), ce.backwards.float().clone()
                spent += (alive & (k > 0)).float() * (10 if order == "malt" else 0)
                for j in range(k):
                    spent += alive.float() * cost.gather(1, cls[:, j : j + 1])[:, 0]
                    alive &= ~succ.gather(1, cls[:, j : j + 1])[:, 0]
                rows_out[f"{order}/{k}"] = {
                    "robust_accuracy": int(alive.sum()) / len(y),
                    "backwards_per_image": float(spent.sum()) / len(y),
                }
        key = f"{name}/{norm}/{eps:g}"
        out[key] = rows_out
        print(
            f"{key:<22}"
            + "  ".join(
                f"{o} k={k}: {v['robust_accuracy']:.2%} {v['backwards_per_image']:.0f}"
                for o, k, v in ((*kk.split("/"), v) for kk, v in rows_out.items())
                if k != "0" or o == "logits"
            ),
            flush=True,
        )
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["early-stop", "reliable", "targets", "all"], default="all")
    p.add_argument("--models", default="digits-cnn,cifar-resnet18,efficientnet-lite0")
    p.add_argument("--limit", type=int, default=599, help="test digits for the reliable part")
    p.add_argument(
        "--settings",
        default="robust/linf,robust/l2,undefended/linf,undefended/l2",
        help="reliable part: model/norm pairs",
    )
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
                    print(
                        f"{name:<20}{r['eps']:8.4f}  {key:<18}{v['robust_accuracy']:11.2%}{v['gradients']:11d}"
                        f"{v['seconds']:9.2f}"
                    )
            ev, full = r["advlab_evaluate"], r["advlab_full"]
            line = (
                f"  -> evaluate spends {ev['gradients'] / full['gradients']:.2f}x the gradients of full-budget PGD-10"
            )
            if "seconds" in r["torchattacks"]:
                line += f"; torchattacks time / evaluate time = {r['torchattacks']['seconds'] / ev['seconds']:.2f}x"
            print(line)
    if args.part in ("reliable", "all"):
        print("\n== the reliable preset vs AutoAttack (standard), side by side; process time, passes per image ==")
        chosen = [st for st in SETTINGS if f"{st[0]}/{st[1]}" in args.settings.split(",")]
        out["reliable"] = reliable_part(args.limit, chosen)
    if args.part == "targets":
        print(
            f"\n== APGD-CE then k targets of APGD-T ({args.limit} digits, 100 steps each): "
            "robust accuracy, backwards per image =="
        )
        chosen = [st for st in SETTINGS if f"{st[0]}/{st[1]}" in args.settings.split(",")]
        out["targets"] = targets_part(args.limit, chosen)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
