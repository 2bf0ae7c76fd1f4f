"""Transfer attacks (Szegedy et al. 2014, sec. 4.3): adversarial examples crafted on surrogate models, scored on
victims that the attack never queried.

Every model sees the same images ``x`` (N, C, H, W) in [0, 1] with labels ``y``; a model whose ``.info`` asks
for another input size gets them resized inside a :class:`Resized` wrapper, so that all attacks, balls and
noise live in the one space of ``x`` (bilinear resizing is a convex combination of pixels, hence
``||R(x') - R(x)||_inf <= ||x' - x||_inf``: the victim's perturbation stays inside the L-inf ball).

For a source (surrogate) s with adversarials x_adv^s = attack(f_s, x, y) (untargeted, true labels, white box on
f_s only) and a target (victim) t:

    C_t          = { i : f_t(x_i) = y_i }                          samples t classifies correctly (clean)
    fooled(s, t) = |{ i in C_t : f_t(x_adv^s_i) != y_i }|
    success(s, t) = fooled(s, t) / |C_t|                             the transfer rate, a fraction in [0, 1]

    white_box(s) = |{ i in C_s : f_s(x_adv^s_i) != y_i }| / |C_s|    the attack on the model it was crafted on
    noise(t)     = |{ i in C_t : f_t(x_i + delta_i) != y_i }| / |C_t| the chance baseline

and, a graded measure for small sample sets, the mean drop of the target's true-class probability

    drop(s, t) = (1 / |C_t|) sum_{i in C_t} [ p_t(y_i | x_i) - p_t(y_i | x_adv^s_i) ]     (softmax, in [-1, 1])

where delta is :class:`advlab.attacks.RandomNoise` at the attack's eps and norm (``noise_tries`` random points on
the eps-sphere per sample, keeping the first that fools t: a queried, hence generous, baseline). A transfer rate
means something only well above ``noise(t)``; Szegedy et al. found it below the white-box rate but far above chance,
also for models trained on disjoint data. Every rate comes with its counts and a 95% Wilson interval.

``Ensemble`` (Liu et al. 2017, "Delving into transferable adversarial examples") attacks several surrogates at
once: it averages their logits, z(x) = sum_i w_i z_i(x) (the logit fusion Dong et al. 2018 found to transfer
best; Liu et al. fused softmax outputs), so the attack must fool all of them together.

Every count is a sum over samples, so the matrix is built batch by batch (:func:`transfer_matrix_batches`): of a
batch only its per-sample outcomes are kept (C_t membership, fooled flags, true-class probabilities), never its
images or adversarial examples.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import Attack
from advlab.attacks.noise import RandomNoise
from advlab.data.images import resize_batch
from advlab.device import device_of
from advlab.errors import AdvlabError
from advlab.evaluation import metrics
from advlab.experiments.study import wilson
from advlab.threat import eps_text

#: random points per sample in the noise baseline (the attack's PGD-10 makes 10 gradient steps)
NOISE_TRIES = 10

__all__ = [
    "NOISE_TRIES",
    "Ensemble",
    "Resized",
    "TransferMatrix",
    "eps_text",
    "transfer_matrix",
    "transfer_matrix_batches",
]

#: models with their names, in order: ``[("digits-cnn", model), ...]``
NamedModels = Sequence[tuple[str, nn.Module]]


class Resized(nn.Module):
    """``model`` behind a differentiable resize: f(x) = model(R(x)), R bilinear to ``size`` x ``size``.

    Lets a model that takes another input size be attacked and evaluated in the space of the given images
    (``advlab.data.images.resize_batch``: antialiased when shrinking, clamped to [0, 1]).
    """

    def __init__(self, model: nn.Module, size: int) -> None:
        super().__init__()
        self.model, self.size = model, int(size)
        if hasattr(model, "info"):
            self.info = model.info

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(resize_batch(x, self.size))


class Ensemble(nn.Module):
    """The logit average of ``models``: z(x) = sum_i w_i z_i(x), w_i = ``weights`` (default 1/n each, must sum to 1).

    Every member must take the same input and return the same number of classes; wrap members of another
    input size in :class:`Resized` first. Attacking the ensemble attacks all members at once (Liu et al. 2017).
    """

    def __init__(self, models: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("an ensemble needs at least one model")
        w = [1.0 / len(models)] * len(models) if weights is None else [float(v) for v in weights]
        if len(w) != len(models) or any(v < 0 for v in w) or not math.isclose(sum(w), 1.0, rel_tol=1e-6):
            raise ValueError(f"ensemble weights must be {len(models)} non-negative numbers summing to 1, got {list(w)}")
        self.members = nn.ModuleList(models)
        self.weights = w

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = None
        for w, m in zip(self.weights, self.members, strict=True):
            z = m(x)
            if out is not None and z.shape != out.shape:
                raise ValueError(
                    f"ensemble members disagree on the output shape: {tuple(z.shape)} vs {tuple(out.shape)}"
                )
            out = w * z if out is None else out + w * z
        assert out is not None
        return out


def _rate(k: int, n: int) -> float | None:
    return k / n if n else None


@dataclass
class TransferMatrix:
    """Transfer rates, rows = sources (surrogates; an ensemble last), columns = targets (victims).

    Counts are numbers of samples; rates are fractions in [0, 1] (None where a denominator is 0). See the
    module docstring for the definitions: ``fooled[s][t]`` over ``clean_correct[t]`` is the transfer rate,
    ``white_box_fooled[s]`` over ``source_clean_correct[s]`` the white-box rate of row s on its own model,
    ``noise_fooled[t]`` over ``clean_correct[t]`` the chance baseline (None when the attack has no eps).
    ``prob_drop[s][t]``, ``white_box_prob_drop[s]``, ``noise_prob_drop[t]``: the mean drop of the true-class
    softmax probability over the same samples (None where there are none).
    """

    sources: list[str]
    targets: list[str]
    n: int
    attack: str
    eps: float | None
    norm: str
    clean_correct: list[int]
    fooled: list[list[int]]
    source_clean_correct: list[int]
    white_box_fooled: list[int]
    noise_fooled: list[int] | None
    prob_drop: list[list[float | None]] = field(default_factory=list)
    white_box_prob_drop: list[float | None] = field(default_factory=list)
    noise_prob_drop: list[float | None] | None = None
    noise_tries: int = NOISE_TRIES
    members: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0

    # ------------------------------------------------------------------ rates
    @property
    def success(self) -> list[list[float | None]]:
        """success[s][t] = fooled[s][t] / clean_correct[t] (the transfer matrix)."""
        return [[_rate(f, k) for f, k in zip(row, self.clean_correct, strict=True)] for row in self.fooled]

    @property
    def white_box(self) -> list[float | None]:
        """Per source: its attack's success on the model it was crafted on (over the samples that model gets right)."""
        return [_rate(f, k) for f, k in zip(self.white_box_fooled, self.source_clean_correct, strict=True)]

    @property
    def noise(self) -> list[float | None] | None:
        """Per target: the success of random noise at the same eps (the chance baseline), or None."""
        if self.noise_fooled is None:
            return None
        return [_rate(f, k) for f, k in zip(self.noise_fooled, self.clean_correct, strict=True)]

    @property
    def clean_accuracy(self) -> list[float | None]:
        """Per target: clean_correct[t] / n."""
        return [_rate(k, self.n) for k in self.clean_correct]

    def rate(self, source: str, target: str) -> float | None:
        """The transfer rate from ``source`` to ``target`` (by name)."""
        return self.success[self.sources.index(source)][self.targets.index(target)]

    def kind(self, source: str, target: str) -> str:
        """ "white-box" (the target is the source), "member" (a member of the source ensemble) or "transfer"."""
        if source == target:
            return "white-box"
        return "member" if target in self.members.get(source, []) else "transfer"

    # ------------------------------------------------------------------ rendering data
    def rows(self) -> list[dict[str, Any]]:
        """One row per (source, target) pair, every number behind the cell (for CSV)."""
        out = []
        wb, noise = self.white_box, self.noise
        for i, s in enumerate(self.sources):
            for j, t in enumerate(self.targets):
                f, k = self.fooled[i][j], self.clean_correct[j]
                lo, hi = wilson(f, k)
                out.append(
                    {
                        "source": s,
                        "target": t,
                        "kind": self.kind(s, t),
                        "n": self.n,
                        "target_clean_correct": k,
                        "fooled": f,
                        "success_rate": _rate(f, k),
                        "ci_low": lo,
                        "ci_high": hi,
                        "source_white_box": wb[i],
                        "noise_baseline": None if noise is None else noise[j],
                        "true_prob_drop": self.prob_drop[i][j] if self.prob_drop else None,
                        "noise_true_prob_drop": None if self.noise_prob_drop is None else self.noise_prob_drop[j],
                        "eps": self.eps,
                        "norm": self.norm,
                    }
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        """Everything, JSON-ready: names, counts, the rate matrix, white-box and noise rates, and the definitions."""
        return {
            "definition": "success[s][t] = |{i: f_t(x_i) = y_i and f_t(x_adv_s_i) != y_i}| / |{i: f_t(x_i) = y_i}|; "
            "x_adv_s crafted untargeted on source s only",
            "sources": list(self.sources),
            "targets": list(self.targets),
            "n": self.n,
            "attack": self.attack,
            "eps": self.eps,
            "norm": self.norm,
            "success": self.success,
            "fooled": self.fooled,
            "clean_correct": self.clean_correct,
            "clean_accuracy": self.clean_accuracy,
            "white_box": dict(zip(self.sources, self.white_box, strict=True)),
            "white_box_fooled": self.white_box_fooled,
            "source_clean_correct": self.source_clean_correct,
            "noise_baseline": None if self.noise is None else dict(zip(self.targets, self.noise, strict=True)),
            "noise_fooled": self.noise_fooled,
            "noise_tries": self.noise_tries,
            "members": self.members,
            "true_prob_drop": self.prob_drop,
            # not strict: a matrix built without the probability drops has none (an empty list)
            "white_box_true_prob_drop": dict(zip(self.sources, self.white_box_prob_drop, strict=False)),
            "noise_true_prob_drop": None
            if self.noise_prob_drop is None
            else dict(zip(self.targets, self.noise_prob_drop, strict=True)),
            "seconds": self.seconds,
        }

    def markdown(self) -> str:
        """The matrix as a Markdown table: cells "rate (fooled/correct)", a white-box column, a chance row."""

        def cell(f: int | None, k: int) -> str:
            return "n/a" if f is None or k == 0 else f"{f / k:.1%} ({f}/{k})"

        head = ["source \\ target", *self.targets, "white box (on the source)"]
        lines = ["| " + " | ".join(head) + " |", "| " + " | ".join([":--"] + [":-:"] * (len(head) - 1)) + " |"]
        for i, s in enumerate(self.sources):
            cells = [cell(f, k) for f, k in zip(self.fooled[i], self.clean_correct, strict=True)]
            lines.append(
                f"| {s} | " + " | ".join(cells) + f" | {cell(self.white_box_fooled[i], self.source_clean_correct[i])} |"
            )
        if self.noise_fooled is not None:
            cells = [cell(f, k) for f, k in zip(self.noise_fooled, self.clean_correct, strict=True)]
            lines.append(f"| chance: random noise ({self.noise_tries} tries) | " + " | ".join(cells) + " |  |")
        ball = f"{self.norm} eps = {eps_text(self.eps)}" if self.eps is not None else "no eps-ball"
        note = (
            "\nCells: the fraction of the samples the target classifies correctly that it misclassifies on the "
            f"source's adversarial examples ({self.attack}, {ball}, untargeted; n = {self.n}).\n"
        )
        return "\n".join(lines) + "\n" + note


# ---------------------------------------------------------------------- computing it
def _fit(model: nn.Module, x: torch.Tensor, name: str) -> nn.Module:
    """``model`` as it takes ``x``: checked for channels, wrapped in :class:`Resized` for another input size."""
    info = getattr(model, "info", None)
    if info is None:
        return model
    if int(info.channels) != x.shape[1]:
        raise AdvlabError(
            f"{name} takes {info.channels}-channel images, the data has {x.shape[1]}: transfer needs one image space"
        )
    size = int(info.input_size)
    return model if tuple(x.shape[-2:]) == (size, size) else Resized(model, size)


def _logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``model``'s logits on the batch ``x`` (CPU, float32), without gradients."""
    with torch.no_grad():
        return model(x.to(device_of(model))).float().cpu()


def _run(model: nn.Module, attack: Attack, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``attack`` on ``model`` on the batch ``x``: (x_adv, the model's logits on x_adv), both on the CPU."""
    dev = device_of(model)
    r = attack(model, x.to(dev), y.to(dev))
    return r.x_adv.cpu(), r.logits.float().cpu()


def _attack_ball(attack: Attack) -> tuple[float | None, str]:
    eps = getattr(attack, "eps", None)
    if eps is not None and not isinstance(eps, (int, float)):
        raise AdvlabError(f"a transfer matrix needs one eps, got the list {list(eps)}")
    return (None if eps is None else float(eps)), str(getattr(attack, "norm", attack.threat_norm))


def _unique(names: Sequence[str], what: str) -> None:
    dup = [n for n in names if list(names).count(n) > 1]
    if dup:
        raise AdvlabError(f"{what} names must be unique; {dup[0]!r} appears twice")


def _checked(sources: NamedModels, targets: NamedModels, attack: Attack) -> tuple[float | None, str]:
    """Raise AdvlabError for models and an attack a matrix cannot be built from; the attack's (eps, norm)."""
    if not sources or not targets:
        raise AdvlabError("a transfer matrix needs at least one source and one target")
    _unique([n for n, _ in sources], "source")
    _unique([n for n, _ in targets], "target")
    eps, norm = _attack_ball(attack)
    try:
        attack.validate()
    except ValueError as e:
        raise AdvlabError(f"{attack.name}: {e}") from None
    return eps, norm


def _checked_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    """Raise AdvlabError for a batch a matrix cannot be counted on."""
    if x.ndim != 4 or len(x) != len(y) or len(y) == 0:
        raise AdvlabError("the data must be a non-empty (N, C, H, W) batch with one label per image")
    if (y < 0).any():
        raise AdvlabError("transfer needs a label for every image (found -1)")


def _fitted(
    sources: Sequence[tuple[str, nn.Module]],
    targets: Sequence[tuple[str, nn.Module]],
    x: torch.Tensor,
    ensemble: bool,
) -> tuple[list[tuple[str, nn.Module]], list[tuple[str, nn.Module]], dict[str, list[str]]]:
    """Sources and targets as they take ``x`` (:func:`_fit`); with ``ensemble`` a last source "ensemble(a+b+...)",
    the logit average of all sources; and the members of each ensemble source, by name."""
    src = [(n, _fit(m, x, n)) for n, m in sources]
    tgt = [(n, _fit(m, x, n)) for n, m in targets]
    members: dict[str, list[str]] = {}
    if ensemble:
        name = "ensemble(" + "+".join(n for n, _ in sources) + ")"
        src.append((name, Ensemble([m for _, m in src])))
        members[name] = [n for n, _ in sources]
    return src, tgt, members


#: a column of adversarial outcomes: ("cell", row, column), ("white-box", row) or ("noise", column)
Key = tuple[Any, ...]


@dataclass
class _Columns:
    """The per-sample columns a matrix is counted from, one tensor per batch (nothing else is kept of a batch).

    Per model (by name): ``correct`` (f(x_i) = y_i) and ``p_clean`` = p(y_i | x_i); per adversarial outcome
    (a cell, a row's white-box attack, a target's noise): ``fooled`` (correct and f(x_adv_i) != y_i) and
    ``p_adv`` = p(y_i | x_adv_i), the model's true-class softmax probability."""

    correct: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    p_clean: dict[str, list[torch.Tensor]] = field(default_factory=dict)
    fooled: dict[Key, list[torch.Tensor]] = field(default_factory=dict)
    p_adv: dict[Key, list[torch.Tensor]] = field(default_factory=dict)

    def clean(self, name: str, y: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Record model ``name``'s clean logits ``z`` on a batch; its clean predictions."""
        pred = z.argmax(1)
        self.correct.setdefault(name, []).append(metrics.clean_correct(y, pred))
        self.p_clean.setdefault(name, []).append(metrics.confidence(z, y))
        return pred

    def adversarial(self, key: Key, y: torch.Tensor, clean_pred: torch.Tensor, z_adv: torch.Tensor) -> None:
        """Record an outcome's logits ``z_adv`` on a batch, against the model's clean predictions."""
        self.fooled.setdefault(key, []).append(metrics.fooled(y, clean_pred, z_adv.argmax(1)))
        self.p_adv.setdefault(key, []).append(metrics.confidence(z_adv, y))

    def n_correct(self, name: str) -> int:
        return int(torch.cat(self.correct[name]).sum())

    def counts(self, key: Key, name: str) -> tuple[int, float | None]:
        """(fooled among model ``name``'s clean-correct samples, their mean true-class probability drop)."""
        correct = torch.cat(self.correct[name])
        fooled = int(torch.cat(self.fooled[key]).sum())
        if not bool(correct.any()):
            return fooled, None
        return fooled, float((torch.cat(self.p_clean[name]) - torch.cat(self.p_adv[key]))[correct].mean())


def _batch_columns(
    cols: _Columns,
    src: list[tuple[str, nn.Module]],
    tgt: list[tuple[str, nn.Module]],
    n_sources: int,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    noise: Attack | None,
) -> None:
    """One batch's columns: every model's clean logits (checked for one class count and the labels' range), the
    noise on every target, and ``attack`` crafted on every source and scored on it and on every target."""
    z_clean: dict[str, torch.Tensor] = {}
    for n, m in [*src[:n_sources], *tgt]:
        if n not in z_clean:
            z_clean[n] = _logits(m, x)
    first, k0 = next((n, z.shape[1]) for n, z in z_clean.items())
    for n, z in z_clean.items():
        if z.shape[1] != k0:
            raise AdvlabError(
                f"{n} has {z.shape[1]} classes but {first} has {k0}: transfer needs models with the same classes"
            )
    if int(y.max()) >= k0:
        raise AdvlabError(f"label {int(y.max())} is out of range for models with {k0} classes")
    for n, m in src[n_sources:]:
        z_clean[n] = _logits(m, x)
    preds = {n: cols.clean(n, y, z) for n, z in z_clean.items()}
    if noise is not None:
        for j, (n, m) in enumerate(tgt):
            cols.adversarial(("noise", j), y, preds[n], _run(m, noise, x, y)[1])
    for i, (n, m) in enumerate(src):
        x_adv, z_adv = _run(m, attack, x, y)
        cols.adversarial(("white-box", i), y, preds[n], z_adv)
        for j, (tn, tm) in enumerate(tgt):
            cols.adversarial(("cell", i, j), y, preds[tn], z_adv if tn == n else _logits(tm, x_adv))


def transfer_matrix(
    sources: NamedModels,
    targets: NamedModels,
    x: torch.Tensor,
    y: torch.Tensor,
    attack: Attack,
    *,
    ensemble: bool = False,
    batch_size: int = 128,
    noise_tries: int = NOISE_TRIES,
    progress: bool = False,
) -> TransferMatrix:
    """Craft ``attack`` (untargeted, labels ``y``) on every source and score the adversarials on every target.

    ``sources``/``targets``: (name, model) pairs; a name in both means the same model (that cell is the
    white-box rate). ``x``: (N, C, H, W) in [0, 1], the one image space of the attack (models of another input
    size get it resized, see :class:`Resized`); ``y``: (N,) class indices; attacked ``batch_size`` at a time
    (:func:`transfer_matrix_batches`). ``ensemble=True`` adds a row "ensemble(a+b+...)": the attack on the logit
    average of all sources (:class:`Ensemble`). The chance baseline is :class:`~advlab.attacks.RandomNoise` at the
    attack's eps and norm with ``noise_tries`` points and the attack's seed; attacks without an eps (C&W,
    DeepFool, L-BFGS) get none. Definitions and units: see the module docstring. Raises :class:`AdvlabError` for
    models with other class counts or channels.
    """
    if x.ndim != 4 or len(x) != len(y) or len(y) == 0:
        raise AdvlabError("the data must be a non-empty (N, C, H, W) batch with one label per image")
    if (y < 0).any():
        raise AdvlabError("transfer needs a label for every image (found -1)")
    x, y = x.detach().cpu(), y.detach().cpu().long()
    batches = [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    return transfer_matrix_batches(
        sources, targets, batches, attack, ensemble=ensemble, noise_tries=noise_tries, progress=progress
    )


def transfer_matrix_batches(
    sources: NamedModels,
    targets: NamedModels,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    attack: Attack,
    *,
    ensemble: bool = False,
    noise_tries: int = NOISE_TRIES,
    progress: bool = False,
) -> TransferMatrix:
    """:func:`transfer_matrix` over ``batches`` of ``(x, y)``, each read, attacked and scored in turn: only its
    per-sample outcomes are kept (whether each model classifies each image correctly and whether each adversarial
    example fools it, and the true-class probabilities), so memory does not grow with the number of images beyond
    those columns. Each batch is attacked as it comes (its size is the attack's batch size); the images of every
    batch must share one size and channel count."""
    t0 = time.perf_counter()
    eps, norm = _checked(sources, targets, attack)
    noise = None
    if eps is not None:
        noise = RandomNoise(eps=eps, norm=norm, tries=noise_tries, seed=attack.seed, quantize=attack.quantize)
    it: Any = batches
    if progress:
        from tqdm import tqdm

        it = tqdm(batches, desc="transfer", unit="batch", leave=False, dynamic_ncols=True)
    cols, count = _Columns(), 0
    fitted: tuple[list[tuple[str, nn.Module]], list[tuple[str, nn.Module]], dict[str, list[str]]] | None = None
    for xb, yb in it:
        xb, yb = xb.detach().cpu(), yb.detach().cpu().long()
        _checked_batch(xb, yb)
        if fitted is None:
            fitted = _fitted(sources, targets, xb, ensemble)
        _batch_columns(cols, fitted[0], fitted[1], len(sources), xb, yb, attack, noise)
        count += len(yb)
    if fitted is None:
        raise AdvlabError("the data must be a non-empty (N, C, H, W) batch with one label per image")
    src, tgt, members = fitted
    cells = [[cols.counts(("cell", i, j), tn) for j, (tn, _) in enumerate(tgt)] for i in range(len(src))]
    white = [cols.counts(("white-box", i), sn) for i, (sn, _) in enumerate(src)]
    noise_pairs = None if noise is None else [cols.counts(("noise", j), tn) for j, (tn, _) in enumerate(tgt)]
    return TransferMatrix(
        sources=[sn for sn, _ in src],
        targets=[tn for tn, _ in tgt],
        n=count,
        attack=repr(attack),
        eps=eps,
        norm=norm,
        clean_correct=[cols.n_correct(tn) for tn, _ in tgt],
        fooled=[[f for f, _ in row] for row in cells],
        source_clean_correct=[cols.n_correct(sn) for sn, _ in src],
        white_box_fooled=[f for f, _ in white],
        noise_fooled=None if noise_pairs is None else [f for f, _ in noise_pairs],
        prob_drop=[[d for _, d in row] for row in cells],
        white_box_prob_drop=[d for _, d in white],
        noise_prob_drop=None if noise_pairs is None else [d for _, d in noise_pairs],
        noise_tries=noise_tries,
        members=members,
        seconds=round(time.perf_counter() - t0, 3),
    )
