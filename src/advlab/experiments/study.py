"""Defense sweeps (research note 003, "does pruning defend?"): one model, a fixed sample set, fixed attack seeds, and a
list of defense settings; per setting the seed's table row, with confidence intervals and a paired test.

For every setting the defended model is built afresh from the undefended one (:mod:`advlab.defenses`) and
measured on the same images ``x`` (in [0, 1]) with labels ``y`` (all labelled), with the shared definitions of
:mod:`advlab.evaluation.metrics` (C = {i: f_d(x_i) = y_i}, the clean-correct samples):

    clean_accuracy              = |C| / N
    robust_accuracy             = |{i in C: f_d(x_adv_i) = y_i}| / N    x_adv: the attack run on f_d itself (white
                                                            box); research note 003's "remnant accuracy"
    prediction_change_rate      = |f_d(x_adv) != f_d(x)| / N
    strict_attack_success_rate  = |{i in C: f_d(x_adv_i) != y_i}| / |C|
    transfer_robust_accuracy    = |{i in C: f_d(x_adv_dense_i) = y_i}| / N   x_adv_dense: the attack on the undefended
                                                            model (research note 003's "pretrained-qt" transfer row, for
                                                            every setting)

Robust accuracy is the one of ``advlab eval`` and ``advlab attack``: a sample the defended model gets wrong
clean is never robust (until issue 12 the study counted ``f_d(x_adv) = y`` over all N, which also counted
a misclassified sample the attack happened to move onto its label). Every sample is attacked (also the ones
the model gets wrong), so that the prediction change rate is over all N as in the seed. Research note 003's table
appears to label its last two columns the other way round (its "prediction change rate" equals (clean -
remnant) / clean); the definitions above are the ones used here. Accuracies carry 95% Wilson intervals;
``p_clean``/``p_robust`` are exact two-sided McNemar tests of the per-sample correctness (clean-correct,
resp. robust as above) against the undefended model (small p: the defense really changed it).
``zero_gradient`` is the fraction of checked samples whose cross-entropy input gradient on f_d is all
zero (:func:`advlab.evaluation.checks.zero_gradient_fraction`): a white-box number on such a model means
nothing (e.g. a quantizer without a straight-through gradient).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import Attack
from advlab.device import device_of
from advlab.errors import AdvlabError
from advlab.evaluation import metrics
from advlab.evaluation.checks import CHECK_SAMPLES, zero_gradient_fraction
from advlab.evaluation.inputs import Indexed
from advlab.work import Work

__all__ = [
    "CHECK_SAMPLES",
    "DenseAdversarials",
    "TABLE_NOTE",
    "Outcome",
    "Row",
    "Setting",
    "adversarials",
    "default_settings",
    "dense_adversarials",
    "markdown",
    "mcnemar",
    "measure",
    "sweep",
    "table",
    "wilson",
    "zero_gradient_fraction",
]


@dataclass(frozen=True)
class Setting:
    """One row of a sweep: a defense short name ("none", "e", "s", "r", "quant", "clamp") and its value."""

    defense: str
    value: float | None = None

    def check(self) -> None:
        """Raise AdvlabError for a value the defense cannot take (before any work starts)."""
        v = self.value
        ok = {
            "none": v is None,
            "e": v is not None and v >= 0,
            "s": v is not None and v > 0,
            "r": v is not None and v >= 0,
            "quant": v is not None and float(v).is_integer() and 2 <= v <= 16,
            "clamp": v is not None and 0 < v <= 100,
        }
        rule = {
            "e": "E >= 0",
            "s": "S > 0",
            "r": "R >= 0",
            "quant": "bits an integer in 2..16",
            "clamp": "a percentile in (0, 100]",
        }
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
    dev = device_of(model)
    with torch.no_grad():
        return torch.cat([model(x[i : i + batch_size].to(dev)).argmax(1).cpu() for i in range(0, len(x), batch_size)])


def adversarials(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``attack`` run on ``model`` batch by batch (untargeted, labels ``y``); x_adv on the CPU."""
    dev = device_of(model)
    return torch.cat(
        [
            attack(model, x[i : i + batch_size].to(dev), y[i : i + batch_size].to(dev)).x_adv.cpu()
            for i in range(0, len(x), batch_size)
        ]
    )


