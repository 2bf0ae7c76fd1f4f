"""Robustness evaluation: the AutoAttack-style cascade, its metrics and its sanity checks.

Per batch: one clean pass; then each attack runs only on the samples still standing, and a sample is
broken by the first attack that changes its clean prediction with a perturbation inside the threat model
(||x_adv - x||_norm <= eps, x_adv in [0, 1]). A broken sample keeps that attack's x_adv: the worst case
per sample over the ensemble. By default only clean-correct samples are attacked (as in AutoAttack);
``attack_misclassified=True`` also attacks the others, away from their (wrong) clean prediction.

Metrics, over N samples with C the clean-correct ones and B the broken ones:

    clean_accuracy             = |C| / N
    robust_accuracy            = |C \\ B| / N            (seed 003's "remnant accuracy")
    attack_success_rate        = |B| / |attacked|        (the attacks' goal: the clean prediction changed)
    strict_attack_success_rate = |C and adv wrong| / |C| (correct -> wrong)
    prediction_change_rate     = |adv pred != clean pred| / N

With the default (only C attacked) the two success rates coincide. Seed 003's table appears to label
its last two columns the other way round: its "prediction change rate" equals (clean - remnant) / clean,
i.e. the strict rate here. Norms are of the successful perturbations, in [0, 1] pixel units.

Sanity checks (``sanity=True``) in the spirit of AutoAttack's: outputs that are probabilities instead
of logits, a model that answers differently twice (randomness, training mode), all-zero input gradients
of the cross-entropy on the samples left standing (saturated softmax), and random noise or a black-box attack breaking samples that the
white-box attacks left standing (masked gradients). Each finding becomes a line in ``report.flags``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.apgd import APGD, APGDT
from advlab.attacks.base import Attack, frozen_parameters
from advlab.attacks.noise import RandomNoise
from advlab.errors import AdvlabError
from advlab.threat import NORMS, distance

#: samples the randomness check (first batch) and the zero-gradient check (survivors of each batch) look at:
#: a saturated or random model shows on nearly every sample, so a few suffice
CHECK_SAMPLES = 16
#: random points per standing sample in the noise check
NOISE_TRIES = 5
PRESETS = ("reliable", "fast")


def preset_attacks(name: str, eps: float, norm: str = "linf", seed: int = 0) -> list[Attack]:
    """The attack ensembles behind ``preset=``.

    ``reliable``: APGD-CE (100 steps) then targeted APGD-DLR against the 9 most likely wrong classes (100
    steps each), AutoAttack's two gradient attacks. DLR is invariant to scaling the logits, so a model whose
    softmax saturates (and whose cross-entropy gradients vanish) does not fool the ensemble.
    ``fast``: APGD-CE and APGD-DLR with 20 steps each: a quick estimate, not a bound to publish.
    """
    if name == "reliable":
        return [APGD(eps=eps, norm=norm, steps=100, loss="ce", seed=seed),
                APGDT(eps=eps, norm=norm, steps=100, n_targets=9, seed=seed)]  # fmt: skip
    if name == "fast":
        return [APGD(eps=eps, norm=norm, steps=20, loss="ce", seed=seed), APGD(eps=eps, norm=norm, steps=20, loss="dlr", seed=seed)]
    raise AdvlabError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")


@dataclass
class BatchResult:
    """Per-sample outcome of the cascade on one batch (CPU tensors), plus per-attack totals and check counts.

    ``broken_by``: index of the attack that broke the sample (``len(attacks)`` = the noise check), -1 if none.
    ``attack_stats``: (A + 1, 5) rows of attacked, broken, forwards, backwards, seconds (last row: noise check).
    """

    y: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    clean_confidence: torch.Tensor
    adv_confidence: torch.Tensor
    attacked: torch.Tensor
    broken_by: torch.Tensor
    l0: torch.Tensor
    l2: torch.Tensor
    linf: torch.Tensor
    forwards: torch.Tensor
    backwards: torch.Tensor
    attack_stats: torch.Tensor
    checks: dict[str, float] = field(default_factory=dict)
    x_adv: torch.Tensor | None = None

    def tensors(self) -> dict[str, torch.Tensor]:
        """Everything but ``checks`` as named tensors (to save as run state)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("checks", "x_adv")}
        if self.x_adv is not None:
            out["x_adv"] = self.x_adv
        return {k: v.contiguous() for k, v in out.items()}

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor], checks: dict[str, float]) -> BatchResult:
        return cls(**t, checks=dict(checks))

    @property
    def broken(self) -> torch.Tensor:
        return self.broken_by >= 0


