"""Diagnostics that decide whether a robustness number can be trusted, and what the evaluation does about them.

**The words** (one meaning each, across :mod:`~advlab.evaluation.probes`, :mod:`~advlab.evaluation.checks`,
:mod:`~advlab.evaluation.gradients`, :mod:`~advlab.evaluation.cascade`, :mod:`~advlab.evaluation.summary` and
``advlab eval``):

* the **probe** measures the model on a few samples of the first batch before the cascade
  (:mod:`advlab.evaluation.probes`); its typed result is the :class:`Findings`.
* the **plan** (:class:`Plan`, made by :func:`diagnose` from the findings, here and only here) is what every batch
  of the evaluation runs: the attacks as adapted, the model they run on, the model that judges each success, the
  draws of a randomized model and the findings. It is saved in a run (plan.json, :meth:`Plan.record`) and rebuilt
  from there on resume (:func:`from_record`) without probing again.
* a **check** is one named measurement of a batch, a number: ``noise_broke`` (samples random noise broke),
  ``fd_unreliable`` (probed samples whose gradients disagree with finite differences), ... ``BatchResult.checks``
  holds a batch's, summed over batches (a per-evaluation one: its maximum) and shown as
  ``EvalReport.diagnostics["checks"]``. ``EvalConfig(sanity=False)`` turns the checks of the cascade off.
* a check **fails** when its value crosses its threshold (``gradients.fd_failed``: at least
  :data:`~advlab.evaluation.gradients.FD_MIN` unreliable samples); the failed gradient checks
  (:func:`advlab.evaluation.checks.failed_gradient_checks`) make the cascade run a gradient-free stage.
* a **warning** is one line of text for a failed check or a finding that limits the number, saying what was measured,
  what was done about it and how far the number holds (``EvalReport.warnings``: :func:`finding_warnings` here and
  :func:`advlab.evaluation.checks.check_warnings`; ``advlab eval`` prints each after ``warning:``).
* an **adaptation** is one line of text for what the evaluation changed about the attacks to fit the model (EOT,
  log-probabilities, straight-through gradients: ``EvalReport.adaptations``, :func:`adaptations`). It lowers no trust.
* **trust** is the verdict: ``"high"`` without a warning, else ``"low"`` (:func:`trust`, ``EvalReport.trust``).
* **unbroken**: a sample the cascade attacks and no attack has broken yet (its per-sample robust *flag*, the only
  meaning of "flag" here); the noise check, the zero-gradient check, the finite-difference probe and the
  gradient-free stage look at those.
* **diagnostics** is the whole: this module, and ``EvalReport.diagnostics`` (the findings, the checks, the failed
  gradient checks, the warnings and the adaptations, as in metrics.json).

What the findings decide (:func:`plan_for`):

* **the input leaves autograd and comes back** (``reattached``: preprocessing in NumPy, OpenCV or under
  ``torch.no_grad`` that hands the input's pixels back: an image of its shape, channels last, flattened, grey
  without its channel, or one image at a time as through PIL): the attacks run on
  :class:`advlab.evaluation.bpda.Reattached` of the model (BPDA with the identity across that part), every batch
  ends with the gradient-free stage on the samples still unbroken, and a warning says the number is an upper bound.
* **no gradient path** (and none through :class:`~advlab.evaluation.bpda.Reattached`: the outputs computed
  outside autograd, or an input of another shape coming back): on an input of at most :data:`FD_MAX_VALUES` values
  (and a deterministic model) the attacks run on :class:`advlab.evaluation.views.FiniteDifferences` of the model
  (``finite_differences``: every gradient by central differences, 2 queries per input value) and every batch ends
  with the gradient-free stage; on a larger input (or a randomized model: fresh noise in every query) the white-box
  attacks are replaced by a gradient-free one (Square, :data:`FALLBACK_QUERIES` queries per image; on a randomized
  model on its expected probabilities, the headline its expected accuracy). Either way the number is an upper
  bound, and a warning says so.
* **non-differentiable ops** (round, floor, sign, integer casts, comparisons cast to float, ...; e.g. an input
  quantizer): the attacks run on :class:`advlab.evaluation.bpda.StraightThrough` of the model (BPDA).
* **custom autograd Functions whose backward fails** (on the probed samples the model's input gradients disagree
  with finite differences, or vanish, and they agree better another way; :func:`failing_functions`): the attacks run
  on :class:`~advlab.evaluation.bpda.StraightThrough` with autograd differentiating those Functions' own forward
  (``differentiated_functions``: the exact gradient of a forward written in torch), or, where that cannot take
  effect, with each taken as the identity in the backward (``straight_through_functions``; BPDA either way). A
  custom Function whose backward is right keeps it.
* **probabilities instead of logits** (a final softmax): the attacks run on
  :class:`~advlab.evaluation.views.LogProbabilities` of the model.
* **randomized** (two forwards differ: random transformations, noise, dropout): the attacks run on
  :class:`~advlab.evaluation.views.ExpectedProbabilities` (EOT) with their full budget, EOT-PGD first; the EOT model
  judges which samples are broken, and the accuracies are the expected ones over ``EvalConfig.draws`` fresh draws
  of the model at each sample's worst case (the headline), with one draw's beside them.
* **grad-mode gap** (the forward with autograd on differs from the forward under ``torch.no_grad``): the attacks'
  gradients describe another function than the one a user calls; every batch ends with the gradient-free stage on
  the samples still unbroken (it queries the model as a user calls it), and a warning names the finding.

Every success, whatever the plan, is judged on ``Plan.judge`` called as a user calls it (its own mode,
``torch.no_grad``) at the returned point, inside the ball and the [0, 1] box (:mod:`advlab.evaluation.cascade`),
so the robust accuracy is the accuracy recomputed from the kept adversarial examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import Attack
from advlab.attacks.blackbox import Square
from advlab.attacks.pgd import PGD
from advlab.errors import AdvlabError
from advlab.evaluation import bpda, gradients, indicators, probes
from advlab.evaluation.config import EvalConfig
from advlab.evaluation.views import EOT_DRAWS, ExpectedProbabilities, FiniteDifferences, LogProbabilities

#: queries per image of the gradient-free attack that stands in for gradient attacks on a model without a gradient path
FALLBACK_QUERIES = 5000
#: the most input values (C*H*W) of a model without a gradient path whose gradients are taken by finite differences
#: (:class:`advlab.evaluation.views.FiniteDifferences`): a gradient then costs at most 512 queries, so the reliable
#: preset's at most 150 steps cost at most ~77,000 per unbroken image, a few times the gradient-free stage's 4 x
#: 5,000; an 8x8 digit (64 values) costs 128 per gradient. On 200 digits behind the digits CNN served through NumPy
#: (``benchmarks/traps.py``, numpy-logits) the reliable preset gave 31.0% this way, the union of every attack's points
#: (the twin's own white-box number 31.5%); Square alone 34.5%.
FD_MAX_VALUES = 256
#: draws per sample of the expected accuracy of a randomized model, unless the config says (``EvalConfig.draws``)
ACCURACY_DRAWS = 16
#: the fewest steps a white-box attack takes on a randomized model (AutoAttack's APGD budget)
EOT_STEPS = 100

#: a way of getting gradients through a custom Function counts as better when its median disagreement with finite
#: differences is at most this fraction of the model's own (:func:`_better`)
FUNCTION_GAIN = 0.5

#: the ball a success must lie in: (eps in [0, 1] pixel units, norm name)
Ball = tuple[float, str]


@dataclass(frozen=True)
class Findings:
    """What the probe (:mod:`advlab.evaluation.probes`) found on the first samples, typed: no gradient path to the
    input; an input that leaves autograd and comes back (``reattached``: BPDA with the identity across that part);
    no gradient path, but an input small enough for gradients by finite differences (``finite_differences``); the
    non-differentiable ops applied to it (straight-through gradients needed); the custom autograd
    Functions whose backward fails (:func:`failing_functions`), to differentiate through their forward or to pass
    the gradient straight through; outputs that are probabilities; a randomized model; a forward that differs with
    autograd on (``grad_mode_gap``: the relative difference measured, 0 for an honest model)."""

    no_gradient_path: bool = False
    finite_differences: bool = False
    reattached: bool = False
    straight_through: tuple[str, ...] = ()
    differentiated_functions: tuple[str, ...] = ()
    straight_through_functions: tuple[str, ...] = ()
    probabilities: bool = False
    randomized: bool = False
    grad_mode_gap: float = 0.0

    @property
    def grad_mode_differs(self) -> bool:
        """Whether the forward with autograd on differs from the no-grad one (above :data:`probes.DIFFERENT`)."""
        return self.grad_mode_gap > probes.DIFFERENT

    def to_dict(self) -> dict[str, Any]:
        return {
            **dataclasses.asdict(self),
            "straight_through": list(self.straight_through),
            "differentiated_functions": list(self.differentiated_functions),
            "straight_through_functions": list(self.straight_through_functions),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Findings:
        known = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in known}
        lists = {
            k: tuple(kept.get(k, ()))
            for k in ("straight_through", "differentiated_functions", "straight_through_functions")
        }
        return cls(**{**kept, **lists})


@dataclass(frozen=True)
class Plan:
    """What every batch of an evaluation runs (:func:`diagnose`; the words: this module's docstring).

    ``attacks``: as adapted, run in order; ``attacked``: the model they run on (a view of ``model``, or the
    ``attack_model`` given); ``judge``: the model whose no-grad prediction decides each success (``model`` itself,
    or for a randomized model its EOT view); ``model``: the model as given, drawn ``draws`` times per sample for
    the expected accuracy (1: deterministic); ``config``: the evaluation's settings (ball, which samples, checks);
    ``findings``: what the probe found; ``shown_eps``/``shown_norm``: the ball the report names."""

    attacks: tuple[Attack, ...]
    attacked: nn.Module
    judge: nn.Module
    model: nn.Module
    draws: int
    config: EvalConfig
    findings: Findings
    shown_eps: float | None
    shown_norm: str | None

    @property
    def norm(self) -> str | None:
        """The norm successes are measured in (:meth:`EvalConfig.threat_norm`)."""
        return self.config.threat_norm(list(self.attacks))

    def record(self) -> dict[str, Any]:
        """The plan as JSON: what :func:`advlab.evaluation.merge` needs to summarize saved batches without the model,
        and :func:`from_record` to run more batches under the same plan."""
        return {
            "attacks": [{"label": a.label, "config": repr(a)} for a in self.attacks],
            "eps": self.shown_eps,
            "norm": self.shown_norm,
            "findings": self.findings.to_dict(),
            "draws": self.draws,
        }


def success_ball(atk: Attack, eps: float | None, norm: str | None) -> Ball | None:
    """The ball a success must lie in: the evaluation's, else the attack's own largest eps, else none."""
    if eps is not None:
        return eps, norm or atk.threat_norm
    own = getattr(atk, "eps", None)
    if own is None:
        return None
    e = float(own) if isinstance(own, (int, float)) else max(float(v) for v in own)
    return e, atk.threat_norm


def shown_ball(attacks: Sequence[Attack], eps: float | None, norm: str | None) -> tuple[float | None, str | None]:
    """The ball the report names: the config's, else the attacks' own when they all share one."""
    if eps is not None:
        return eps, norm
    balls = {success_ball(a, None, None) for a in attacks}
    if len(balls) == 1 and (b := balls.pop()) is not None:
        return b
    return None, norm


def probe(model: nn.Module, attacked: nn.Module, x: torch.Tensor, attacks: Sequence[Attack]) -> Findings:
    """The :class:`Findings` on a few samples ``x`` (on the models' device): ``attacked`` is the model the attacks
    will run on, ``model`` the one a user calls. Without white-box attacks only what the judging needs."""
    x = x[: probes.PROBE_SAMPLES]
    with torch.no_grad():
        probes.require_finite(model(x))
    reattached = False
    if any(a.white_box for a in attacks) and not probes.gradient_path(attacked, x):
        if not probes.gradient_path(bpda.Reattached(attacked), x):
            random = probes.randomized(model, x)
            small = x[0].numel() <= FD_MAX_VALUES and not random
            return Findings(no_gradient_path=True, finite_differences=small, randomized=random)
        reattached, attacked = True, bpda.Reattached(attacked)
    ops = tuple(bpda.non_differentiable_ops(attacked, x))
    random = probes.randomized(model, x)
    functions = ((), ()) if random else failing_functions(attacked, x, bool(ops))
    return Findings(
        reattached=reattached,
        straight_through=ops,
        differentiated_functions=functions[0],
        straight_through_functions=functions[1],
        probabilities=probes.outputs_probabilities(attacked, x),
        randomized=random,
        grad_mode_gap=0.0 if random else probes.grad_mode_gap(model, x),
    )


def _agreement(view: nn.Module, x: torch.Tensor) -> gradients.Disagreement | None:
    """:func:`advlab.evaluation.probes.gradient_agreement` of ``view``, None when its backward raises (a custom
    Function without one)."""
    try:
        return probes.gradient_agreement(view, x)
    except (RuntimeError, TypeError, ValueError):
        return None


def _better(alt: gradients.Disagreement | None, base: gradients.Disagreement | None) -> bool:
    """Whether the gradients ``alt`` measured agree with finite differences better than ``base``'s: gradients where
    all had vanished or the backward raised, fewer unreliable samples, or at most half the median disagreement."""
    if alt is None:
        return False
    if base is None or bool(base.vanished.all()):
        return not bool(alt.vanished.any())
    fewer = int(alt.unreliable.sum()) < int(base.unreliable.sum())
    return fewer or float(alt.per_sample.median()) <= FUNCTION_GAIN * float(base.per_sample.median())


def failing_functions(attacked: nn.Module, x: torch.Tensor, ops: bool) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The custom autograd Functions in ``attacked``'s graph (:func:`advlab.evaluation.bpda.custom_functions`) whose
    backward the attacks should not follow, by finite differences on a few samples ``x``
    (:func:`advlab.evaluation.probes.gradient_agreement`; ``ops``: the straight-through ops are in force), as
    (differentiated through their forward, passed straight through): see
    :class:`advlab.evaluation.bpda.StraightThrough`.

    Only when the model's gradients fail there, i.e. the finite-difference check fails
    (:func:`advlab.evaluation.gradients.fd_failed`), every gradient vanishes (a zero backward, or a quantizer's
    true one) or the backward raises (none written), is each Function tried both ways (the others as they are); the
    way whose gradients agree best is kept when it agrees better than the model's own (:func:`_better`),
    differentiating the forward on a tie. A Function whose backward is right (an honest custom activation or
    identity) never makes the check fail, so it keeps its backward. Costs nothing on a model without custom
    Functions, else ``1 + 2k`` probes of 26 forwards per sample (k Functions). Not tried on a randomized model (its
    finite differences are noise)."""
    names = bpda.custom_functions(attacked, x[: probes.PROBE_SAMPLES])
    if not names:
        return (), ()
    base = _agreement(bpda.StraightThrough(attacked, ops=ops), x)
    if base is not None and not (gradients.fd_failed(int(base.unreliable.sum())) or bool(base.vanished.all())):
        return (), ()
    differentiated: list[str] = []
    straight: list[str] = []
    for name in names:
        ways = {
            "differentiated": bpda.StraightThrough(attacked, ops=ops, differentiated=(name,)),
            "straight": bpda.StraightThrough(attacked, ops=ops, functions=(name,)),
        }
        agree = {way: _agreement(view, x) for way, view in ways.items()}
        good = {way: a for way, a in agree.items() if a is not None and _better(a, base)}
        if good:
            best = min(good, key=lambda w: (int(good[w].unreliable.sum()), float(good[w].per_sample.median())))
            (differentiated if best == "differentiated" else straight).append(name)
    return tuple(differentiated), tuple(straight)


def diagnose(
    model: nn.Module, x: torch.Tensor | None, config: EvalConfig, attack_model: nn.Module | None = None
) -> Plan:
    """The :class:`Plan` of an evaluation of ``model`` under ``config``, from the :func:`probe` of the first few
    samples ``x`` (None: no data; nothing is adapted)."""
    attacks = config.resolved_attacks()
    attacked = model if attack_model is None else attack_model
    findings = Findings() if x is None or not len(x) else probe(model, attacked, x, attacks)
    return plan_for(model, config, findings, attack_model)


def plan_for(model: nn.Module, config: EvalConfig, findings: Findings, attack_model: nn.Module | None = None) -> Plan:
    """The plan the ``findings`` decide (the module docstring's list); deterministic, so that a resumed run rebuilds
    the plan it saved."""
    attacks = config.resolved_attacks()
    norm = config.threat_norm(attacks)
    attacked = model if attack_model is None else attack_model
    judge, draws = model, 1
    if findings.finite_differences:
        attacked = FiniteDifferences(attacked)
    elif findings.no_gradient_path:
        attacks = fallback(attacks, config.eps, norm)
        if findings.randomized:  # Square on the expected probabilities; the expected accuracy over fresh draws
            attacked = ExpectedProbabilities(attacked)
            judge, draws = attacked, config.draws
    else:
        if findings.reattached:
            attacked = bpda.Reattached(attacked)
        if findings.straight_through or findings.differentiated_functions or findings.straight_through_functions:
            attacked = bpda.StraightThrough(
                attacked,
                ops=bool(findings.straight_through),
                functions=findings.straight_through_functions,
                differentiated=findings.differentiated_functions,
            )
        if findings.probabilities:
            attacked = LogProbabilities(attacked)
        if findings.randomized:
            attacked = ExpectedProbabilities(attacked)
            judge, draws = attacked, config.draws
            attacks = eot_attacks(attacks, config.eps, norm)
    return Plan(tuple(attacks), attacked, judge, model, draws, config, findings, *shown_ball(attacks, config.eps, norm))


def from_record(
    record: Mapping[str, Any], model: nn.Module, config: EvalConfig, attack_model: nn.Module | None = None
) -> Plan:
    """The plan a run saved (:meth:`Plan.record`), rebuilt for ``model`` without probing again; an
    :class:`AdvlabError` when the config's attacks are not the ones the record names (the run's settings changed)."""
    plan = plan_for(model, config, Findings.from_dict(record.get("findings", {})), attack_model)
    if [repr(a) for a in plan.attacks] != [a["config"] for a in record.get("attacks", [])]:
        raise AdvlabError("the saved plan's attacks are not this evaluation's: start over with force")
    return plan


def fallback(attacks: list[Attack], eps: float | None, norm: str | None) -> list[Attack]:
    """The white-box attacks replaced by one gradient-free Square attack in the same ball (the evaluation's
    ``eps``/``norm``, else the first white-box attack's own), placed where the first of them stood."""
    white = [a for a in attacks if a.white_box]
    if not white:
        return attacks
    own = getattr(white[0], "eps", None)
    e = eps if eps is not None else (max(own) if isinstance(own, (list, tuple)) else own)
    if e is None:
        raise AdvlabError(
            "the model's outputs have no gradient path to the input, and no eps bounds a gradient-free "
            "attack: give --eps (and --norm)"
        )
    nm = norm or white[0].threat_norm
    if nm not in ("linf", "l2"):
        raise AdvlabError(
            f"the model's outputs have no gradient path to the input; the gradient-free fallback (Square) "
            f"works in linf or l2, not {nm}"
        )
    square = Square(eps=float(e), norm=nm, max_queries=FALLBACK_QUERIES, seed=getattr(white[0], "seed", 0))
    first = attacks.index(white[0])
    rest = [a for a in attacks if not a.white_box]
    return rest[:first] + [square] + rest[first:]


def eot_budget(atk: Attack) -> Attack:
    """``atk`` as it runs on a randomized model: the full budget (no early stop: the first expected misclassification
    is a weak point) and at least :data:`EOT_STEPS` steps (each EOT gradient is a noisy estimate, so a short schedule
    stops short of what the expectation allows)."""
    names = {f.name for f in dataclasses.fields(atk)}
    changes: dict[str, Any] = {"early_stop": False} if "early_stop" in names else {}
    if "steps" in names and atk.white_box:
        changes["steps"] = max(int(atk.steps), EOT_STEPS)  # type: ignore[attr-defined]
    return dataclasses.replace(atk, **changes) if changes else atk


def eot_attacks(attacks: list[Attack], eps: float | None, norm: str | None) -> list[Attack]:
    """The attacks as they run on a randomized model: first EOT-PGD with a fixed step (eps / 8, :data:`EOT_STEPS`
    steps, from the clean image) in the evaluation's ball, then each given attack with :func:`eot_budget`. APGD's
    step-size rule halves its step when the loss does not rise, and an EOT loss is a noisy estimate: on the digits
    behind Gaussian input noise (sigma 0.25, 200 digits, L-inf 0.1) the reliable preset alone gave an expected robust
    accuracy of 37.0%, with EOT-PGD first 34.5%, a hand-written EOT-PGD-50 on the mean loss 33.7%."""
    out = [eot_budget(a) for a in attacks]
    white = [a for a in attacks if a.white_box]
    e = eps if eps is not None else getattr(white[0], "eps", None) if white else None
    nm = norm or (white[0].threat_norm if white else None)
    if isinstance(e, (int, float)) and nm in ("linf", "l2"):
        seed = getattr(white[0], "seed", 0) if white else 0
        out.insert(0, PGD(eps=float(e), norm=nm, alpha=float(e) / 8, steps=EOT_STEPS, random_start=False, seed=seed))
    return out


def _short(names: Sequence[str]) -> str:
    """Function names as a report shows them: the class names (the findings keep module and qualified name)."""
    return ", ".join(name.rsplit(".", 1)[-1] for name in names)


def adaptations(findings: Findings) -> list[str]:
    """The adaptations: what the evaluation changed about the attacks to fit the model, one line each."""
    out = []
    if findings.randomized:
        out.append(
            f"the model is randomized: the attacks used EOT (the mean of {EOT_DRAWS} draws' probabilities per forward) "
            f"with their full budget (no early stop, at least {EOT_STEPS} steps; a fixed-step EOT-PGD first), and the "
            f"accuracies are the expected ones over fresh draws at each sample's worst case (one "
            "draw's beside them)"
        )
    if findings.probabilities:
        out.append(
            "the model outputs probabilities, not logits: the attacks used their logarithm as logits (the same "
            "argmax; every success confirmed on the model)"
        )
    if findings.differentiated_functions:
        out.append(
            f"the model's custom autograd Function(s) {_short(findings.differentiated_functions)} gave input "
            "gradients that disagree with finite differences (or vanish): the attacks differentiated their forward "
            "instead of calling their backward (BPDA; forward unchanged, every success confirmed on the model)"
        )
    if findings.straight_through_functions:
        out.append(
            f"the model's custom autograd Function(s) {_short(findings.straight_through_functions)} gave input "
            "gradients that disagree with finite differences (or vanish): the attacks passed the gradient straight "
            "through them (BPDA, the Function taken as the identity in the backward; forward unchanged, every "
            "success confirmed on the model)"
        )
    if findings.straight_through:
        out.append(
            f"the model applies {', '.join(sorted(findings.straight_through))} to its input: the attacks used "
            "straight-through gradients through them (BPDA; forward unchanged, every success confirmed on the model)"
        )
    return out


def finding_warnings(findings: Findings) -> list[str]:
    """The warnings the findings call for (a number that holds only so far), one line each."""
    out = []
    if findings.finite_differences:
        out.append(
            "the model's outputs have no gradient path to the input (computed outside autograd?): the attacks took "
            "every gradient by central differences (2 queries per input value), every success was judged on the "
            "model, and Square ran on the samples still unbroken; the robust accuracy is an upper bound; give a "
            "differentiable twin of the model (attack_model=) for a white-box number"
        )
    elif findings.no_gradient_path:
        out.append(
            f"the model's outputs have no gradient path to the input (preprocessing outside autograd?): gradient "
            f"attacks were replaced by Square with {FALLBACK_QUERIES} queries per image (then up to "
            f"{indicators.MORE_QUERY_RUNS} more runs with fresh seeds while they break some), so the robust accuracy "
            "is an upper bound; give a differentiable twin of the model (attack_model=) for a white-box number"
        )
    if findings.reattached:
        out.append(
            "the model's input leaves autograd (preprocessing in NumPy, OpenCV or under torch.no_grad) and its pixels "
            "come back: the attacks took that part as the identity in the backward (BPDA), every success "
            "was judged on the model, and Square ran on the samples still unbroken; the robust accuracy is an upper "
            "bound; give a differentiable twin of the model (attack_model=) for a white-box number"
        )
    if findings.grad_mode_differs:
        out.append(
            f"the model computes another function when autograd is on (its outputs differ from the no-grad ones by "
            f"up to {findings.grad_mode_gap:.2g}, relative): the attacks' gradients describe a function a user never "
            "calls; every success was judged on the no-grad model, and Square ran on the samples still unbroken; "
            "the robust accuracy is an upper bound"
        )
    return out


def trust(warnings: list[str]) -> str:
    """``"high"`` when no check failed (no warning), else ``"low"``."""
    return "low" if warnings else "high"
