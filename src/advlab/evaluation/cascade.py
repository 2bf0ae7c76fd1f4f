"""The robust-flag cascade (as in AutoAttack), one batch at a time.

Per batch: one clean pass sets an "unbroken" flag on every sample to attack; then each attack runs only on the
samples still unbroken, and a sample is broken (its flag goes False, never back) by the first attack that changes
its clean prediction with a perturbation inside the threat model (||x_adv - x||_norm <= eps, x_adv in [0, 1]).
A broken sample keeps that attack's x_adv: the worst case per sample over the ensemble. By default only
clean-correct labelled samples are attacked; ``attack_misclassified=True`` also attacks the others, away from
their (wrong) clean prediction. Unlabelled samples (y = -1) are never attacked.

Every attack is run untargeted against the clean prediction, so "success" here means the prediction changed:
the attack's returned point is judged by the plan's ``judge`` called as a user calls it (its own mode, under
``torch.no_grad``), and counts only when that prediction differs, the point lies in the ball (a float tolerance)
and in the [0, 1] box; what the attack itself claims is not counted. So the robust accuracy is the accuracy
recomputed from the kept adversarial examples. :mod:`advlab.evaluation.metrics` turns the per-sample columns of
:class:`BatchResult` into rates.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field

import torch

from advlab.attacks.apgd import APGD
from advlab.attacks.base import Attack
from advlab.attacks.blackbox import Square
from advlab.attacks.noise import RandomNoise
from advlab.evaluation import checks as sanity_checks
from advlab.evaluation import gradients, indicators, metrics, probes
from advlab.evaluation.diagnostics import Ball, Plan, success_ball
from advlab.evaluation.views import AttackView, FiniteDifferences, GaussianSmoothed, log_probabilities
from advlab.losses import margin
from advlab.threat import distance

#: the smoothed stage (:func:`_smoothed_stage`): the Gaussian noise's per-pixel sigma as fractions of the ball's
#: per-pixel radius (one view each), and APGD's steps per loss and view
SMOOTHING, SMOOTHED_STEPS = (0.1, 0.2), 50


@dataclass
class BatchResult:
    """Per-sample outcome of the cascade on one batch (CPU tensors), plus per-attack totals and check counts.

    ``broken_by``: index of the attack that broke the sample (``len(attacks)`` = the noise check, ``len(attacks) + 1``
    = the gradient-free stage, ``+ 2`` the longer runs, ``+ 3`` the smoothed APGD), -1 if none.
    ``adv_pred``: the prediction on the sample's worst case (the clean prediction where nothing broke it).
    ``l0``/``l2``/``linf``: norms of x_adv - x in [0, 1] pixel units (0 where unbroken).
    ``attack_stats``: (A + 4, 5) rows of attacked, broken, forwards, backwards, seconds (the last four rows: the noise
    check, the gradient-free stage with its more runs, the longer runs of the attacks whose loss was still improving,
    whose breaks are ``broken_by`` = ``len(attacks) + 2``, and the smoothed stage on unstable predictions,
    ``len(attacks) + 3``; a run saved before the smoothed stage existed has A + 3 rows).
    ``expected_clean``/``expected_robust``: for a randomized model, the fraction of ``draws`` fresh forwards in which
    the sample is right on the clean input / right on both the clean input and its worst case (one draw each);
    ``always_robust``: right on both in every draw. For a deterministic model they are the 0/1 outcomes.
    ``indicators``: per sample, the indicators of attack failure that fired on it (bits of
    :mod:`advlab.evaluation.indicators`).
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
    expected_clean: torch.Tensor
    expected_robust: torch.Tensor
    always_robust: torch.Tensor
    indicators: torch.Tensor
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


def inside(delta: torch.Tensor, ball: Ball | None) -> torch.Tensor:
    """Per sample, ``||delta||_norm <= eps`` (with a float tolerance); all True without a ball."""
    if ball is None:
        return torch.ones(len(delta), dtype=torch.bool, device=delta.device)
    eps, norm = ball
    return distance(delta, norm).to(delta.device) <= eps * (1 + 1e-5) + 1e-6