def _attacked(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """One batch's x_adv on the CPU (untargeted, labels ``y``)."""
    dev = device_of(model)
    return attack(model, x.to(dev), y.to(dev)).x_adv.cpu()


def _stream(data: Indexed) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    """``(b, x, y)`` of every batch of ``data`` in order, the next one read in a background thread while this one
    is in use (:class:`advlab.evaluation.inputs.Source`: at most one batch ahead)."""
    from advlab.evaluation.inputs import Source

    yield from Source(data).select(lambda b: True)


class DenseAdversarials:
    """The undefended model's adversarial images, batch by batch in the data's batching (``batch(b)``), for the
    transfer column of every row. Kept in memory for in-memory data; for streamed data (``folder``) written to
    one file per batch there and read back batch by batch, so that memory holds one batch of them at a time."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder, self._count = folder, 0
        self._kept: list[torch.Tensor] = []

    @classmethod
    def of(cls, x_adv: torch.Tensor, batch_size: int) -> DenseAdversarials:
        """``x_adv`` (N, C, H, W) in memory, in batches of ``batch_size``."""
        dense = cls()
        for part in x_adv.split(batch_size):
            dense.add(part)
        return dense

    def add(self, x_adv: torch.Tensor) -> None:
        if self.folder is None:
            self._kept.append(x_adv)
        else:
            torch.save(x_adv.contiguous(), self.folder / f"dense_{self._count:06d}.pt")
        self._count += 1

    def __len__(self) -> int:
        return self._count

    def batch(self, b: int) -> torch.Tensor:
        if self.folder is None:
            return self._kept[b]
        out = torch.load(self.folder / f"dense_{b:06d}.pt", weights_only=True)
        assert isinstance(out, torch.Tensor)
        return out


def dense_adversarials(
    model: nn.Module, attack: Attack, data: Indexed, folder: Path | None = None
) -> DenseAdversarials:
    """``attack`` on the undefended ``model``, batch by batch over ``data`` (see :class:`DenseAdversarials`)."""
    dense = DenseAdversarials(folder)
    for _, x, y in _stream(data):
        dense.add(_attacked(model, attack, x, y))
    return dense


@dataclass
class Outcome:
    """A row and the per-sample correctness behind it (kept for the paired tests and for resuming)."""

    row: Row
    clean_correct: torch.Tensor
    robust_correct: torch.Tensor

    def to_saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, JSON-ready dict) to save: the per-sample correctness and the row."""
        return {"clean_correct": self.clean_correct, "robust_correct": self.robust_correct}, self.row.to_dict()

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], row: dict[str, Any]) -> Outcome:
        """The outcome :meth:`to_saved` saved (JSON turned the intervals into lists: they become tuples again)."""
        d = dict(row)
        for k in ("clean_ci", "robust_ci", "transfer_ci"):
            d[k] = tuple(d[k])
        return cls(Row(**d), tensors["clean_correct"].bool(), tensors["robust_correct"].bool())


def _defended(
    model: nn.Module, setting: Setting, calibration: torch.Tensor | None
) -> tuple[nn.Module, float, dict[str, Any]]:
    """The defended model for ``setting``, its changed fraction (the seed's "prune ratio") and the defense's details."""
    from advlab.defenses import DEFENSES, defense_info

    if setting.defense == "none":
        return model, 0.0, {}
    if setting.defense not in DEFENSES:
        raise AdvlabError(f"unknown defense {setting.defense!r}; choose from {', '.join(DEFENSES)}")
    kw: dict[str, Any] = {}
    if setting.defense in ("clamp", "quant") and calibration is not None:
        kw["calibration"] = calibration
    try:
        defended = DEFENSES[setting.defense](model, setting.value, **kw)
    except ValueError as e:
        raise AdvlabError(f"{setting.label}: {e}") from None
    info = defense_info(defended)
    if info is None:
        raise AdvlabError(f"{setting.label}: the defense returned a model without its .defense record")
    return defended, float(info.changed_fraction), dict(info.details)