@dataclass
class EvalReport:
    """What ``evaluate`` measured. Rates are fractions in [0, 1]; norms in [0, 1] pixel units.

    ``samples`` holds the per-sample columns (see :class:`BatchResult`); ``x_adv`` the worst-case inputs
    when ``keep_adversarials=True`` (unbroken samples keep their clean image).
    """

    n: int
    eps: float | None
    norm: str | None
    attacks: list[str]
    clean_accuracy: float
    robust_accuracy: float
    attack_success_rate: float
    strict_attack_success_rate: float
    prediction_change_rate: float
    norms: dict[str, dict[str, float | None]]
    confidence: dict[str, float | None]
    gradient_evaluations: int
    forward_evaluations: int
    seconds: float
    per_attack: list[dict[str, Any]]
    flags: list[str]
    samples: BatchResult
    x_adv: torch.Tensor | None = None

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-able values (no per-sample tensors)."""
        skip = {"samples", "x_adv"}
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}

    def rows(self, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per sample (for a CSV): index, label, predictions, confidences, norms, broken by."""
        s = self.samples
        names = [*self.attacks, "noise-check"]
        out = []
        for i in range(self.n):
            b = int(s.broken_by[i])
            row = {
                "index": i, "label": int(s.y[i]), "clean_pred": int(s.clean_pred[i]), "adv_pred": int(s.adv_pred[i]),
                "clean_confidence": round(float(s.clean_confidence[i]), 6), "adv_confidence": round(float(s.adv_confidence[i]), 6),
                "attacked": bool(s.attacked[i]), "broken_by": names[b] if b >= 0 else "",
                "l0": int(s.l0[i]), "l2": round(float(s.l2[i]), 6), "linf": round(float(s.linf[i]), 6),
                "forwards": int(s.forwards[i]), "backwards": int(s.backwards[i]),
            }  # fmt: skip
            if class_names is not None:
                row["label_name"] = class_names[row["label"]] if row["label"] >= 0 else ""
                row["clean_name"], row["adv_name"] = class_names[row["clean_pred"]], class_names[row["adv_pred"]]
            out.append(row)
        return out

    def format(self) -> str:
        """A short human-readable summary (what ``advlab eval`` prints)."""
        threat = f"{self.norm} eps={self.eps:.6g}" if self.eps is not None else "unbounded"
        lines = [
            f"{self.n} samples, {threat}, attacks: {', '.join(self.attacks)}",
            f"  clean accuracy              {self.clean_accuracy:8.2%}",
            f"  robust accuracy             {self.robust_accuracy:8.2%}",
            f"  attack success rate         {self.attack_success_rate:8.2%}",
            f"  strict attack success rate  {self.strict_attack_success_rate:8.2%}  (correct -> wrong)",
            f"  prediction change rate      {self.prediction_change_rate:8.2%}",
        ]
        for k in ("linf", "l2"):
            m = self.norms[k]
            if m["median"] is not None:
                lines.append(f"  {k + ' of successes':<28}median {m['median']:.4g}, mean {m['mean']:.4g}")
        lines.append(f"  gradient evaluations        {self.gradient_evaluations} ({self.forward_evaluations} forwards), {self.seconds:.1f} s")
        for a in self.per_attack:
            lines.append(f"    {a['attack']:<14} attacked {a['attacked']:>6}  broke {a['broken']:>6}  "
                         f"robust after {a['robust_accuracy_after']:7.2%}  grads {a['gradient_evaluations']:>8}  {a['seconds']:.1f} s")  # fmt: skip
        lines += [f"  warning: {f}" for f in self.flags]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ the cascade