def in_box(x: torch.Tensor) -> torch.Tensor:
    """Per sample, whether every pixel of ``x`` lies in [0, 1]."""
    flat = x.flatten(1)
    return (flat >= 0).all(1) & (flat <= 1).all(1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _State:
    """The cascade's running state on one batch: device tensors, except the CPU counters."""

    plan: Plan
    x: torch.Tensor
    clean_logits: torch.Tensor
    clean_pred: torch.Tensor
    attacked: torch.Tensor
    unbroken: torch.Tensor
    x_adv: torch.Tensor
    adv_logits: torch.Tensor
    broken_by: torch.Tensor  # CPU
    forwards: torch.Tensor  # CPU
    backwards: torch.Tensor  # CPU
    stats: torch.Tensor  # CPU, (A + 4, 5)
    indicators: torch.Tensor  # CPU, bits of advlab.evaluation.indicators
    #: per sample, the highest untargeted margin (max_{j != y} z_j - z_y) at the white-box attacks' returned points,
    #: and the margin at the last attack's returned point (device tensors, -inf where not attacked)
    attack_margin: torch.Tensor
    last_margin: torch.Tensor
    #: a randomized model: a sample the attacks did not break keeps, as its worst case (where the expected accuracy
    #: over draws is measured), the attacks' point with the highest margin on the judge (the EOT logits), not its
    #: clean image; ``kept_margin`` is that point's margin (-inf: none kept yet)
    kept_margin: torch.Tensor | None = None
    #: per white-box attack (by index), the samples it left unbroken with its loss still improving (device bool)
    incomplete: dict[int, torch.Tensor] = field(default_factory=dict)
    #: the model outputs probabilities: margins are taken of their logarithm (the logits' margins, as the attacks
    #: see them)
    probabilities: bool = False

    def margin(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The untargeted margin ``max_{j != y} z_j - z_y`` of the outputs (of log p for probabilities), float32."""
        z = outputs.float()
        return margin(log_probabilities(z) if self.probabilities else z, labels)


def _clean_pass(plan: Plan, x: torch.Tensor, y: torch.Tensor) -> _State:
    """One no-grad forward of the judge on the clean batch; the samples to attack start unbroken."""
    n = len(x)
    with torch.no_grad():
        clean = plan.judge(x)
    probes.require_finite(clean)
    clean_pred = clean.argmax(1)
    attacked = ((clean_pred == y) | plan.config.attack_misclassified) & metrics.labelled(y)
    return _State(
        plan=plan,
        x=x,
        clean_logits=clean,
        clean_pred=clean_pred,
        attacked=attacked,
        unbroken=attacked.clone(),
        x_adv=x.detach().clone(),
        adv_logits=clean.detach().clone(),
        broken_by=torch.full((n,), -1, dtype=torch.long),
        forwards=torch.ones(n, dtype=torch.long),
        backwards=torch.zeros(n, dtype=torch.long),
        stats=torch.zeros(len(plan.attacks) + 4, 5, dtype=torch.float64),
        indicators=torch.zeros(n, dtype=torch.long),
        attack_margin=torch.full((n,), -torch.inf, device=x.device),
        last_margin=torch.full((n,), -torch.inf, device=x.device),
    )


@dataclass
class _Search:
    """One attack's answer on the unbroken samples: its returned points, the judge's no-grad outputs there, what it
    claimed (its own success), the closest goal-meeting point on its path (``seen``, None: none) with its distance,
    and its cost (CPU counters, the judging forwards counted)."""

    found: torch.Tensor
    judged: torch.Tensor
    claimed: torch.Tensor
    seen: torch.Tensor | None
    seen_distance: torch.Tensor | None
    still_improving: torch.Tensor | None
    forwards: torch.Tensor
    backwards: torch.Tensor


def _search(atk: Attack, plan: Plan, x: torch.Tensor, labels: torch.Tensor, on: AttackView | None = None) -> _Search:
    """``atk`` away from ``labels`` on ``x``, run on ``plan.attacked`` (or the view ``on``), each returned point judged
    by ``plan.judge`` as a user calls it (no grad).

    When the attacks run on a model of the user's (``attack_model``, e.g. :class:`advlab.zoo.Autocast`: not one of
    the evaluation's own views), a success it claims that the judge does not confirm is searched again on the judge
    itself (the reduced-precision search stopped early there)."""
    res = atk(plan.attacked if on is None else on, x, labels)
    found = res.x_adv.to(x.dtype)
    forwards, backwards = res.forwards.cpu().clone() + 1, res.backwards.cpu().clone()
    with torch.no_grad():  # the verdict: the model as a user calls it
        judged = plan.judge(found)
    claimed = res.success.to(x.device)
    out = _Search(found, judged, claimed, res.seen, res.seen_distance, res.still_improving, forwards, backwards)
    if on is not None or plan.attacked is plan.judge or isinstance(plan.attacked, AttackView):
        return out
    retry = (claimed & (judged.argmax(1) == labels)).nonzero().flatten()
    if len(retry):
        again = atk(plan.judge, x[retry], labels[retry])
        out.found, out.judged = found.clone(), judged.clone()
        out.found[retry] = again.x_adv.to(found.dtype)
        with torch.no_grad():
            out.judged[retry] = plan.judge(out.found[retry]).to(judged.dtype)
        forwards[retry.cpu()] += again.forwards.cpu() + 1
        backwards[retry.cpu()] += again.backwards.cpu()
    return out


def _silent_successes(s: _State, r: _Search, idx: torch.Tensor, ok: torch.Tensor, ball: Ball | None) -> None:
    """Where the returned point is no success but the attack saw a goal-meeting point on its path, judge that point:
    a success there (inside the ball and the box) is kept (``ok``, ``r.found`` and ``r.judged`` updated) and the
    sample marked with :data:`~advlab.evaluation.indicators.SILENT_SUCCESS`."""
    if r.seen is None or r.seen_distance is None:
        return
    cand = (~ok & torch.isfinite(r.seen_distance).to(ok.device)).nonzero().flatten()
    if len(cand) == 0:
        return
    pts = r.seen[cand].to(r.found.dtype)
    with torch.no_grad():
        z = s.plan.judge(pts)
    r.forwards[cand.cpu()] += 1
    good = (z.argmax(1) != s.clean_pred[idx[cand]]) & inside(pts - s.x[idx[cand]], ball) & in_box(pts)
    keep = cand[good]
    r.found[keep], r.judged[keep] = pts[good], z[good].to(r.judged.dtype)
    ok[keep] = True
    s.indicators[idx[keep].cpu()] |= indicators.SILENT_SUCCESS


def _attempt(
    s: _State, i: int, atk: Attack, ball: Ball | None, only: torch.Tensor | None = None, on: AttackView | None = None
) -> int:
    """Attack ``i`` on the unbroken samples (``only``: those of them it marks; ``on``: run on that view of the model
    instead of ``plan.attacked``); the ones whose returned point (or a point seen on its path: a silent success) the
    judge misclassifies inside ``ball`` and the box are broken. A
    success the attack claimed that the judge does not confirm marks
    :data:`~advlab.evaluation.indicators.TRANSFER_FAILURE`; a sample left unbroken whose loss was still improving
    at the end, :data:`~advlab.evaluation.indicators.INCOMPLETE_OPTIMIZATION`. Returns how many broke."""
    idx = (s.unbroken if only is None else s.unbroken & only).nonzero().flatten()
    if len(idx) == 0:
        return 0
    _sync(s.x.device)
    t0 = time.perf_counter()
    r = _search(atk, s.plan, s.x[idx], s.clean_pred[idx], on)
    _sync(s.x.device)
    valid = inside(r.found - s.x[idx], ball) & in_box(r.found)
    ok = (r.judged.argmax(1) != s.clean_pred[idx]) & valid
    # (not on a randomized model: its judge disagrees with the attack's own draws by chance; nor on a remedy's
    # smoothed view: a surrogate by design)
    if s.plan.draws <= 1 and on is None:
        s.indicators[idx[r.claimed & valid & ~ok].cpu()] |= indicators.TRANSFER_FAILURE
    _silent_successes(s, r, idx, ok, ball)
    # (not on a randomized model: an EOT loss is noisy, and EOT attacks run their full budget already)
    if r.still_improving is not None and atk.white_box and only is None and on is None and s.plan.draws <= 1:
        rising = idx[r.still_improving.to(ok.device) & ~ok]
        s.indicators[rising.cpu()] |= indicators.INCOMPLETE_OPTIMIZATION
        if len(rising):
            s.incomplete[i] = torch.zeros_like(s.unbroken).index_fill_(0, rising, True)
    found, judged, forwards, backwards = r.found, r.judged, r.forwards, r.backwards
    hit = idx[ok]
    s.last_margin[idx] = s.margin(judged, s.clean_pred[idx]).to(s.last_margin.dtype)
    if atk.white_box:
        s.attack_margin[idx] = torch.maximum(s.attack_margin[idx], s.last_margin[idx])
    if s.plan.draws > 1 and atk.white_box:  # inside the ball, not broken: the most adversarial point in expectation
        if s.kept_margin is None:
            s.kept_margin = torch.full((len(s.x),), -torch.inf, device=s.x.device)
        tried = valid & ~ok & (s.last_margin[idx] > s.kept_margin[idx])
        s.x_adv[idx[tried]] = found[tried].to(s.x_adv.dtype)
        s.kept_margin[idx[tried]] = s.last_margin[idx[tried]]
    s.x_adv[hit], s.adv_logits[hit] = found[ok].to(s.x_adv.dtype), judged[ok].to(s.adv_logits.dtype)
    s.broken_by[hit.cpu()] = i
    s.unbroken[hit] = False
    s.forwards[idx.cpu()] += forwards
    s.backwards[idx.cpu()] += backwards
    cost = torch.tensor([len(idx), len(hit), int(forwards.sum()), int(backwards.sum()), time.perf_counter() - t0])
    s.stats[i] += cost  # (the longer runs of several attacks share one row)
    return len(hit)


def _first_ball(plan: Plan) -> tuple[Ball | None, int]:
    """The first attack's success ball and seed: where the noise check, the probe and the gradient-free stage search."""
    if not plan.attacks:
        return None, 0
    first = plan.attacks[0]
    return success_ball(first, plan.config.eps, plan.norm), getattr(first, "seed", 0)


def _noise_check(s: _State, i: int, ball: Ball | None, seed: int) -> dict[str, float]:
    """Random noise in the first attack's ball (its seed) on the samples the white-box attacks left unbroken, and on
    the same samples the steps check: whether the white-box attacks' points raised the margin loss clearly more
    than the best random point (:func:`advlab.evaluation.gradients.weak_steps`). It is the cascade's attack ``i``."""
    if ball is None:
        return {}
    noise = RandomNoise(eps=ball[0], norm=ball[1], tries=sanity_checks.NOISE_TRIES, seed=seed)
    idx = s.unbroken.nonzero().flatten()
    out = {
        "noise_tried": float(len(idx)),
        "noise_broke": float(_attempt(s, i, noise, ball)),
    }
    if len(idx):
        clean = s.margin(s.clean_logits[idx], s.clean_pred[idx]).to(s.last_margin.dtype)
        weak = gradients.weak_steps(clean, s.attack_margin[idx], s.last_margin[idx])
        out.update(steps_checked=float(len(idx)), steps_weak=float(weak.sum()))
    return out


def _gradient_probe(s: _State, ball: Ball | None) -> dict[str, float]:
    """The finite-difference check (:func:`advlab.evaluation.gradients.finite_difference_disagreement`) on the
    gradients the attacks followed, lazily: only on samples the attacks left standing (a broken sample needs no
    doubt), :data:`~advlab.evaluation.gradients.PROBE_CHUNK` at a time, stopping as soon as the check fails, and
    on at most :data:`~advlab.evaluation.gradients.SAMPLES`; its cost counted per probed sample."""
    idx = s.unbroken.nonzero().flatten()[: gradients.SAMPLES]
    if len(idx) == 0:
        return {}
    radius = gradients.pixel_radius(ball[0], ball[1], s.x) if ball is not None else None
    values: list[torch.Tensor] = []
    unreliable = forwards = 0
    for start in range(0, len(idx), gradients.PROBE_CHUNK):
        part = idx[start : start + gradients.PROBE_CHUNK]
        d = gradients.finite_difference_disagreement(s.plan.attacked, s.x[part], s.clean_pred[part], radius)
        s.forwards[part.cpu()] += d.forwards
        forwards += d.forwards * len(part)
        s.backwards[part.cpu()] += d.backwards
        values.append(d.per_sample)
        unreliable += int(d.unreliable.sum())
        if gradients.fd_failed(unreliable):
            break
    per_sample = torch.cat(values)
    bad = per_sample > gradients.FD_THRESHOLD
    shown = per_sample[bad] if bool(bad.any()) else per_sample
    return {
        "fd_checked": float(len(per_sample)),
        "fd_unreliable": float(unreliable),
        "fd_disagreement": float(shown.median()),
        "fd_forwards": float(forwards),
    }


def _stability_probe(s: _State, ball: Ball | None, seed: int) -> dict[str, float]:
    """The stability probe (:func:`advlab.evaluation.gradients.instability`, steps along the gradient of a fortieth
    of the first attack's ball) on the model the attacks ran on, at every sample left unbroken, a chunk at a time;
    each unstable one is marked :data:`~advlab.evaluation.indicators.UNSTABLE_PREDICTIONS` (the bits stay only when
    the batch has enough of them for the remedy: :func:`advlab.evaluation.gradients.unstable_failed`)."""
    idx = s.unbroken.nonzero().flatten()
    radius = gradients.pixel_radius(gradients.UNSTABLE_RADIUS * ball[0], ball[1], s.x) if ball is not None else None
    if len(idx) == 0 or radius is None:
        return {}
    unstable = []
    forwards = 0
    for start in range(0, len(idx), gradients.STABILITY_CHUNK):
        part = idx[start : start + gradients.STABILITY_CHUNK]
        probe = gradients.instability(s.plan.attacked, s.x[part], s.clean_pred[part], radius, seed=seed + start)
        s.forwards[part.cpu()] += probe.forwards
        s.backwards[part.cpu()] += probe.backwards
        forwards += probe.forwards * len(part)
        unstable.append(probe.unstable)
    flags = torch.cat(unstable)
    if gradients.unstable_failed(float(flags.sum()), float(len(idx))):
        s.indicators[idx.cpu()[flags]] |= indicators.UNSTABLE_PREDICTIONS
    return {
        "stability_probed": float(len(idx)),
        "stability_unstable": float(flags.sum()),
        "stability_forwards": float(forwards),
    }


def _more_queries(s: _State, i: int, square: Square) -> dict[str, float]:
    """Gradient-free search with more queries: after ``square`` (the gradient-free stage's first run, or the Square
    that replaced the attacks of a model with no gradient path), up to
    :data:`~advlab.evaluation.indicators.MORE_QUERY_RUNS` more runs of it (as many queries) with fresh seeds
    ``square.seed + 1, ...`` on the samples still unbroken, stopping after a run that breaks none. It is the
    cascade's attack ``i`` (the row of ``square``)."""
    ball = success_ball(square, s.plan.config.eps, s.plan.norm)
    runs = broke = 0
    for k in range(1, indicators.MORE_QUERY_RUNS + 1):
        if not bool(s.unbroken.any()):
            break
        runs += 1
        more = _attempt(s, i, dataclasses.replace(square, seed=square.seed + k), ball)
        broke += more
        if more == 0:
            break
    return {"more_queries_runs": float(runs), "more_queries_broke": float(broke)}


def _gradient_free_stage(s: _State, i: int, ball: Ball | None, seed: int) -> dict[str, float]:
    """Square (:data:`advlab.evaluation.gradients.GRADIENT_FREE_QUERIES` queries per image, the first attack's ball and
    seed) on the samples still unbroken, then :func:`_more_queries`; what they broke counts as ``black_box_broke``
    too. Nothing without an L-inf or L2 ball. It is the cascade's attack ``i``."""
    if ball is None or ball[1] not in ("linf", "l2") or not bool(s.unbroken.any()):
        return {}
    square = Square(eps=ball[0], norm=ball[1], max_queries=gradients.GRADIENT_FREE_QUERIES, seed=seed)
    tried = float(s.unbroken.sum())
    out = {"gradient_free_tried": tried, "gradient_free_broke": float(_attempt(s, i, square, ball))}
    return {**out, **_more_queries(s, i, square)}


def _smoothed_stage(s: _State, ball: Ball | None, seed: int) -> dict[str, float]:
    """The first remedy of :data:`~advlab.evaluation.indicators.UNSTABLE_PREDICTIONS` (before the gradient-free
    stage): APGD with the cross-entropy, then with the margin loss, :data:`SMOOTHED_STEPS` steps each, on
    :class:`~advlab.evaluation.views.GaussianSmoothed` views of the attacked model, per pixel sigma a fraction
    :data:`SMOOTHING` of the ball's (:func:`advlab.evaluation.gradients.pixel_radius`), on the samples still
    unbroken; every success judged on the model as called. It is the cascade's attack ``len(attacks) + 3``."""
    unstable = (s.indicators.to(s.unbroken.device) & indicators.UNSTABLE_PREDICTIONS) != 0
    if ball is None or ball[1] not in ("linf", "l2") or not bool((unstable & s.unbroken).any()):
        return {}
    radius = gradients.pixel_radius(ball[0], ball[1], s.x)
    assert radius is not None
    i, tried, broke = len(s.plan.attacks) + 3, float(s.unbroken.sum()), 0
    for fraction in SMOOTHING:
        view = GaussianSmoothed(s.plan.attacked, fraction * radius, seed=seed)
        for loss in ("ce", "margin"):
            atk = APGD(eps=ball[0], norm=ball[1], steps=SMOOTHED_STEPS, loss=loss, seed=seed)
            broke += _attempt(s, i, atk, ball, on=view)
    return {"smoothed_tried": tried, "smoothed_broke": float(broke)}


def _fallback_queries(s: _State) -> dict[str, float]:
    """A model with no gradient path: every sample's gradients are unavailable
    (:data:`~advlab.evaluation.indicators.UNAVAILABLE_GRADIENTS`, set on those left unbroken) and the Square that
    replaced the gradient attacks (:func:`advlab.evaluation.diagnostics.fallback`) is the whole search, so it gets
    the remedy of more queries (:func:`_more_queries`, on its row)."""
    for i, square in enumerate(s.plan.attacks):
        if isinstance(square, Square):
            s.indicators[s.unbroken.cpu()] |= indicators.UNAVAILABLE_GRADIENTS
            return _more_queries(s, i, square)
    return {}


def _over_draws(s: _State, y: torch.Tensor, adv_pred: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(expected clean correctness, expected robustness, robust in every draw) per sample, over ``plan.draws`` fresh
    no-grad forwards of a randomized model on the clean and the worst-case inputs (each counted in ``s.forwards``)."""
    draws, model = s.plan.draws, s.plan.model
    if draws <= 1:
        robust = metrics.robust(y, s.clean_pred, adv_pred)
        return metrics.clean_correct(y, s.clean_pred).float(), robust.float(), robust
    clean_hits = torch.zeros(len(y), device=y.device)
    robust_hits = torch.zeros(len(y), device=y.device)
    with torch.no_grad():
        for _ in range(draws):
            clean_draw = model(s.x).argmax(1)
            clean_hits += metrics.clean_correct(y, clean_draw).float()
            robust_hits += metrics.robust(y, clean_draw, model(s.x_adv).argmax(1)).float()
    s.forwards += 2 * draws
    return clean_hits / draws, robust_hits / draws, robust_hits == draws


def _result(s: _State, y: torch.Tensor, checks: dict[str, float]) -> BatchResult:
    """The per-sample columns of the finished cascade, on the CPU."""
    adv_pred = torch.where(s.broken_by.to(s.x.device) >= 0, s.adv_logits.argmax(1), s.clean_pred)
    expected_clean, expected_robust, always = _over_draws(s, y, adv_pred)
    d = (s.x_adv - s.x).detach()
    return BatchResult(
        y=y.cpu(),
        clean_pred=s.clean_pred.cpu(),
        adv_pred=adv_pred.cpu(),
        clean_confidence=metrics.confidence(s.clean_logits).cpu(),
        adv_confidence=metrics.confidence(s.adv_logits, adv_pred).cpu(),
        attacked=s.attacked.cpu(),
        broken_by=s.broken_by,
        l0=distance(d, "l0").cpu().long(),
        l2=distance(d, "l2").cpu(),
        linf=distance(d, "linf").cpu(),
        forwards=s.forwards,
        backwards=s.backwards,
        attack_stats=s.stats,
        expected_clean=expected_clean.cpu(),
        expected_robust=expected_robust.cpu(),
        always_robust=always.cpu(),
        indicators=s.indicators,
        checks=checks,
        x_adv=s.x_adv.cpu() if s.plan.config.keep_adversarials else None,
    )


def _zero_gradient_check(s: _State) -> dict[str, float]:
    """:func:`advlab.evaluation.checks.zero_gradient_check` on the model the attacks ran on; each sample whose gradient
    is all zero is marked :data:`~advlab.evaluation.indicators.UNAVAILABLE_GRADIENTS`."""
    checks, zero = sanity_checks.zero_gradient_check(
        s.plan.attacked, s.x, s.clean_pred, s.unbroken, s.forwards, s.backwards
    )
    s.indicators[zero] |= indicators.UNAVAILABLE_GRADIENTS
    return checks


def _unconstrained_check(s: _State) -> dict[str, float]:
    """The first white-box attack with an unbounded ball (:func:`advlab.evaluation.indicators.unbounded`) on up to
    :data:`~advlab.evaluation.indicators.UNCONSTRAINED_SAMPLES` unbroken samples; each whose prediction it still
    cannot change (judged as always, at its returned point or at any point on its path) is marked
    :data:`~advlab.evaluation.indicators.UNCONSTRAINED_FAILURE`."""
    white = [a for a in s.plan.attacks if a.white_box]
    idx = s.unbroken.nonzero().flatten()[: indicators.UNCONSTRAINED_SAMPLES]
    atk = indicators.unbounded(white[0], white[0].threat_norm, s.x[0].numel()) if white and len(idx) else None
    if atk is None:
        return {}
    r = _search(atk, s.plan, s.x[idx], s.clean_pred[idx])
    s.forwards[idx.cpu()] += r.forwards
    s.backwards[idx.cpu()] += r.backwards
    moved = (r.judged.argmax(1) != s.clean_pred[idx]) & in_box(r.found)
    if r.seen_distance is not None:  # the goal met on its path: its gradients did guide it
        moved |= torch.isfinite(r.seen_distance).to(moved.device)
    failed = ~moved
    s.indicators[idx[failed].cpu()] |= indicators.UNCONSTRAINED_FAILURE
    return {
        "unconstrained_tried": float(len(idx)),
        "unconstrained_failed": float(failed.sum()),
        "unconstrained_forwards": float(r.forwards.sum()),
    }


def _longer_runs(s: _State) -> dict[str, float]:
    """The remedy of :data:`~advlab.evaluation.indicators.INCOMPLETE_OPTIMIZATION`: each white-box attack that left
    samples unbroken with their loss still rising runs again on those still unbroken, with
    :data:`~advlab.evaluation.indicators.MORE_STEPS` times its steps (an attack without ``steps``: again as it is,
    with another seed)."""
    out: dict[str, float] = {}
    for i, rising in sorted(s.incomplete.items()):
        atk = indicators.longer(s.plan.attacks[i])
        if atk is None or not bool((rising & s.unbroken).any()):
            continue
        out["longer_tried"] = out.get("longer_tried", 0.0) + float((rising & s.unbroken).sum())
        ball = success_ball(s.plan.attacks[i], s.plan.config.eps, s.plan.norm)
        broke = _attempt(s, len(s.plan.attacks) + 2, atk, ball, only=rising)
        out["longer_broke"] = out.get("longer_broke", 0.0) + broke
    return out


def _gradient_checks(s: _State, ball: Ball | None, seed: int, white_box_ran: bool) -> dict[str, float]:
    """The checks after the attacks (with ``config.sanity``): the noise and steps checks, the zero-gradient check,
    the unconstrained attack (a deterministic model), and the finite-difference probe when nothing has cast doubt on
    the gradients yet and they are the model's own (not straight-through, BPDA or EOT surrogates, whose finite
    differences mean nothing)."""
    plan = s.plan
    checks: dict[str, float] = {}
    if white_box_ran:
        checks.update(_noise_check(s, len(plan.attacks), ball, seed))
    checks.update(_zero_gradient_check(s))
    if white_box_ran and plan.draws <= 1:
        checks.update(_unconstrained_check(s))
    f = plan.findings
    own_gradients = not (f.straight_through or f.reattached or f.no_gradient_path) and plan.draws <= 1
    if white_box_ran and own_gradients and not sanity_checks.failed_gradient_checks(checks):
        checks.update(_gradient_probe(s, ball))
    if white_box_ran and own_gradients:
        checks.update(_stability_probe(s, ball, seed))
    return checks


def run_batch(plan: Plan, x: torch.Tensor, y: torch.Tensor, *, first: bool = True) -> BatchResult:
    """The cascade of ``plan`` (:func:`advlab.evaluation.diagnostics.diagnose`) on one batch: ``x`` on the models'
    device, in [0, 1]; ``y`` labels, -1 = unlabelled; ``first``: this is the evaluation's first batch (the
    randomness check runs on it).

    With ``plan.config.sanity`` the checks of :mod:`advlab.evaluation.checks` run after the attacks; when a gradient
    check of this batch fails (:func:`advlab.evaluation.checks.failed_gradient_checks`), or the plan found that the
    model's forward differs with autograd on or that its input leaves autograd (BPDA across it), a gradient-free
    stage (Square) attacks the samples still unbroken (not on a randomized model: EOT already ran, and each query
    would cost ``draws`` forwards).
    """
    s = _clean_pass(plan, x, y)
    s.probabilities = sanity_checks.is_probabilities(s.clean_logits)
    sanity = plan.config.sanity
    checks = sanity_checks.output_checks(plan.judge, x, s.clean_logits, first, s.forwards) if sanity else {}
    white_box_ran = False
    for i, atk in enumerate(plan.attacks):
        broke = _attempt(s, i, atk, success_ball(atk, plan.config.eps, plan.norm))
        if atk.white_box:
            white_box_ran = True
        elif white_box_ran and broke:
            checks["black_box_broke"] = checks.get("black_box_broke", 0.0) + broke
    if sanity:
        checks.update(_longer_runs(s))
    ball, seed = _first_ball(plan)
    if sanity:
        checks.update(_gradient_checks(s, ball, seed, white_box_ran))
    doubt = (
        plan.findings.grad_mode_differs
        or plan.findings.reattached
        or plan.findings.finite_differences
        or bool((s.indicators & indicators.NEED_GRADIENT_FREE).any())
        or (sanity and bool(sanity_checks.failed_gradient_checks(checks)))
    )
    if white_box_ran and plan.draws <= 1 and doubt:
        checks.update(_smoothed_stage(s, ball, seed))
        checks.update(_gradient_free_stage(s, len(plan.attacks) + 1, ball, seed))
        free = checks.get("gradient_free_broke", 0.0) + checks.get("more_queries_broke", 0.0)
        checks["black_box_broke"] = checks.get("black_box_broke", 0.0) + free
    elif plan.findings.no_gradient_path and plan.draws <= 1:
        checks.update(_fallback_queries(s))
    if isinstance(plan.attacked, FiniteDifferences):  # each backward through it: queries the attacks did not count
        s.forwards += s.backwards * plan.attacked.queries
    return _result(s, y, checks)