def measure(
    model: nn.Module,
    setting: Setting,
    x: torch.Tensor | Indexed,
    y: torch.Tensor,
    attack: Attack,
    dense_adv: torch.Tensor | DenseAdversarials,
    base: Outcome | None,
    *,
    calibration: torch.Tensor | None = None,
    batch_size: int = 256,
) -> Outcome:
    """Build the defended model for ``setting`` and measure one row (see the module docstring); every rate
    comes from :mod:`advlab.evaluation.metrics`. ``x``: the images, or batches of them read one at a time
    (:class:`advlab.data.Batches`; ``dense_adv`` then in the same batching), with labels ``y`` (N,; the batches'
    own labels are the ones used); only per-sample predictions are kept, and the first :data:`CHECK_SAMPLES`
    images for the zero-gradient check."""
    from advlab.evaluation.inputs import _Pair

    t0 = time.perf_counter()
    defended, changed, details = _defended(model, setting, calibration)
    data = _Pair(x, y, batch_size) if isinstance(x, torch.Tensor) else x
    dense = dense_adv if isinstance(dense_adv, DenseAdversarials) else DenseAdversarials.of(dense_adv, batch_size)
    fill = setting.defense == "none" and len(dense) == 0  # the undefended row makes the dense adversarials
    (clean, adv, transfer, y), (check_x, check_y) = _passed(defended, attack, data, dense, batch_size, fill=fill)
    correct, robust, t_robust = (
        metrics.clean_correct(y, clean),
        metrics.robust(y, clean, adv),
        metrics.robust(y, clean, transfer),
    )
    row = Row(
        label=setting.label,
        defense=setting.defense,
        value=setting.value,
        changed_fraction=changed,
        n=len(y),
        clean_accuracy=metrics.clean_accuracy(y, clean),
        clean_ci=wilson(int(correct.sum()), len(y)),
        robust_accuracy=metrics.robust_accuracy(y, clean, adv),
        robust_ci=wilson(int(robust.sum()), len(y)),
        prediction_change_rate=metrics.prediction_change_rate(clean, adv),
        strict_attack_success_rate=metrics.strict_attack_success_rate(y, clean, adv),
        transfer_robust_accuracy=metrics.robust_accuracy(y, clean, transfer),
        transfer_ci=wilson(int(t_robust.sum()), len(y)),
        transfer_strict_attack_success_rate=metrics.strict_attack_success_rate(y, clean, transfer),
        p_clean=mcnemar(base.clean_correct, correct) if base is not None else None,
        p_robust=mcnemar(base.robust_correct, robust) if base is not None else None,
        zero_gradient=zero_gradient_fraction(defended, check_x, check_y),
        seconds=round(time.perf_counter() - t0, 3),
        details=details,
    )
    return Outcome(row, correct, robust)


def _passed(
    defended: nn.Module, attack: Attack, data: Indexed, dense: DenseAdversarials, batch_size: int, *, fill: bool
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, torch.Tensor]]:
    """One pass over ``data``: per batch the defended model's clean predictions, its predictions on ``attack`` run
    on it and on the undefended model's adversarials ``dense``, and the labels ((N,) each, on the CPU); and the
    first :data:`CHECK_SAMPLES` images and labels (the zero-gradient check's). ``fill``: ``defended`` is the
    undefended model, whose adversarials are the dense ones: they are added to ``dense`` as they are made."""
    cols: dict[str, list[torch.Tensor]] = {"clean": [], "adv": [], "transfer": [], "y": []}
    check_x: list[torch.Tensor] = []
    check_y: list[torch.Tensor] = []
    for b, xb, yb in _stream(data):
        x_adv = _attacked(defended, attack, xb, yb)
        if fill:
            dense.add(x_adv)
        cols["clean"].append(_predict(defended, xb, batch_size))
        cols["adv"].append(_predict(defended, x_adv, batch_size))
        cols["transfer"].append(cols["adv"][-1] if fill else _predict(defended, dense.batch(b), batch_size))
        cols["y"].append(yb.cpu())
        if sum(len(c) for c in check_x) < CHECK_SAMPLES:
            check_x.append(xb[:CHECK_SAMPLES])
            check_y.append(yb[:CHECK_SAMPLES])
    columns = tuple(torch.cat(cols[k]) for k in ("clean", "adv", "transfer", "y"))
    return columns, (torch.cat(check_x), torch.cat(check_y))


def _with_tests(outcomes: dict[int, Outcome]) -> list[Outcome]:
    """The outcomes in row order, each row measured without the undefended one at hand given its McNemar tests."""
    base = outcomes.get(0)
    out = dict(outcomes)
    if base is not None:
        for i, o in outcomes.items():
            if i > 0 and o.row.p_clean is None:
                row = replace(
                    o.row,
                    p_clean=mcnemar(base.clean_correct, o.clean_correct),
                    p_robust=mcnemar(base.robust_correct, o.robust_correct),
                )
                out[i] = Outcome(row, o.clean_correct, o.robust_correct)
    return [out[i] for i in sorted(out)]