def _bound(atk: Attack, eps: float | None, norm: str | None) -> tuple[float, str] | None:
    """The ball a success must lie in: the evaluation's, else the attack's own largest eps, else none."""
    if eps is not None:
        return eps, norm or atk.threat_norm
    own = getattr(atk, "eps", None)
    if own is None:
        return None
    e = float(own) if isinstance(own, (int, float)) else max(float(v) for v in own)
    return e, atk.threat_norm


def _inside(delta: torch.Tensor, bound: tuple[float, str] | None) -> torch.Tensor:
    if bound is None:
        return torch.ones(len(delta), dtype=torch.bool, device=delta.device)
    eps, norm = bound
    return distance(delta, norm).to(delta.device) <= eps * (1 + 1e-5) + 1e-6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _output_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, logits: torch.Tensor, correct: torch.Tensor,
                   first: bool, fw: torch.Tensor, bw: torch.Tensor) -> dict[str, float]:  # fmt: skip
    """Probabilities-not-logits on every batch (free); randomness (a second forward on a few samples) on the first batch."""
    z = logits.float()
    checks: dict[str, float] = {"batches": 1.0}
    checks["probability_batches"] = float(bool((z >= 0).all() and ((z.sum(1) - 1).abs() < 1e-3).all()))
    if not first:
        return checks
    k = min(len(x), CHECK_SAMPLES)
    checks["training_mode"] = float(model.training)
    with torch.no_grad():
        again = model(x[:k]).float()
    fw[:k] += 1
    scale = 1.0 + float(z[:k].abs().max()) if k else 1.0
    checks["randomness"] = float((again - z[:k]).abs().max()) / scale if k else 0.0
    return checks


def _zero_gradient_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor, standing: torch.Tensor,
                         fw: torch.Tensor, bw: torch.Tensor) -> dict[str, float]:  # fmt: skip
    """All-zero cross-entropy input gradients at the clean point, on up to CHECK_SAMPLES samples the cascade left standing.

    Only survivors matter: a sample the attacks broke is broken whatever its gradient, while a survivor with
    a zero gradient may be standing only because gradient attacks saw nothing (the cost is nil on an
    undefended model, where nothing survives).
    """
    idx = standing.nonzero().flatten()[:CHECK_SAMPLES]
    if len(idx) == 0:
        return {}
    xs = x[idx].detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad():
        (g,) = torch.autograd.grad(F.cross_entropy(model(xs).float(), y[idx], reduction="sum"), xs)
    fw[idx.cpu()] += 1
    bw[idx.cpu()] += 1
    return {"zero_gradient": float((g.flatten(1).abs().amax(1) == 0).sum()), "gradient_checked": float(len(idx))}


