"""Defense sweeps (seed 003, "does pruning defend?"): one model, a fixed sample set, fixed attack seeds, and a
list of defense settings; per setting the seed's table row, with confidence intervals and a paired test.

For every setting the defended model is built afresh from the undefended one (:mod:`advlab.defenses`) and
measured on the same images ``x`` (in [0, 1]) with labels ``y``:

    clean_accuracy              = |f_d(x) = y| / N
    robust_accuracy             = |f_d(x_adv) = y| / N      x_adv: the attack run on f_d itself (white box);
                                                            seed 003's "remnant accuracy"
    prediction_change_rate      = |f_d(x_adv) != f_d(x)| / N
    strict_attack_success_rate  = |f_d(x) = y and f_d(x_adv) != y| / |f_d(x) = y|
    transfer_robust_accuracy    = |f_d(x_adv_dense) = y| / N   x_adv_dense: the attack on the undefended model
                                                            (seed 003's "pretrained-qt" transfer row, for every setting)

Every sample is attacked (also the ones the model gets wrong), so that the prediction change rate is over
all N as in the seed. Seed 003's table appears to label its last two columns the other way round (its
"prediction change rate" equals (clean - remnant) / clean); the definitions above are the ones used here.
Accuracies carry 95% Wilson intervals; ``p_clean``/``p_robust`` are exact two-sided McNemar tests of the
per-sample correctness against the undefended model (small p: the defense really changed it).
``zero_gradient`` is the fraction of checked samples whose cross-entropy input gradient on f_d is all
zero: a white-box number on such a model means nothing (e.g. a quantizer without a straight-through gradient).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.base import Attack, frozen_parameters
from advlab.errors import AdvlabError

#: samples the zero-gradient check looks at per setting
CHECK_SAMPLES = 16


@dataclass(frozen=True)
class Setting:
    """One row of a sweep: a defense short name ("none", "e", "s", "r", "quant", "clamp") and its value."""

    defense: str
    value: float | None = None

    def check(self) -> None:
        """Raise AdvlabError for a value the defense cannot take (before any work starts)."""
        v = self.value
        ok = {"none": v is None, "e": v is not None and v >= 0, "s": v is not None and v > 0, "r": v is not None and v >= 0,
              "quant": v is not None and float(v).is_integer() and 2 <= v <= 16, "clamp": v is not None and 0 < v <= 100}  # fmt: skip
        rule = {"e": "E >= 0", "s": "S > 0", "r": "R >= 0", "quant": "bits an integer in 2..16", "clamp": "a percentile in (0, 100]"}
        if self.defense not in ok:
            raise AdvlabError(f"unknown defense {self.defense!r}; choose from e, s, r, quant, clamp")
        if not ok[self.defense]:
            raise AdvlabError(f"{self.label}: needs {rule[self.defense]}")

    @property
    def label(self) -> str:
        if self.defense == "none":
            return "undefended"
        names = {"e": "prune E", "s": "prune S", "r": "prune R", "quant": "quantize bits", "clamp": "clamp percentile"}
        return f"{names.get(self.defense, self.defense)}={self.value:g}"


@dataclass
class Row:
    """One setting's numbers (see the module docstring); ``changed_fraction`` is the seed's "prune ratio"."""

    label: str
    defense: str
    value: float | None
    changed_fraction: float
    n: int
    clean_accuracy: float
    clean_ci: tuple[float, float]
    robust_accuracy: float
    robust_ci: tuple[float, float]
    prediction_change_rate: float
    strict_attack_success_rate: float
    transfer_robust_accuracy: float
    transfer_ci: tuple[float, float]
    transfer_strict_attack_success_rate: float
    p_clean: float | None
    p_robust: float | None
    zero_gradient: float
    seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for k successes out of n (95% for z = 1.96)."""
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def mcnemar(a: torch.Tensor, b: torch.Tensor) -> float:
    """Exact two-sided McNemar p-value for paired booleans ``a``, ``b`` (N,): a binomial test on the discordant
    pairs, p = min(1, 2 * P[Bin(b01 + b10, 1/2) <= min(b01, b10)])."""
    b01 = int((a & ~b).sum())
    b10 = int((~a & b).sum())
    n = b01 + b10
    if n == 0:
        return 1.0
    k = min(b01, b10)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def adversarials(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``attack`` run on ``model`` batch by batch (untargeted, labels ``y``); x_adv on the CPU."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    return torch.cat([attack(model, x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)).x_adv.cpu()
                      for i in range(0, len(x), batch_size)])  # fmt: skip


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of the first :data:`CHECK_SAMPLES` samples whose cross-entropy input gradient is all zero."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    xs = x[:CHECK_SAMPLES].to(dev).clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad():
        loss = F.cross_entropy(model(xs).float(), y[:CHECK_SAMPLES].to(dev), reduction="sum")
        if not loss.requires_grad:  # no differentiable path from the input at all
            return 1.0
        (g,) = torch.autograd.grad(loss, xs, allow_unused=True)
    return 1.0 if g is None else float((g.flatten(1).abs().amax(1) == 0).float().mean())


