"""``evaluate``: the cascade over every batch of the data, merged into one report."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import Attack, keeps_model_state
from advlab.device import device_of
from advlab.errors import AdvlabError
from advlab.evaluation import cascade, diagnostics, gradients
from advlab.evaluation.cascade import BatchResult, success_ball
from advlab.evaluation.config import EvalConfig
from advlab.evaluation.inputs import Data, Source, source, to_device
from advlab.evaluation.summary import EvalReport, summarize
from advlab.work import Work


def _shown_ball(attacks: Sequence[Attack], eps: float | None, norm: str | None) -> tuple[float | None, str | None]:
    """The ball the report names: the config's, else the attacks' own when they all share one."""
    if eps is not None:
        return eps, norm
    balls = {success_ball(a, None, None) for a in attacks}
    if len(balls) == 1 and (b := balls.pop()) is not None:
        return b
    return None, norm


@dataclass(frozen=True)
class Plan:
    """What an evaluation decides before its first batch, from a few samples of it (:func:`prepare`): the
    ``attacks`` as adapted and the model they run on (``attacked``), the probe's checks (which record the
    adaptations), the threat ``norm``, and the ball the report names (``shown_eps``, ``shown_norm``). Every batch
    of the evaluation, in every shard and every resumed call, runs under the same plan."""

    attacks: list[Attack]
    attacked: nn.Module
    probe_checks: dict[str, float]
    norm: str | None
    shown_eps: float | None
    shown_norm: str | None

    def record(self) -> dict[str, Any]:
        """The plan as JSON: what :func:`merge` needs to summarize saved batches without the model."""
        return {
            "attacks": [{"label": a.label, "config": repr(a)} for a in self.attacks],
            "eps": self.shown_eps,
            "norm": self.shown_norm,
            "probe_checks": self.probe_checks,
        }


@dataclass(frozen=True)
class RecordedAttack:
    """An attack as a saved plan names it: its label and its exact config (``repr``)."""

    label: str
    config: str

    def __repr__(self) -> str:
        return self.config


def prepare(
    model: nn.Module,
    data: Data | Source,
    config: EvalConfig | str | None = None,
    *,
    attack_model: nn.Module | None = None,
) -> Plan:
    """The :class:`Plan` of an evaluation of ``model`` on ``data`` (see :func:`evaluate`), decided on its first
    batch by :mod:`advlab.evaluation.diagnostics`."""
    cfg = EvalConfig.of(config, model)
    src = data if isinstance(data, Source) else source(model, data, cfg.batch_size, cfg.limit)
    attacks = cfg.resolved_attacks()
    norm = cfg.threat_norm(attacks)
    attacked = model if attack_model is None else attack_model
    first = src.first()
    if first is not None:
        attacks, attacked, probe_checks = _adapted(attacked, first, cfg, attacks, norm)
    else:
        probe_checks = {}
    return Plan(attacks, attacked, probe_checks, norm, *_shown_ball(attacks, cfg.eps, norm))


def _adapted(
    attacked: nn.Module,
    first: tuple[torch.Tensor, torch.Tensor],
    cfg: EvalConfig,
    attacks: list[Attack],
    norm: str | None,
) -> tuple[list[Attack], nn.Module, dict[str, float]]:
    """The attacks and the model they run on, adapted by :mod:`advlab.evaluation.diagnostics` on the first batch
    (whether or not this call evaluates it, so that every shard and every resume runs the same attacks), and the
    probe's checks, which record the adaptations: a gradient-free fallback when the outputs have no gradient path,
    straight-through gradients through non-differentiable ops, log-probabilities for a model that outputs
    probabilities; and, for a deterministic model with a gradient path, the finite-difference probe
    (:func:`advlab.evaluation.diagnostics.gradient_probe`, whose failure makes every batch end with a gradient-free
    stage; not on a randomized model, nor under straight-through gradients)."""
    x = to_device(first[0][: diagnostics.PROBE_SAMPLES], device_of(attacked))
    _require_pixels(x)
    attacks, fell_back = diagnostics.adapt(attacked, x, attacks, cfg.eps, norm)
    if fell_back:
        return attacks, attacked, {diagnostics.FALLBACK_KEY: 1.0}
    attacked, ops = diagnostics.straight_through(attacked, x)
    probe_checks = {diagnostics.BPDA_KEY + op: 1.0 for op in ops}
    attacked, logged = diagnostics.log_probabilities(attacked, x)
    probe_checks.update({diagnostics.LOGPROB_KEY: 1.0} if logged else {})
    attacked, random = diagnostics.eot(attacked, x)
    if random:  # the first expected misclassification is a weak point of a random model: spend the full budget
        probe_checks[diagnostics.EOT_KEY] = 1.0
        attacks = diagnostics.eot_attacks(attacks, cfg.eps, norm)
    elif cfg.sanity and not ops and any(a.white_box for a in attacks):  # do the attacks' gradients describe the model?
        # not under BPDA: a straight-through gradient is a surrogate by design, finite differences of a quantizer vanish
        ball = success_ball(attacks[0], cfg.eps, norm)
        xs = to_device(first[0][: gradients.SAMPLES], device_of(attacked))
        probe_checks.update(diagnostics.gradient_probe(attacked, xs, *(ball or (None, None))))
    return attacks, attacked, probe_checks


def _require_pixels(x: torch.Tensor) -> None:
    """Refuse images outside [0, 1] (a normalized tensor given where advlab expects pixels)."""
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise AdvlabError("images must be in [0, 1]; advlab models carry their own normalization")


@dataclass(frozen=True)
class _BatchRunner:
    """How every batch of one evaluation runs: the attacks as adapted, on ``attack_model`` (None: on ``judge``),
    each success judged by ``judge``; a randomized model is drawn ``draws`` times per sample (``draw_model``).
    ``probe_checks``: the first batch's probe, recorded in every batch's checks (its cost in the first batch's)."""

    cfg: EvalConfig
    attacks: list[Attack]
    norm: str | None
    judge: nn.Module
    attack_model: nn.Module | None
    draws: int
    draw_model: nn.Module
    probe_checks: dict[str, float]

    def run(self, b: int, xb: torch.Tensor, yb: torch.Tensor) -> BatchResult:
        """The cascade on batch ``b`` (moved to the model's device)."""
        dev = device_of(self.draw_model)
        xb, yb = to_device(xb, dev), to_device(yb, dev).long()
        _require_pixels(xb)
        part = cascade.run_batch(
            self.judge,
            xb,
            yb,
            self.attacks,
            eps=self.cfg.eps,
            norm=self.norm,
            attack_misclassified=self.cfg.attack_misclassified,
            sanity=self.cfg.sanity,
            first=b == 0,
            keep_adversarials=self.cfg.keep_adversarials,
            attack_model=self.attack_model,
            draws=self.draws,
            draw_model=self.draw_model,
            gradient_checks_failed=gradients.fd_failed(self.probe_checks.get("fd_unreliable", 0.0)),
        )
        part.checks.update(self.probe_checks)
        if b == 0:
            diagnostics.charge_probe(part, self.probe_checks)
        return part


def _batch_runner(model: nn.Module, cfg: EvalConfig, plan: Plan) -> _BatchRunner:
    """The cascade of an evaluation of ``model`` whose attacks run on ``plan.attacked``. A randomized model: its EOT
    version (``attacked``) judges the successes, and the model itself is drawn for the expected accuracy."""
    attacked, attacks, norm, probe_checks = plan.attacked, plan.attacks, plan.norm, plan.probe_checks
    if diagnostics.EOT_KEY in probe_checks:
        return _BatchRunner(cfg, attacks, norm, attacked, None, diagnostics.ACCURACY_DRAWS, model, probe_checks)
    return _BatchRunner(cfg, attacks, norm, model, None if attacked is model else attacked, 1, model, probe_checks)


@keeps_model_state  # a model left in train mode: its BatchNorm statistics and mode are as found afterwards
def evaluate(
    model: nn.Module,
    data: Data,
    config: EvalConfig | str | None = None,
    *,
    work: Work[BatchResult] | None = None,
    attack_model: nn.Module | None = None,
    plan: Plan | None = None,
) -> EvalReport:
    """Robustness of ``model`` on ``data`` under ``config``'s attacks, as a cascade (:mod:`advlab.evaluation.cascade`).

    ``data``: a data spec ("digits:test"; streamed: the images are decoded batch by batch, so memory does not grow
    with their number), an ``(x, y)`` pair of [0, 1] images and labels (-1 = unlabelled), indexed batches
    (:func:`advlab.data.open_for_model`), or an iterable of such batches (a DataLoader). ``config``: an
    :class:`EvalConfig`, or a preset name run at the model's default eps (None: "reliable"). The batches run on
    ``advlab.device.device_of(model)``.
    ``work``: one unit per batch: ``work.done`` holds batches evaluated earlier (not evaluated again),
    ``work.on_done(b, result)`` is called after each new one (save it), ``work.in_shard(b)`` selects this shard's
    batches (the report then covers the batches evaluated or given in ``done``; indexed data reads only those),
    ``work.progress`` wraps the batch indices (a progress bar). A batch's result depends only on its samples and
    the seed. ``attack_model``: run the attacks on this model instead (e.g. ``zoo.Autocast(model)``: mixed
    precision), counting only the successes that ``model`` confirms (see :func:`advlab.evaluation.cascade.run_batch`).
    Before the first batch :func:`prepare` (:mod:`advlab.evaluation.diagnostics`) looks at a few samples and adapts:
    NaN logits are refused, a model without a gradient path is attacked gradient-free, non-differentiable input ops
    get straight-through gradients and probability outputs are attacked as log-probabilities (``report.adaptations``,
    ``report.warnings`` and ``report.trust`` say what was done and how far to trust the number); ``plan``: a plan
    made earlier by :func:`prepare` on the same model, data and config, used instead.
    """
    cfg = EvalConfig.of(config, model)
    work = work if work is not None else Work()
    t0 = time.perf_counter()
    src = source(model, data, cfg.batch_size, cfg.limit)
    plan = plan if plan is not None else prepare(model, src, cfg, attack_model=attack_model)
    if work.plan is None:  # a run saves it (plan.json): a merge of its batches then needs no model
        work.record_plan(plan.record())
    runner = _batch_runner(model, cfg, plan)
    parts: dict[int, BatchResult] = {}
    done = work.finished()
    pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def wanted() -> Iterator[int]:  # the batches this call evaluates, their data parked in ``pending``
        for b, xb, yb in src.select(lambda b: b not in done and (work.in_shard is None or work.in_shard(b))):
            pending[b] = (xb, yb)
            yield b

    for b in work.progress(wanted()) if work.progress is not None else wanted():
        parts[b] = runner.run(b, *pending.pop(b))
        work.record(b, parts[b])
        parts[b] = work.kept(parts[b])
    if not parts and not done and work.in_shard is not None:
        raise AdvlabError("no batch to evaluate: work.in_shard selected none and work.done holds none")
    parts.update({b: r for b, r in done.items() if b not in parts})
    return merge([parts[b] for b in sorted(parts)], plan, time.perf_counter() - t0)


def merge(parts: Sequence[BatchResult], plan: Plan | Mapping[str, Any], seconds: float = 0.0) -> EvalReport:
    """One report from the per-batch results of an evaluation (in batch order) and its plan (a :class:`Plan`, or
    its :meth:`Plan.record` as saved in a run): reads the results, calls no model."""
    if isinstance(plan, Plan):
        return summarize(parts, plan.attacks, plan.shown_eps, plan.shown_norm, seconds)
    attacks = [RecordedAttack(a["label"], a["config"]) for a in plan["attacks"]]
    return summarize(parts, attacks, plan["eps"], plan["norm"], seconds)
