"""``evaluate``: the cascade over every batch of the data, merged into one report."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab.attacks.base import keeps_model_state
from advlab.device import device_of
from advlab.errors import AdvlabError
from advlab.evaluation import active, cascade, diagnostics, probes
from advlab.evaluation.cascade import BatchResult
from advlab.evaluation.config import EvalConfig
from advlab.evaluation.diagnostics import Findings, Plan
from advlab.evaluation.inputs import Data, Source, source, to_device
from advlab.evaluation.summary import EvalReport, summarize
from advlab.evaluation.views import AttackView
from advlab.work import Work


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
    """The :class:`~advlab.evaluation.diagnostics.Plan` of an evaluation of ``model`` on ``data`` (see
    :func:`evaluate`): :func:`advlab.evaluation.diagnostics.diagnose` on a few samples of its first batch (whether or
    not a call evaluates that batch, so that every shard and every resume runs the same plan)."""
    cfg = EvalConfig.of(config, model)
    src = data if isinstance(data, Source) else source(model, data, cfg.batch_size, cfg.limit)
    first = src.first()
    x = None
    if first is not None:
        attacked = model if attack_model is None else attack_model
        x = to_device(first[0][: probes.PROBE_SAMPLES], device_of(attacked))
        _require_pixels(x)
    return diagnostics.diagnose(model, x, cfg, attack_model)


def _require_pixels(x: torch.Tensor) -> None:
    """Refuse images outside [0, 1] (a normalized tensor given where advlab expects pixels)."""
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise AdvlabError("images must be in [0, 1]; advlab models carry their own normalization")


def _run(plan: Plan, b: int, xb: torch.Tensor, yb: torch.Tensor) -> BatchResult:
    """The cascade on batch ``b`` (moved to the model's device); on the first, the active test too."""
    dev = device_of(plan.model)
    xb, yb = to_device(xb, dev), to_device(yb, dev).long()
    _require_pixels(xb)
    part = cascade.run_batch(plan, xb, yb, first=b == 0)
    if b == 0:
        part.checks.update(_active_test(plan, xb, part))
    return part


#: inner points per sample of the evaluation's active test: its cost is this many forwards per tested sample, plus the
#: attacks on the binary task (on efficientnet-lite0 with the 4 sample photos at 255 points the test took 35x the
#: evaluation without it; at 63, ...)
ACTIVE_INNER_POINTS = 63


def _active_test(plan: Plan, x: torch.Tensor, part: BatchResult) -> dict[str, float]:
    """The active test (:func:`advlab.evaluation.active.active_test`) of the plan's own attacks on the first
    ``config.active_test`` samples, as checks (``active_tested``, ``active_found``, ``active_skipped``): the binarized
    model runs under the plan its findings make (the same views, BPDA, log-probabilities), the cascade's attacks without
    its checks; its cost is counted in ``part``'s first samples. Not run without an eps ball in L-inf, L2 or L1, on a
    randomized model (each EOT attack costs its draws), when the attacks fell back to gradient-free search, or when they
    run on a model of the user's (``attack_model``: a twin or a reduced precision, which the binary task cannot be built
    on)."""
    cfg, found = plan.config, plan.findings
    ball = diagnostics.success_ball(plan.attacks[0], cfg.eps, plan.norm) if plan.attacks else None
    if not cfg.active_test or ball is None or ball[1] not in ("linf", "l2", "l1"):
        return {}
    own_view = plan.attacked is plan.model or isinstance(plan.attacked, AttackView)  # not the user's attack_model
    if found.randomized or found.no_gradient_path or not own_view or not any(a.white_box for a in plan.attacks):
        return {}
    sub = dataclasses.replace(cfg, sanity=False, keep_adversarials=True, active_test=0)
    cost = torch.zeros(2, dtype=torch.long)

    def run_attacks(binary: nn.Module, xs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ran = cascade.run_batch(diagnostics.plan_for(binary, sub, found), xs, labels, first=False)
        assert ran.x_adv is not None
        cost[0] += int(ran.forwards.sum())
        cost[1] += int(ran.backwards.sum())
        return ran.x_adv.to(xs.device)

    result = active.active_test(
        plan.model, x, ball[0], ball[1], run_attacks, samples=cfg.active_test, inner_points=ACTIVE_INNER_POINTS
    )
    k = min(len(x), cfg.active_test)
    part.forwards[:k] += (result.forwards + int(cost[0])) // max(1, k)
    part.backwards[:k] += int(cost[1]) // max(1, k)
    return {
        "active_tested": float(result.tested),
        "active_found": float(result.found),
        "active_skipped": float(result.skipped),
    }


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
    ``work.progress`` wraps the batch indices (a progress bar), ``work.plan`` a plan saved earlier
    (:meth:`Plan.record`: reused without probing again; otherwise the plan made here is handed to
    ``work.record_plan``). A batch's result depends only on its samples, the plan and the seed.
    ``attack_model``: run the attacks on this model instead (e.g. ``zoo.Autocast(model)``: mixed precision), every
    success judged on ``model`` (see :func:`advlab.evaluation.cascade.run_batch`).
    Before the first batch :func:`prepare` (:mod:`advlab.evaluation.diagnostics`) looks at a few samples and adapts:
    NaN logits are refused, a model without a gradient path is attacked gradient-free, non-differentiable input ops
    get straight-through gradients, probability outputs are attacked as log-probabilities, a randomized model with
    EOT, and a forward that differs with autograd on ends every batch with a gradient-free stage
    (``report.findings``, ``report.adaptations``, ``report.warnings`` and ``report.trust`` say what was found, what
    was done and how far to trust the number); ``plan``: a plan made earlier by :func:`prepare` on the same model,
    data and config, used instead.
    """
    cfg = EvalConfig.of(config, model)
    work = work if work is not None else Work()
    t0 = time.perf_counter()
    src = source(model, data, cfg.batch_size, cfg.limit)
    if plan is None and work.plan is not None:
        plan = diagnostics.from_record(work.plan, model, cfg, attack_model)
    plan = plan if plan is not None else prepare(model, src, cfg, attack_model=attack_model)
    if work.plan is None:  # a run saves it (plan.json): a merge of its batches then needs no model
        work.record_plan(plan.record())
    parts: dict[int, BatchResult] = {}
    done = work.finished()
    pending: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def wanted() -> Iterator[int]:  # the batches this call evaluates, their data parked in ``pending``
        for b, xb, yb in src.select(lambda b: b not in done and (work.in_shard is None or work.in_shard(b))):
            pending[b] = (xb, yb)
            yield b

    for b in work.progress(wanted()) if work.progress is not None else wanted():
        parts[b] = _run(plan, b, *pending.pop(b))
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
        return summarize(parts, plan.attacks, plan.shown_eps, plan.shown_norm, seconds, plan.findings, plan.draws)
    attacks = [RecordedAttack(a["label"], a["config"]) for a in plan["attacks"]]
    findings = Findings.from_dict(plan.get("findings", {}))
    draws = int(plan.get("draws", diagnostics.ACCURACY_DRAWS))
    return summarize(parts, attacks, plan["eps"], plan["norm"], seconds, findings, draws)