@dataclass
class Outcome:
    """A row and the per-sample correctness behind it (kept for the paired tests and for resuming)."""

    row: Row
    clean_correct: torch.Tensor
    robust_correct: torch.Tensor


def measure(model: nn.Module, setting: Setting, x: torch.Tensor, y: torch.Tensor, attack: Attack, dense_adv: torch.Tensor,
            base: Outcome | None, *, calibration: torch.Tensor | None = None, batch_size: int = 256) -> Outcome:  # fmt: skip
    """Build the defended model for ``setting`` and measure one row (see the module docstring)."""
    from advlab.defenses import DEFENSES

    t0 = time.perf_counter()
    if setting.defense == "none":
        defended, changed, details = model, 0.0, {}
    else:
        if setting.defense not in DEFENSES:
            raise AdvlabError(f"unknown defense {setting.defense!r}; choose from {', '.join(DEFENSES)}")
        kw: dict[str, Any] = {}
        if setting.defense in ("clamp", "quant") and calibration is not None:
            kw["calibration"] = calibration
        try:
            defended = DEFENSES[setting.defense](model, setting.value, **kw)
        except ValueError as e:
            raise AdvlabError(f"{setting.label}: {e}") from None
        info = defended.defense  # type: ignore[attr-defined]
        changed, details = float(info.changed_fraction), dict(info.details)
    n = len(y)
    clean = _predict(defended, x, batch_size)
    adv = _predict(defended, adversarials(defended, attack, x, y, batch_size), batch_size)
    transfer = _predict(defended, dense_adv, batch_size)
    correct, robust, t_robust = clean == y, adv == y, transfer == y
    k_c, k_r, k_t = int(correct.sum()), int(robust.sum()), int(t_robust.sum())
    row = Row(
        label=setting.label, defense=setting.defense, value=setting.value, changed_fraction=changed, n=n,
        clean_accuracy=k_c / n, clean_ci=wilson(k_c, n), robust_accuracy=k_r / n, robust_ci=wilson(k_r, n),
        prediction_change_rate=int((adv != clean).sum()) / n,
        strict_attack_success_rate=float((correct & ~robust).sum()) / max(1, k_c),
        transfer_robust_accuracy=k_t / n, transfer_ci=wilson(k_t, n),
        transfer_strict_attack_success_rate=float((correct & ~t_robust).sum()) / max(1, k_c),
        p_clean=mcnemar(base.clean_correct, correct) if base is not None else None,
        p_robust=mcnemar(base.robust_correct, robust) if base is not None else None,
        zero_gradient=zero_gradient_fraction(defended, x, y), seconds=round(time.perf_counter() - t0, 3), details=details,
    )  # fmt: skip
    return Outcome(row, correct, robust)


def sweep(model: nn.Module, x: torch.Tensor, y: torch.Tensor, settings: Sequence[Setting], attack: Attack, *,
          calibration: torch.Tensor | None = None, batch_size: int = 256,
          done: Sequence[Outcome] | Mapping[int, Outcome] = (), on_row: Callable[[int, Outcome], None] | None = None,
          progress: bool = False, units: Callable[[int], bool] | None = None) -> list[Outcome]:  # fmt: skip
    """Measure the undefended model and then every setting, on the same ``x``, ``y`` and attack seed.

    The first outcome is always the undefended model (the paired tests compare against it). ``done``:
    outcomes finished earlier (resume), by row index (a sequence stands for rows 0, 1, ...); ``on_row(i,
    outcome)`` is called after each new one. ``units(i)``: measure row ``i`` only where it returns True (one
    shard of a distributed run); the result then holds the rows measured or given in ``done``, in order. A row
    measured without the undefended row at hand gets its McNemar tests when the rows are merged (a later call
    whose ``done`` holds row 0): the tests depend only on the saved per-sample correctness, so the merged
    table equals a single-process one.
    """
    if len(x) != len(y) or len(y) == 0:
        raise AdvlabError("the study needs a non-empty sample set with one label per image")
    rows = [Setting("none"), *[s for s in settings if s.defense != "none"]]
    for s in rows:
        s.check()
    out = dict(done) if isinstance(done, Mapping) else dict(enumerate(done))
    todo = [i for i in range(len(rows)) if i not in out and (units is None or units(i))]
    dense_adv = adversarials(model, attack, x, y, batch_size) if todo else None
    it: Any = todo
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc="study", unit="setting", leave=False, dynamic_ncols=True)
    for i in it:
        assert dense_adv is not None
        o = measure(model, rows[i], x, y, attack, dense_adv, out.get(0), calibration=calibration, batch_size=batch_size)
        out[i] = o
        if on_row is not None:
            on_row(i, o)
    base = out.get(0)
    if base is not None:
        for i, o in out.items():
            if i > 0 and o.row.p_clean is None:
                row = replace(o.row, p_clean=mcnemar(base.clean_correct, o.clean_correct),
                              p_robust=mcnemar(base.robust_correct, o.robust_correct))  # fmt: skip
                out[i] = Outcome(row, o.clean_correct, o.robust_correct)
    return [out[i] for i in sorted(out)]