def sweep(
    model: nn.Module,
    x: torch.Tensor | Indexed,
    y: torch.Tensor,
    settings: Sequence[Setting],
    attack: Attack,
    *,
    calibration: torch.Tensor | None = None,
    batch_size: int = 256,
    work: Work[Outcome] | None = None,
    spill: Path | None = None,
) -> list[Outcome]:
    """Measure the undefended model and then every setting, on the same ``x``, ``y`` and attack seed.

    ``x``: the images (N, C, H, W) in [0, 1], or batches of them read one at a time (:class:`advlab.data.Batches`:
    each row is then one pass over the data, batch by batch, keeping per-sample predictions only), with labels
    ``y`` (N,). The undefended model's adversarial images (the transfer column of every row) are those of row 0,
    made while it is measured (in a pass of their own when row 0 was measured earlier or is in another shard); for
    streamed data they are written to the folder ``spill`` (None: kept in memory), one file per batch, and read
    back batch by batch by each later row.

    The first outcome (row 0) is always the undefended model (the paired tests compare against it); row i > 0 is
    the i-th setting that is not "none". ``work``: one unit per row: ``work.done`` holds outcomes finished
    earlier (resume; not measured again), ``work.on_done(i, outcome)`` is called after each new one,
    ``work.in_shard(i)`` selects this shard's rows (the result then holds the rows measured or given in ``done``,
    in order), ``work.progress`` wraps the row indices. A row measured without the undefended row at hand
    gets its McNemar tests when the rows are merged (a later call whose ``done`` holds row 0): the tests
    depend only on the saved per-sample correctness, so the merged table equals a single-process one.
    """
    from advlab.evaluation.inputs import _Pair

    n = len(x) if isinstance(x, torch.Tensor) else getattr(x, "count", len(y))
    if n != len(y) or len(y) == 0:
        raise AdvlabError("the study needs a non-empty sample set with one label per image")
    rows = [Setting("none"), *[s for s in settings if s.defense != "none"]]
    for s in rows:
        s.check()
    work = work if work is not None else Work()
    out = work.finished()
    wanted = [i for i in range(len(rows)) if work.wants(i)]
    data = _Pair(x, y, batch_size) if isinstance(x, torch.Tensor) else x
    folder = None if isinstance(x, torch.Tensor) else spill
    # the undefended row's adversarials are the dense ones: made while it is measured, else in a pass of their own
    made = 0 in wanted or not wanted
    dense = DenseAdversarials(folder) if made else dense_adversarials(model, attack, data, folder)
    for i in work.todo(wanted):
        out[i] = measure(
            model, rows[i], data, y, attack, dense, out.get(0), calibration=calibration, batch_size=batch_size
        )
        work.record(i, out[i])
    return _with_tests(out)


def default_settings(model: nn.Module, defense: str) -> list[Setting]:
    """A meaningful sweep of at least 5 settings for ``defense`` on this model.

    E-prune thresholds are the 10, 30, 50, 70 and 90% quantiles of the model's |weights| (so the sweep means
    the same on any model; the seed's fixed E values were for one ResNet-18); S from 9 down to 1 sigma; R from
    1e-3 to 3 times the weights' overall std; quantization 8, 6, 4, 3, 2 bits; clamp percentiles 99.99 to 90.
    """
    from advlab.defenses import prunable_weights

    w = torch.cat([p.detach().abs().flatten().float().cpu() for _, p in prunable_weights(model)])
    if defense == "e":
        q = torch.quantile(
            w[torch.randperm(len(w), generator=torch.Generator().manual_seed(0))[:1_000_000]],
            torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9]),
        )
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


#: under the table of :func:`markdown`: how to read the brackets and the p-value
TABLE_NOTE = (
    "Accuracies: estimate [95% Wilson interval, in percent] over the n images. McNemar p: exact test of the "
    "robust-correct flags against the undefended model."
)


def _ci(rate: float, ci: Sequence[float]) -> str:
    """A rate with its 95% Wilson interval: "97.00% [94.1, 98.5]" (the interval in percent)."""
    return f"{rate:.2%} [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]"


def markdown(outcomes: Sequence[Outcome], model_name: str = "model") -> str:
    """The seed's table layout, with our definitions (see the module docstring) and the extra columns; the
    accuracies carry their 95% Wilson intervals in brackets (in percent)."""
    head = (
        "| Model | prune ratio | Clean Accuracy | Remnant Accuracy | Prediction Change Rate "
        "| Strict Attack Success Rate (from correct to wrong) | Transfer Remnant Accuracy | McNemar p (robust) "
        "| Note |"
    )
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
        lines.append(
            f"| {name} | {r.changed_fraction:.4%} | {_ci(r.clean_accuracy, r.clean_ci)} "
            f"| {_ci(r.robust_accuracy, r.robust_ci)} | {r.prediction_change_rate:.2%} "
            f"| {r.strict_attack_success_rate:.2%} | {_ci(r.transfer_robust_accuracy, r.transfer_ci)} "
            f"| {p} | {'; '.join(note)} |"
        )
    return "\n".join(lines) + "\n"