def run_batch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, attacks: Sequence[Attack], *, eps: float | None = None,
              norm: str | None = None, attack_misclassified: bool = False, sanity: bool = True, first: bool = True,
              keep_adversarials: bool = False, attack_model: nn.Module | None = None) -> BatchResult:  # fmt: skip
    """The cascade on one batch (``x`` on the model's device, in [0, 1]); see the module docstring.

    ``attack_model``: the attacks run on it instead (e.g. :class:`advlab.zoo.Autocast` of ``model``), and each
    success is re-checked on ``model`` (one more forward per attacked sample); only confirmed ones count, and
    the samples where the attack claimed a success that ``model`` does not confirm are attacked again on
    ``model`` itself (the reduced-precision search stopped early on them).
    """
    n, dev = len(x), x.device
    fw = torch.ones(n, dtype=torch.long)
    bw = torch.zeros(n, dtype=torch.long)
    with torch.no_grad():
        clean = model(x)
    clean_pred = clean.argmax(1)
    correct = clean_pred == y
    checks = _output_checks(model, x, y, clean, correct, first, fw, bw) if sanity else {}
    x_adv, adv_logits = x.detach().clone(), clean.detach().clone()
    broken_by = torch.full((n,), -1, dtype=torch.long)
    attacked = (correct | attack_misclassified) & (y >= 0)
    standing = attacked.clone()
    stats = torch.zeros(len(attacks) + 1, 5, dtype=torch.float64)
    white_box_ran = False

    def attempt(i: int, atk: Attack, bound: tuple[float, str] | None) -> int:
        idx = standing.nonzero().flatten()
        if len(idx) == 0:
            return 0
        _sync(dev)
        t0 = time.perf_counter()
        res = atk(model if attack_model is None else attack_model, x[idx], clean_pred[idx])
        found, logits, success = res.x_adv, res.logits, res.success.to(dev)
        forwards, backwards = res.forwards.cpu().clone(), res.backwards.cpu().clone()
        if attack_model is not None:  # the verdict is the model's own, in full precision
            with torch.no_grad():
                logits = model(found.to(x.dtype))
            confirmed = logits.argmax(1) != clean_pred[idx]
            forwards += 1
            # the reduced-precision search stopped on a success the model does not show: search again in full precision
            retry = (success & ~confirmed).nonzero().flatten()
            if len(retry):
                again = atk(model, x[idx[retry]], clean_pred[idx[retry]])
                found, logits = found.clone(), logits.clone()
                found[retry], logits[retry] = again.x_adv.to(found.dtype), again.logits.to(logits.dtype)
                confirmed[retry] = again.success.to(dev)
                forwards[retry.cpu()] += again.forwards.cpu()
                backwards[retry.cpu()] += again.backwards.cpu()
            success = confirmed
        _sync(dev)
        ok = success & _inside(found - x[idx], bound)
        hit = idx[ok]
        x_adv[hit], adv_logits[hit] = found[ok].to(x_adv.dtype), logits[ok].to(adv_logits.dtype)
        hc = hit.cpu()
        broken_by[hc] = i
        standing[hit] = False
        fw[idx.cpu()] += forwards
        bw[idx.cpu()] += backwards
        stats[i] = torch.tensor([len(idx), len(hit), int(forwards.sum()), int(backwards.sum()), time.perf_counter() - t0])
        return len(hit)

    for i, atk in enumerate(attacks):
        broke = attempt(i, atk, _bound(atk, eps, norm))
        if atk.white_box:
            white_box_ran = True
        elif white_box_ran and broke:
            checks["black_box_broke"] = checks.get("black_box_broke", 0.0) + broke
    noise_bound = _bound(attacks[0], eps, norm) if attacks else None
    if sanity and white_box_ran and noise_bound is not None:
        e, nm = noise_bound
        seed = getattr(attacks[0], "seed", 0)
        checks["noise_tried"] = float(standing.sum())
        checks["noise_broke"] = float(attempt(len(attacks), RandomNoise(eps=e, norm=nm, tries=NOISE_TRIES, seed=seed), noise_bound))
    if sanity:
        checks.update(_zero_gradient_check(model, x, clean_pred, standing, fw, bw))

    probs_clean = clean.float().softmax(1)
    probs_adv = adv_logits.float().softmax(1)
    adv_pred = torch.where(broken_by.to(dev) >= 0, adv_logits.argmax(1), clean_pred)
    d = (x_adv - x).detach()
    return BatchResult(
        y=y.cpu(), clean_pred=clean_pred.cpu(), adv_pred=adv_pred.cpu(),
        clean_confidence=probs_clean.amax(1).cpu(), adv_confidence=probs_adv.gather(1, adv_pred[:, None]).squeeze(1).cpu(),
        attacked=attacked.cpu(), broken_by=broken_by, l0=distance(d, "l0").cpu().long(), l2=distance(d, "l2").cpu(),
        linf=distance(d, "linf").cpu(), forwards=fw, backwards=bw, attack_stats=stats, checks=checks,
        x_adv=x_adv.cpu() if keep_adversarials else None,
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ the report
def _stats(v: torch.Tensor) -> dict[str, float | None]:
    if v.numel() == 0:
        return {"mean": None, "median": None}
    v = v.double()
    return {"mean": float(v.mean()), "median": float(v.median())}


def _mean(v: torch.Tensor) -> float | None:
    return float(v.double().mean()) if v.numel() else None


def _flags(checks: dict[str, float]) -> list[str]:
    out = []
    if checks.get("probability_batches", 0) > 0:
        out.append("the model's outputs look like probabilities (non-negative, rows sum to 1), not logits: remove the "
                   "final softmax, or the cross-entropy and its gradients are wrong")  # fmt: skip
    if checks.get("training_mode", 0) > 0:
        out.append("the model is in training mode (dropout, batch statistics): call model.eval() before evaluating")
    if checks.get("randomness", 0) > 1e-5:
        out.append(f"the model is not deterministic: two passes on the same inputs differ by up to {checks['randomness']:.2g} "
                   "(relative); use expectation over transformation (average gradients over several passes) for a meaningful bound")  # fmt: skip
    if checks.get("zero_gradient", 0) > 0:
        out.append(f"{int(checks['zero_gradient'])} of {int(checks['gradient_checked'])} checked robust samples have an all-zero "
                   "cross-entropy input gradient (saturated softmax or masked gradients): CE-based attacks see nothing there; "
                   "use the reliable preset (DLR loss) or the margin loss")  # fmt: skip
    if checks.get("noise_broke", 0) > 0:
        out.append(f"random noise broke {int(checks['noise_broke'])} samples that the white-box attacks left standing: "
                   "gradients are likely masked or obfuscated, and the robust accuracy of gradient attacks alone would overestimate robustness")  # fmt: skip
    if checks.get("black_box_broke", 0) > 0:
        out.append(f"a black-box attack broke {int(checks['black_box_broke'])} samples that the white-box attacks left standing: "
                   "gradients are likely masked")  # fmt: skip
    return out


def summarize(parts: Sequence[BatchResult], attacks: Sequence[Attack], eps: float | None, norm: str | None, seconds: float) -> EvalReport:
    """Merge per-batch results into one :class:`EvalReport`."""
    if not parts:
        raise AdvlabError("nothing to evaluate: the data is empty")
    cat = {k: torch.cat([p.tensors()[k] for p in parts]) for k in parts[0].tensors() if k not in ("attack_stats",)}
    checks: dict[str, float] = {}
    for p in parts:
        for k, v in p.checks.items():
            checks[k] = max(checks.get(k, 0.0), v) if k == "randomness" else checks.get(k, 0.0) + v
    stats = sum((p.attack_stats for p in parts), torch.zeros_like(parts[0].attack_stats))
    samples = BatchResult(**{k: v for k, v in cat.items() if k != "x_adv"}, attack_stats=stats, checks=checks)
    n = len(samples.y)
    labelled = samples.y >= 0
    correct = (samples.clean_pred == samples.y) & labelled
    broken = samples.broken
    robust = correct & ~broken
    names = [a.name for a in attacks]
    per_attack = []
    remaining = int(correct.sum())
    for i, row in enumerate(stats.tolist()):
        if i == len(attacks) and row[0] == 0:
            continue
        hit_correct = int((correct & (samples.broken_by == i)).sum())
        remaining -= hit_correct
        per_attack.append({
            "attack": names[i] if i < len(attacks) else "noise-check", "config": repr(attacks[i]) if i < len(attacks) else f"RandomNoise(tries={NOISE_TRIES})",
            "attacked": int(row[0]), "broken": int(row[1]), "robust_accuracy_after": remaining / n,
            "forward_evaluations": int(row[2]), "gradient_evaluations": int(row[3]), "seconds": round(row[4], 4),
        })  # fmt: skip
    attacked = samples.attacked
    return EvalReport(
        n=n, eps=eps, norm=norm, attacks=names,
        clean_accuracy=float(correct.sum()) / n,
        robust_accuracy=float(robust.sum()) / n,
        attack_success_rate=float((broken & attacked).sum()) / max(1, int(attacked.sum())),
        strict_attack_success_rate=float((correct & (samples.adv_pred != samples.y)).sum()) / max(1, int(correct.sum())),
        prediction_change_rate=float((samples.adv_pred != samples.clean_pred).sum()) / n,
        norms={k: _stats(getattr(samples, k)[broken].float()) for k in ("linf", "l2", "l0")},
        confidence={"clean": _mean(samples.clean_confidence[correct]), "adversarial": _mean(samples.adv_confidence[broken]),
                    "robust": _mean(samples.adv_confidence[robust])},  # fmt: skip
        gradient_evaluations=int(samples.backwards.sum()), forward_evaluations=int(samples.forwards.sum()),
        seconds=round(seconds, 4), per_attack=per_attack, flags=_flags(checks), samples=samples,
        x_adv=cat.get("x_adv"),
    )  # fmt: skip


# ------------------------------------------------------------------------------------------------ evaluate
Data = str | tuple[torch.Tensor, torch.Tensor] | Iterable[tuple[torch.Tensor, torch.Tensor]]


def batches(model: nn.Module, data: Data, batch_size: int = 256, limit: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(x, y)`` batches from a data spec (read the way the model needs it), an ``(x, y)`` pair, or a DataLoader."""
    if isinstance(data, str):
        x, y = _load_spec(model, data, limit)
        data = (x, y)
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = data
        if limit is not None:
            x, y = x[:limit], y[:limit]
        if len(x) != len(y):
            raise AdvlabError(f"x has {len(x)} images but y has {len(y)} labels")
        for i in range(0, len(x), batch_size):
            yield x[i : i + batch_size], y[i : i + batch_size]
        return
    seen = 0
    for item in data:  # type: ignore[union-attr]
        xb, yb = item[0], item[1]
        if limit is not None:
            xb, yb = xb[: limit - seen], yb[: limit - seen]
        if len(xb) == 0:
            break
        seen += len(xb)
        yield xb, yb


def _load_spec(model: nn.Module, spec: str, limit: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    from advlab import data as data_mod
    from advlab import zoo

    info = getattr(model, "info", None)
    if isinstance(info, zoo.ModelInfo):
        x, y, _ = data_mod.load_for_model(spec, info.input_size, info.channels, limit=limit)
        zoo.check_input(info, x, what=f"data {spec!r}")
        zoo.check_labels(info, y, what=f"data {spec!r}")
        return x, y
    return data_mod.load(spec, limit=limit)


def _prepare_attacks(attacks: Sequence[Attack] | None, preset: str | None, eps: float | None, norm: str | None,
                     early_stop: bool, seed: int | None) -> list[Attack]:  # fmt: skip
    if attacks is not None and preset is not None:
        raise AdvlabError("give attacks= or preset=, not both")
    if norm is not None and norm not in NORMS:
        raise AdvlabError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    if eps is not None and not (eps > 0 and math.isfinite(eps)):
        raise AdvlabError(f"eps must be positive, got {eps}")
    if attacks is None:
        if eps is None:
            raise AdvlabError(f"preset {preset or 'reliable'!r} needs eps (and norm)")
        attacks = preset_attacks(preset or "reliable", eps, norm or "linf", seed or 0)
    attacks = list(attacks)
    if not attacks:
        raise AdvlabError("attacks is empty")
    out = []
    for a in attacks:
        if not isinstance(a, Attack):
            raise AdvlabError(f"not an advlab attack: {a!r}")
        names = {f.name for f in dataclasses.fields(a)}
        changes: dict[str, Any] = {}
        if early_stop and "early_stop" in names:
            changes["early_stop"] = True
        if seed is not None:
            changes["seed"] = seed
        a = dataclasses.replace(a, **changes) if changes else a
        try:
            a.validate()
        except ValueError as e:
            raise AdvlabError(f"{a.name}: {e}") from None
        out.append(a)
    return out


def evaluate(model: nn.Module, data: Data, attacks: Sequence[Attack] | None = None, *, preset: str | None = None,
             eps: float | None = None, norm: str | None = None, batch_size: int = 256, limit: int | None = None,
             early_stop: bool = True, attack_misclassified: bool = False, sanity: bool = True,
             keep_adversarials: bool = False, seed: int | None = None, device: torch.device | str | None = None,
             progress: bool = False, done: Sequence[BatchResult] | Mapping[int, BatchResult] = (),
             on_batch: Callable[[int, BatchResult], None] | None = None,
             units: Callable[[int], bool] | None = None, attack_model: nn.Module | None = None) -> EvalReport:  # fmt: skip
    """Robustness of ``model`` on ``data`` under ``attacks`` (or ``preset``, default "reliable"), as a cascade.

    ``data``: a data spec ("digits:test"), an ``(x, y)`` pair of [0, 1] images and labels, or an iterable of
    such batches (a DataLoader). ``eps``/``norm``: the threat model a success must lie in (required for a
    preset; otherwise each attack's own ball). ``early_stop=True`` stops each sample at its first success
    (the goal here is "any success": much cheaper, same robust accuracy). ``done``/``on_batch`` let a caller
    save each finished batch and resume: ``done`` maps batch indices to results evaluated earlier (a sequence
    stands for batches 0, 1, ...), which are not evaluated again. ``units(b)``: evaluate batch ``b`` only where
    it returns True (one shard of a distributed run); the report then covers the batches evaluated or given
    in ``done``. A batch's result depends only on its samples and the seed, never on which batches ran before.
    ``attack_model``: run the attacks on this model instead (e.g. ``zoo.Autocast(model)``: mixed precision),
    counting only the successes that ``model`` confirms (see :func:`run_batch`).
    """
    attacks = _prepare_attacks(attacks, preset, eps, norm, early_stop, seed)
    if eps is not None and norm is None:
        norm = attacks[0].threat_norm
    shown_eps, shown_norm = eps, norm
    if eps is None:  # report the attacks' own ball when they share one
        bounds = {_bound(a, None, None) for a in attacks}
        if len(bounds) == 1 and (b := bounds.pop()) is not None:
            shown_eps, shown_norm = b
    if batch_size < 1:
        raise AdvlabError(f"batch_size must be >= 1, got {batch_size}")
    dev = torch.device(device) if device is not None else next((p.device for p in model.parameters()), torch.device("cpu"))
    saved = dict(done) if isinstance(done, Mapping) else dict(enumerate(done))
    parts: dict[int, BatchResult] = {}
    t0 = time.perf_counter()
    it: Iterable[tuple[torch.Tensor, torch.Tensor]] = batches(model, data, batch_size, limit)
    if progress:
        from tqdm import tqdm

        total = math.ceil(len(data[1]) / batch_size) if isinstance(data, tuple) else None
        it = tqdm(it, desc="evaluate", unit="batch", total=total, leave=False, dynamic_ncols=True)
    for b, (xb, yb) in enumerate(it):
        if b in saved:
            parts[b] = saved[b]
            continue
        if units is not None and not units(b):
            continue
        xb, yb = _to_device(xb, dev), _to_device(yb, dev).long()
        if xb.numel() and (float(xb.min()) < 0 or float(xb.max()) > 1):
            raise AdvlabError("images must be in [0, 1]; advlab models carry their own normalization")
        part = run_batch(model, xb, yb, attacks, eps=eps, norm=norm, attack_misclassified=attack_misclassified,
                         sanity=sanity, first=b == 0, keep_adversarials=keep_adversarials, attack_model=attack_model)  # fmt: skip
        parts[b] = part
        if on_batch is not None:
            on_batch(b, part)
    if not parts and units is not None:
        raise AdvlabError("no batch to evaluate: units= selected none and done= holds none")
    return summarize([parts[b] for b in sorted(parts)], attacks, shown_eps, shown_norm, time.perf_counter() - t0)


def _to_device(t: torch.Tensor, dev: torch.device) -> torch.Tensor:
    """``t`` on ``dev``; a CPU batch bound for a GPU goes through pinned memory (asynchronous copy)."""
    if dev.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(dev, non_blocking=True)
    return t.to(dev)