def default_settings(model: nn.Module, defense: str) -> list[Setting]:
    """A meaningful sweep of at least 5 settings for ``defense`` on this model.

    E-prune thresholds are the 10, 30, 50, 70 and 90% quantiles of the model's |weights| (so the sweep means
    the same on any model; the seed's fixed E values were for one ResNet-18); S from 9 down to 1 sigma; R from
    1e-3 to 3 times the weights' overall std; quantization 8, 6, 4, 3, 2 bits; clamp percentiles 99.99 to 90.
    """
    from advlab.defenses import prunable_weights

    w = torch.cat([p.detach().abs().flatten().float().cpu() for _, p in prunable_weights(model)])
    if defense == "e":
        q = torch.quantile(w[torch.randperm(len(w), generator=torch.Generator().manual_seed(0))[:1_000_000]],
                           torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]))  # fmt: skip
        return [Setting("e", float(f"{float(v):.3g}")) for v in q]
    if defense == "s":
        return [Setting("s", float(v)) for v in (9, 7, 5, 3, 2, 1)]
    if defense == "r":
        std = float(torch.cat([p.detach().flatten().float().cpu() for _, p in prunable_weights(model)]).std())
        return [Setting("r", float(f"{std * f:.3g}")) for f in (1e-3, 1e-2, 1e-1, 1.0, 3.0)]
    if defense == "quant":
        return [Setting("quant", float(b)) for b in (8, 6, 4, 3, 2)]
    if defense == "clamp":
        return [Setting("clamp", v) for v in (99.99, 99.9, 99.0, 95.0, 90.0)]
    raise AdvlabError(f"unknown defense {defense!r}; choose from e, s, r, quant, clamp")


def table(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """Rows for CSV / JSON: every number of every setting."""
    out = []
    for o in outcomes:
        d = o.row.to_dict()
        for k in ("clean_ci", "robust_ci", "transfer_ci"):
            lo, hi = d.pop(k)
            d[f"{k}_low"], d[f"{k}_high"] = lo, hi
        d.pop("details")
        out.append(d)
    return out


def markdown(outcomes: Sequence[Outcome], model_name: str = "model") -> str:
    """The seed's table layout, with our definitions (see the module docstring) and the extra columns."""
    head = ("| Model | prune ratio | Clean Accuracy | Remnant Accuracy | Prediction Change Rate | Strict Attack Success Rate "
            "(from correct to wrong) | Transfer Remnant Accuracy | McNemar p (robust) | Note |")  # fmt: skip
    lines = [head, "| " + " | ".join([":-:"] * 9) + " |"]
    for o in outcomes:
        r = o.row
        name = model_name if r.defense == "none" else r.label
        note = []
        if r.zero_gradient > 0:
            note.append(f"zero gradients on {r.zero_gradient:.0%}: white-box numbers unreliable")
        if r.p_robust is not None and r.p_robust < 0.05:
            note.append("robust accuracy differs (p < 0.05)")
        p = "" if r.p_robust is None else f"{r.p_robust:.3g}"
        lines.append(f"| {name} | {r.changed_fraction:.4%} | {r.clean_accuracy:.2%} | {r.robust_accuracy:.2%} | {r.prediction_change_rate:.2%} "
                     f"| {r.strict_attack_success_rate:.2%} | {r.transfer_robust_accuracy:.2%} | {p} | {'; '.join(note)} |")  # fmt: skip
    return "\n".join(lines) + "\n"
