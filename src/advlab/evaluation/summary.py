"""The summary of an evaluation: :class:`EvalReport`, merged from the per-batch results by :func:`summarize`.

Every rate comes from :mod:`advlab.evaluation.metrics` over the per-sample columns (N samples, L the labelled
ones, C the clean-correct ones, B the broken ones):

    clean_accuracy             = |C| / |L|
    robust_accuracy            = |C \\ B| / |L|          (research note 003's "remnant accuracy")
    attack_success_rate        = |B| / |attacked|        (the attacks' goal: the clean prediction changed)
    strict_attack_success_rate = |C and adv wrong| / |C| (correct -> wrong)
    prediction_change_rate     = |adv pred != clean pred| / N

On a correct sample "broken" and "adversarial prediction wrong" are the same event, so robust_accuracy is
:func:`~advlab.evaluation.metrics.robust_accuracy`. For a randomized model (the plan found it) clean_accuracy and
robust_accuracy are the expected ones over fresh draws (:func:`~advlab.evaluation.metrics.expected_accuracy` of the
per-sample fractions), and ``single_draw`` keeps the cascade's one draw. With every sample labelled |L| = N. With the
default (only C attacked) the two success rates coincide. Research note 003's table appears to label its last two
columns the other way round: its "prediction change rate" equals (clean - remnant) / clean, i.e. the strict rate here.
Norms
are of the successful perturbations, in [0, 1] pixel units; confidences are softmax probabilities.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from advlab.errors import AdvlabError
from advlab.evaluation import checks as sanity_checks
from advlab.evaluation import diagnostics, gradients, indicators, metrics
from advlab.evaluation.cascade import SMOOTHED_STEPS, SMOOTHING, BatchResult
from advlab.evaluation.diagnostics import Findings
from advlab.threat import eps_text


class Named(Protocol):
    """An attack as a report names it: its ``label`` and, as ``repr``, its exact config (an
    :class:`~advlab.attacks.base.Attack`, or one recorded in a saved plan)."""

    @property
    def label(self) -> str: ...


#: the classes :meth:`EvalReport.format` lists one per line; with more, the worst this many, worst first
CLASS_LINES = 10


@dataclass(frozen=True)
class Headline:
    """The number a report shows first: ``name`` ("robust accuracy"), its ``value`` in [0, 1] and its 95% Wilson
    interval [``low``, ``high``] (:func:`~advlab.evaluation.metrics.wilson_interval`) of ``hits`` out of
    ``samples``, the samples the rate counts (the labelled ones). For a randomized model ``hits`` is the expected
    number over draws (a sum of per-sample fractions; the interval treats it as a count, which is conservative:
    a fraction varies less than a 0/1 outcome of the same mean)."""

    name: str
    value: float
    low: float
    high: float
    hits: float
    samples: int


@dataclass
class EvalReport:
    """What ``evaluate`` measured. Rates are fractions in [0, 1]; norms in [0, 1] pixel units.

    ``samples`` holds the per-sample columns (see :class:`BatchResult`); ``x_adv`` the worst-case inputs
    when ``keep_adversarials=True`` (unbroken samples keep their clean image; every broken one is misclassified there by
    the model called as a user calls it, inside the ball and the box). ``findings``: what the probe found before the
    first batch; a randomized model's ``clean_accuracy`` and ``robust_accuracy`` are expected over draws
    (``expected_accuracy`` adds the worst case), ``single_draw`` the cascade's one draw. ``warnings``: what lowers trust
    in the number, one line each; ``adaptations``: what the evaluation changed about the attacks, one line each;
    :attr:`trust` is ``"high"`` without a warning, else ``"low"`` (the words: :mod:`advlab.evaluation.diagnostics`).
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
    warnings: list[str]
    samples: BatchResult
    x_adv: torch.Tensor | None = None
    adaptations: list[str] = dataclasses.field(default_factory=list)
    expected_accuracy: dict[str, float] | None = None
    findings: Findings = dataclasses.field(default_factory=Findings)
    single_draw: dict[str, float] | None = None

    @property
    def trust(self) -> str:
        """``"high"`` when no check failed (no warning), else ``"low"`` (reasons: ``warnings``)."""
        return diagnostics.trust(self.warnings)

    @property
    def headline(self) -> Headline:
        """Robust accuracy over the labelled samples with its 95% Wilson interval: the number read first. For a
        randomized model it is the expected robust accuracy over fresh draws (``single_draw`` holds one draw's).
        What the headline is, is decided here and only here."""
        s = self.samples
        counted = int(metrics.labelled(s.y).sum())
        if self.findings.randomized:
            hits: float = float(s.expected_robust.double()[metrics.labelled(s.y)].sum())
            draws = int(self.expected_accuracy["draws"]) if self.expected_accuracy else 0
            name = f"robust accuracy (expected over {draws} draws)"
        else:
            hits, name = int(metrics.robust(s.y, s.clean_pred, s.adv_pred).sum()), "robust accuracy"
        low, high = metrics.wilson_interval(hits, counted)  # type: ignore[arg-type]
        return Headline(name, self.robust_accuracy, low, high, hits, counted)

    @property
    def indicators(self) -> list[dict[str, Any]]:
        """The indicators of attack failure that fired (:mod:`advlab.evaluation.indicators`): name, on how many
        samples, and the remedy applied."""
        return indicators.summary(self.samples.indicators)

    @property
    def active_test(self) -> dict[str, int] | None:
        """The active test (:mod:`advlab.evaluation.active`): ``found`` of ``tested`` planted adversarial examples
        (``skipped``: samples whose task could not be built); None where it did not run."""
        c = self.samples.checks
        if "active_tested" not in c:
            return None
        return {k: int(c.get(f"active_{k}", 0)) for k in ("found", "tested", "skipped")}

    @property
    def trust_reason(self) -> str:
        """Why :attr:`trust` is what it is, in a few words: the first warning up to its first ": " (the whole of
        it, and every other warning, is in :attr:`warnings`); "every check passed" when there is none."""
        return self.warnings[0].split(": ", 1)[0] if self.warnings else "every check passed"

    def per_class(self, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One record per class among the labelled samples, in class order: ``class`` (its index), ``name`` (with
        ``class_names``), ``samples`` (labelled with it), ``clean_accuracy`` and ``robust_accuracy`` over them
        (:func:`~advlab.evaluation.metrics.rate` of the clean-correct and the robust samples, over that class)."""
        s = self.samples
        correct, robust = metrics.clean_correct(s.y, s.clean_pred), metrics.robust(s.y, s.clean_pred, s.adv_pred)
        out = []
        for c in sorted(set(s.y[metrics.labelled(s.y)].tolist())):
            of_class = s.y == c
            if self.findings.randomized:  # expected over draws, as the headline
                clean_acc = float(s.expected_clean.double()[of_class].mean())
                robust_acc = float(s.expected_robust.double()[of_class].mean())
            else:
                clean_acc, robust_acc = metrics.rate(correct, of_class), metrics.rate(robust, of_class)
            out.append(
                {
                    "class": c,
                    **({"name": class_names[c]} if class_names is not None and c < len(class_names) else {}),
                    "samples": int(of_class.sum()),
                    "clean_accuracy": clean_acc,
                    "robust_accuracy": robust_acc,
                }
            )
        return out

    def classes_shown(self, class_names: Sequence[str] | None = None, most: int = CLASS_LINES) -> list[dict[str, Any]]:
        """:meth:`per_class` as a report shows it: every class in class order when there are at most ``most``;
        otherwise the ``most`` worst, worst first (lowest robust accuracy, then lowest clean accuracy)."""
        rows = self.per_class(class_names)
        if len(rows) <= most:
            return rows
        return sorted(rows, key=lambda r: (r["robust_accuracy"], r["clean_accuracy"], r["class"]))[:most]

    @property
    def forwards_per_image(self) -> float:
        """Model forward passes per image, the clean pass and every check included (a batch of N counts N)."""
        return int(self.samples.forwards.sum()) / max(1, self.n)

    @property
    def backwards_per_image(self) -> float:
        """Backward passes (input gradients) per image."""
        return int(self.samples.backwards.sum()) / max(1, self.n)

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-able values (no per-sample tensors), with ``trust`` and the passes per image."""
        skip = {"samples", "x_adv", "findings"}
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip}
        return {
            **out,
            "trust": self.trust,
            "forwards_per_image": round(self.forwards_per_image, 3),
            "backwards_per_image": round(self.backwards_per_image, 3),
            "headline": dataclasses.asdict(self.headline),
            "indicators": self.indicators,
            "active_test": self.active_test,
            "trust_reason": self.trust_reason,
            "per_class": self.per_class(),
            "diagnostics": self.diagnostics,
        }

    @property
    def diagnostics(self) -> dict[str, Any]:
        """The probe's findings, the checks with their measured values (merged over batches, e.g. ``noise_broke``,
        ``fd_unreliable``, ``steps_weak``, ``gradient_free_broke``), the failed gradient checks, the warnings and the
        adaptations."""
        checks = {k: round(v, 6) for k, v in sorted(self.samples.checks.items())}
        return {
            "findings": self.findings.to_dict(),
            "indicators": self.indicators,
            "checks": checks,
            "failed_gradient_checks": sanity_checks.failed_gradient_checks(self.samples.checks),
            "warnings": self.warnings,
            "adaptations": self.adaptations,
        }

    def robustbench(self, name: str, dataset: str) -> dict[str, Any]:
        """An entry with RobustBench's ``model_info`` fields that apply: ``name``, ``dataset``, ``eps`` as a string
        ("8/255"), ``clean_acc`` and the robust accuracy as percent strings with two decimals,
        ``number_forward_passes`` (per prediction: 1, advlab models are one forward), plus what RobustBench does not
        have: the threat model, the number of examples, the attacks that ran with their configs, the attack cost in
        forward and backward passes per image, ``trust``, the warnings and the adaptations. The robust accuracy is
        advlab's, not AutoAttack's, so it is ``robust_acc``, never ``autoattack_acc``; for a randomized model both
        accuracies are the expected ones over draws (as :attr:`clean_accuracy` and :attr:`robust_accuracy`)."""
        threat = {"linf": "Linf", "l2": "L2", "l1": "L1"}.get(self.norm or "", self.norm)
        return {
            "name": name,
            "dataset": dataset,
            "threat_model": threat,
            "eps": eps_text(self.eps) if self.eps is not None else None,
            "clean_acc": f"{100 * self.clean_accuracy:.2f}",
            "robust_acc": f"{100 * self.robust_accuracy:.2f}",
            "number_forward_passes": 1,
            "n_examples": self.n,
            "attacks": [a["config"] for a in self.per_attack],
            "attack_forward_passes_per_image": round(self.forwards_per_image, 3),
            "attack_backward_passes_per_image": round(self.backwards_per_image, 3),
            "trust": self.trust,
            "diagnostics": {"warnings": self.warnings, "adaptations": self.adaptations},
            "evaluated_with": "advlab",
        }

    def rows(self, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """One dict per sample (for a CSV): index, label, predictions, confidences, norms, broken by."""
        s = self.samples
        names = [*self.attacks, "noise-check", "square-check", "longer-runs", "smoothed-apgd"]
        out = []
        for i in range(self.n):
            b = int(s.broken_by[i])
            row: dict[str, Any] = {
                "index": i,
                "label": int(s.y[i]),
                "clean_pred": int(s.clean_pred[i]),
                "adv_pred": int(s.adv_pred[i]),
                "clean_confidence": round(float(s.clean_confidence[i]), 6),
                "adv_confidence": round(float(s.adv_confidence[i]), 6),
                "attacked": bool(s.attacked[i]),
                "broken_by": names[b] if b >= 0 else "",
                "l0": int(s.l0[i]),
                "l2": round(float(s.l2[i]), 6),
                "linf": round(float(s.linf[i]), 6),
                "forwards": int(s.forwards[i]),
                "backwards": int(s.backwards[i]),
                "indicators": " ".join(n for n, bit in indicators.NAMES.items() if int(s.indicators[i]) & bit),
            }
            if class_names is not None:
                row["label_name"] = class_names[row["label"]] if row["label"] >= 0 else ""
                row["clean_name"], row["adv_name"] = class_names[row["clean_pred"]], class_names[row["adv_pred"]]
            out.append(row)
        return out

    def format(self, class_names: Sequence[str] | None = None) -> str:
        """What ``advlab eval`` prints, to be read in 10 seconds: :meth:`headline_lines` (robust accuracy with its
        interval, trust and why), :meth:`class_lines` (robust accuracy per class, named with ``class_names``),
        then :meth:`detail_lines` (every rate, norm, cost, attack, adaptation and warning)."""
        return "\n".join([*self.headline_lines(), "", *self.class_lines(class_names), "", *self.detail_lines()])

    def headline_lines(self) -> list[str]:
        """Two lines: the :attr:`headline` with its interval, the samples it counts and the threat; the trust and
        its :attr:`trust_reason` (with how many warnings the details hold)."""
        h = self.headline
        threat = f"{self.norm} eps {eps_text(self.eps)}" if self.eps is not None else "no eps bound"
        of = f"{h.hits:.4g} of {h.samples} labelled samples" + (f", {self.n} in all" if h.samples != self.n else "")
        more = len(self.warnings)
        why = f", because {self.trust_reason}" if more else f" ({self.trust_reason})"
        listed = f" ({more} warning{'s' if more > 1 else ''} below)" if more else ""
        return [
            f"{h.name} {h.value:.2%} (95% interval {h.low:.2%} to {h.high:.2%}; {of}), {threat}",
            f"trust: {self.trust}{why}{listed}",
        ]

    def class_lines(self, class_names: Sequence[str] | None = None) -> list[str]:
        """Robust and clean accuracy per class, one line each (:meth:`classes_shown`: class order, or the worst
        :data:`CLASS_LINES` first when there are more)."""
        rows, total = self.classes_shown(class_names), len(self.per_class())
        head = "per class" if len(rows) == total else f"per class, the {len(rows)} worst of {total}"
        labels = [
            f"{r['class']} {r['name']}" if "name" in r and r["name"] != str(r["class"]) else str(r["class"])
            for r in rows
        ]
        width = min(24, max((len(t) for t in labels), default=0))
        lines = [f"{head}:"]
        for r, label in zip(rows, labels, strict=True):
            lines.append(
                f"  {label[:width]:<{width}}  robust {r['robust_accuracy']:7.2%}  clean {r['clean_accuracy']:7.2%}  "
                f"n {r['samples']}"
            )
        return lines

    def detail_lines(self) -> list[str]:
        """Every rate, the norms of the successes, the cost per image and per attack, adaptations and warnings."""
        threat = f"{self.norm} eps={self.eps:.6g}" if self.eps is not None else "unbounded"
        lines = [
            f"{self.n} samples, {threat}, attacks: {', '.join(self.attacks)}",
            f"  clean accuracy              {self.clean_accuracy:8.2%}",
            f"  robust accuracy             {self.robust_accuracy:8.2%}  (trust: {self.trust})",
            *self._expected_lines(),
            f"  attack success rate         {self.attack_success_rate:8.2%}",
            f"  strict attack success rate  {self.strict_attack_success_rate:8.2%}  (correct -> wrong)",
            f"  prediction change rate      {self.prediction_change_rate:8.2%}",
        ]
        for k in ("linf", "l2"):
            m = self.norms[k]
            if m["median"] is not None:
                lines.append(f"  {k + ' of successes':<28}median {m['median']:.4g}, mean {m['mean']:.4g}")
        lines.append(
            f"  gradient evaluations        {self.gradient_evaluations} ({self.forward_evaluations} forwards), "
            f"{self.seconds:.1f} s; per image {self.backwards_per_image:.1f} backward, "
            f"{self.forwards_per_image:.1f} forward"
        )
        for a in self.per_attack:
            lines.append(
                f"    {a['attack']:<14} attacked {a['attacked']:>6}  broke {a['broken']:>6}  "
                f"robust after {a['robust_accuracy_after']:7.2%}  grads {a['gradient_evaluations']:>8}  "
                f"{a['seconds']:.1f} s"
            )
        if (t := self.active_test) is not None:
            skipped = (
                f" ({t['skipped']} samples skipped: their binary task could not be verified on the model)"
                if t["skipped"]
                else ""
            )
            lines.append(
                f"  active test                 found {t['found']} of {t['tested']} planted adversarial examples"
                + skipped
            )
        lines += [f"  adapted: {a}" for a in self.adaptations]
        lines += [f"  indicator: {i['indicator']} on {i['samples']} samples: {i['remedy']}" for i in self.indicators]
        lines += [f"  warning: {w}" for w in self.warnings]
        return lines

    def _expected_lines(self) -> list[str]:
        """The expected accuracy over draws (a randomized model), as one line of :meth:`format`; else none."""
        e, one = self.expected_accuracy, self.single_draw
        if e is None or one is None:
            return []
        return [
            f"  (expected over {e['draws']} draws; worst case {e['robust_worst_case']:.2%}, robust in every draw; one "
            f"draw: clean {one['clean']:.2%}, robust {one['robust']:.2%})"
        ]


def _merge(parts: Sequence[BatchResult]) -> tuple[BatchResult, torch.Tensor | None]:
    """The batches' per-sample columns concatenated, their attack totals and checks summed; and the x_adv, if kept."""
    cat = {k: torch.cat([p.tensors()[k] for p in parts]) for k in parts[0].tensors() if k != "attack_stats"}
    rows = max(len(p.attack_stats) for p in parts)  # (a batch saved before the smoothed stage has one row fewer)
    stats = torch.zeros(rows, parts[0].attack_stats.shape[1], dtype=parts[0].attack_stats.dtype)
    for p in parts:
        stats[: len(p.attack_stats)] += p.attack_stats
    checks = sanity_checks.merge([p.checks for p in parts])
    x_adv = cat.pop("x_adv", None)
    return BatchResult(**cat, attack_stats=stats, checks=checks), x_adv


def _per_attack(samples: BatchResult, attacks: Sequence[Named]) -> list[dict[str, Any]]:
    """One dict per attack (and the noise check and the gradient-free stage, when they ran): what it attacked, broke
    and cost, and the robust accuracy after it (over the labelled samples). ``config`` is the attack exactly as it
    ran."""
    correct = metrics.clean_correct(samples.y, samples.clean_pred)
    n_labelled = int(metrics.labelled(samples.y).sum())
    remaining = int(correct.sum())
    out = []
    checks = {
        len(attacks): ("noise-check", f"RandomNoise(tries={sanity_checks.NOISE_TRIES})"),
        len(attacks) + 1: (
            "square-check",
            f"Square(max_queries={gradients.GRADIENT_FREE_QUERIES}) on the samples left unbroken, "
            "run because a gradient check failed",
        ),
        len(attacks) + 2: (
            "longer-runs",
            f"the attacks again with {indicators.MORE_STEPS}x their steps on the samples whose loss was still "
            "improving when their budget ran out",
        ),
        len(attacks) + 3: (
            "smoothed-apgd",
            f"APGD (cross-entropy, margin; {SMOOTHED_STEPS} steps) on the model smoothed by Gaussian input "
            f"noise (sigma {' and '.join(f'{f:g}' for f in SMOOTHING)} of the ball per pixel) on the samples "
            "left unbroken, run because predictions were unstable",
        ),
    }
    rows = samples.attack_stats.tolist()
    a = len(attacks)
    order = [*range(a), a + 2, a, a + 3, a + 1]  # as they ran
    for i in order:
        if i >= len(rows):
            continue
        row = rows[i]
        if i >= len(attacks) and row[0] == 0:
            continue
        remaining -= int((correct & (samples.broken_by == i)).sum())
        name, config = checks[i] if i in checks else (attacks[i].label, repr(attacks[i]))
        out.append(
            {
                "attack": name,
                "config": config,
                "attacked": int(row[0]),
                "broken": int(row[1]),
                "robust_accuracy_after": remaining / n_labelled if n_labelled else 0.0,
                "forward_evaluations": int(row[2]),
                "gradient_evaluations": int(row[3]),
                "seconds": round(row[4], 4),
            }
        )
    return out


def _expected(s: BatchResult, findings: Findings, draws: int) -> dict[str, float] | None:
    """For a randomized model (EOT applied): expected clean and robust accuracy over the draws, and the worst case."""
    if not findings.randomized:
        return None
    return {
        "clean": metrics.expected_accuracy(s.expected_clean, s.y),
        "robust": metrics.expected_accuracy(s.expected_robust, s.y),
        "robust_worst_case": metrics.expected_accuracy(s.always_robust.float(), s.y),
        "draws": draws,
    }


def summarize(
    parts: Sequence[BatchResult],
    attacks: Sequence[Named],
    eps: float | None,
    norm: str | None,
    seconds: float,
    findings: Findings | None = None,
    draws: int = diagnostics.ACCURACY_DRAWS,
) -> EvalReport:
    """Merge per-batch results (in batch order) into one :class:`EvalReport`; rates from :mod:`metrics`. ``findings``:
    what the evaluation's probe found (:class:`~advlab.evaluation.diagnostics.Findings`; None: nothing); ``draws``: a
    randomized model's draws per sample (``Plan.draws``)."""
    if not parts:
        raise AdvlabError("nothing to evaluate: the data is empty")
    findings = findings if findings is not None else Findings()
    samples, x_adv = _merge(parts)
    y, cp, ap, broken = samples.y, samples.clean_pred, samples.adv_pred, samples.broken
    correct, robust = metrics.clean_correct(y, cp), metrics.robust(y, cp, ap)
    expected = _expected(samples, findings, draws)
    single = {"clean": metrics.clean_accuracy(y, cp), "robust": metrics.robust_accuracy(y, cp, ap)}
    return EvalReport(
        n=len(y),
        eps=eps,
        norm=norm,
        attacks=[a.label for a in attacks],
        clean_accuracy=expected["clean"] if expected else single["clean"],
        robust_accuracy=expected["robust"] if expected else single["robust"],
        attack_success_rate=metrics.attack_success_rate(broken, samples.attacked),
        strict_attack_success_rate=metrics.strict_attack_success_rate(y, cp, ap),
        prediction_change_rate=metrics.prediction_change_rate(cp, ap),
        norms={k: metrics.norm_stats(getattr(samples, k)[broken].float()) for k in ("linf", "l2", "l0")},
        confidence={
            "clean": metrics.mean_or_none(samples.clean_confidence[correct]),
            "adversarial": metrics.mean_or_none(samples.adv_confidence[broken]),
            "robust": metrics.mean_or_none(samples.adv_confidence[robust]),
        },
        gradient_evaluations=int(samples.backwards.sum()),
        forward_evaluations=int(samples.forwards.sum()),
        seconds=round(seconds, 4),
        per_attack=_per_attack(samples, attacks),
        warnings=diagnostics.finding_warnings(findings)
        + sanity_checks.check_warnings(samples.checks, findings)
        + indicators.warnings(samples.indicators, samples.checks),
        samples=samples,
        x_adv=x_adv,
        adaptations=diagnostics.adaptations(findings),
        expected_accuracy=expected,
        findings=findings,
        single_draw=single if expected else None,
    )
