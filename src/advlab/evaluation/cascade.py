"""The robust-flag cascade (as in AutoAttack), one batch at a time.

Per batch: one clean pass sets an "unbroken" flag on every sample to attack; then each attack runs only on the
samples still unbroken, and a sample is broken (its flag goes False, never back) by the first attack that changes
its clean prediction with a perturbation inside the threat model (||x_adv - x||_norm <= eps, x_adv in [0, 1]).
A broken sample keeps that attack's x_adv: the worst case per sample over the ensemble. By default only
clean-correct labelled samples are attacked; ``attack_misclassified=True`` also attacks the others, away from
their (wrong) clean prediction. Unlabelled samples (y = -1) are never attacked.

Every attack is run untargeted against the clean prediction, so "success" here means the prediction changed;
:mod:`advlab.evaluation.metrics` turns the per-sample columns of :class:`BatchResult` into rates.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from advlab.attacks.base import Attack
from advlab.attacks.blackbox import Square
from advlab.attacks.noise import RandomNoise
from advlab.evaluation import checks as sanity_checks
from advlab.evaluation import diagnostics, gradients, metrics
from advlab.losses import margin
from advlab.threat import distance

#: the ball a success must lie in: (eps in [0, 1] pixel units, norm name)
Ball = tuple[float, str]


@dataclass
class BatchResult:
    """Per-sample outcome of the cascade on one batch (CPU tensors), plus per-attack totals and check counts.

    ``broken_by``: index of the attack that broke the sample (``len(attacks)`` = the noise check, ``len(attacks) + 1``
    = the gradient-free stage), -1 if none.
    ``adv_pred``: the prediction on the sample's worst case (the clean prediction where nothing broke it).
    ``l0``/``l2``/``linf``: norms of x_adv - x in [0, 1] pixel units (0 where unbroken).
    ``attack_stats``: (A + 2, 5) rows of attacked, broken, forwards, backwards, seconds (the last two rows: the noise
    check and the gradient-free stage).
    ``expected_clean``/``expected_robust``: for a randomized model, the fraction of ``draws`` fresh forwards in which
    the sample is right on the clean input / right on both the clean input and its worst case (one draw each);
    ``always_robust``: right on both in every draw. For a deterministic model they are the 0/1 outcomes.
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


def success_ball(atk: Attack, eps: float | None, norm: str | None) -> Ball | None:
    """The ball a success must lie in: the evaluation's, else the attack's own largest eps, else none."""
    if eps is not None:
        return eps, norm or atk.threat_norm
    own = getattr(atk, "eps", None)
    if own is None:
        return None
    e = float(own) if isinstance(own, (int, float)) else max(float(v) for v in own)
    return e, atk.threat_norm


def inside(delta: torch.Tensor, ball: Ball | None) -> torch.Tensor:
    """Per sample, ``||delta||_norm <= eps`` (with a float tolerance); all True without a ball."""
    if ball is None:
        return torch.ones(len(delta), dtype=torch.bool, device=delta.device)
    eps, norm = ball
    return distance(delta, norm).to(delta.device) <= eps * (1 + 1e-5) + 1e-6


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class _State:
    """The cascade's running state on one batch: device tensors, except the CPU counters."""

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
    stats: torch.Tensor  # CPU, (A + 2, 5)
    #: per sample, the highest untargeted margin (max_{j != y} z_j - z_y) at the white-box attacks' returned points,
    #: and the margin at the last attack's returned point (device tensors, -inf where not attacked)
    attack_margin: torch.Tensor
    last_margin: torch.Tensor
    #: the model judging successes, and the one the attacks run on instead when given (see :func:`_search`)
    model: nn.Module
    attack_model: nn.Module | None
    #: a randomized model: a sample the attacks did not break keeps, as its worst case (where the expected accuracy
    #: over draws is measured), the attacks' point with the highest margin on the attack model (the EOT logits),
    #: not its clean image; ``kept_margin`` is that point's margin (-inf: none kept yet)
    keep_attempts: bool = False
    kept_margin: torch.Tensor | None = None
    #: the model outputs probabilities: margins are taken of their logarithm (the logits' margins, as the attacks
    #: see them)
    probabilities: bool = False

    def margin(self, outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The untargeted margin ``max_{j != y} z_j - z_y`` of the outputs (of log p for probabilities), float32."""
        z = outputs.float()
        return margin(z.clamp_min(torch.finfo(z.dtype).tiny).log() if self.probabilities else z, labels)


def _clean_pass(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    n_attacks: int,
    attack_misclassified: bool,
    attack_model: nn.Module | None,
) -> _State:
    """One forward on the clean batch; the samples to attack start unbroken."""
    n = len(x)
    with torch.no_grad():
        clean = model(x)
    diagnostics.require_finite(clean)
    clean_pred = clean.argmax(1)
    attacked = ((clean_pred == y) | attack_misclassified) & metrics.labelled(y)
    return _State(
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
        stats=torch.zeros(n_attacks + 2, 5, dtype=torch.float64),
        attack_margin=torch.full((n,), -torch.inf, device=x.device),
        last_margin=torch.full((n,), -torch.inf, device=x.device),
        model=model,
        attack_model=attack_model,
    )


def _search(
    atk: Attack, model: nn.Module, attack_model: nn.Module | None, x: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``atk`` away from ``labels`` on ``x``: (x_adv, logits, success, forwards, backwards), counters on the CPU.

    With ``attack_model`` the search runs on it and each success is re-checked on ``model`` (one more forward
    per sample); a claimed success that ``model`` does not confirm is searched again on ``model`` itself (the
    reduced-precision search stopped early there), and only the confirmed ones count.
    """
    res = atk(model if attack_model is None else attack_model, x, labels)
    found, logits, success = res.x_adv, res.logits, res.success.to(x.device)
    forwards, backwards = res.forwards.cpu().clone(), res.backwards.cpu().clone()
    if attack_model is None:
        return found, logits, success, forwards, backwards
    with torch.no_grad():  # the verdict is the model's own, in full precision
        logits = model(found.to(x.dtype))
    confirmed = logits.argmax(1) != labels
    forwards += 1
    retry = (success & ~confirmed).nonzero().flatten()
    if len(retry):
        again = atk(model, x[retry], labels[retry])
        found, logits = found.clone(), logits.clone()
        found[retry], logits[retry] = again.x_adv.to(found.dtype), again.logits.to(logits.dtype)
        confirmed[retry] = again.success.to(x.device)
        forwards[retry.cpu()] += again.forwards.cpu()
        backwards[retry.cpu()] += again.backwards.cpu()
    return found, logits, confirmed, forwards, backwards


def _attempt(s: _State, i: int, atk: Attack, ball: Ball | None) -> int:
    """Attack ``i`` on the unbroken samples; the ones it breaks inside ``ball`` are broken. Returns how many."""
    idx = s.unbroken.nonzero().flatten()
    if len(idx) == 0:
        return 0
    _sync(s.x.device)
    t0 = time.perf_counter()
    found, logits, success, forwards, backwards = _search(atk, s.model, s.attack_model, s.x[idx], s.clean_pred[idx])
    _sync(s.x.device)
    ok = success & inside(found - s.x[idx], ball)
    hit = idx[ok]
    s.last_margin[idx] = s.margin(logits, s.clean_pred[idx]).to(s.last_margin.dtype)
    if atk.white_box:
        s.attack_margin[idx] = torch.maximum(s.attack_margin[idx], s.last_margin[idx])
    if s.keep_attempts and atk.white_box:  # inside the ball, not broken: the most adversarial point in expectation
        if s.kept_margin is None:
            s.kept_margin = torch.full((len(s.x),), -torch.inf, device=s.x.device)
        tried = inside(found - s.x[idx], ball) & ~ok & (s.last_margin[idx] > s.kept_margin[idx])
        s.x_adv[idx[tried]] = found[tried].to(s.x_adv.dtype)
        s.kept_margin[idx[tried]] = s.last_margin[idx[tried]]
    s.x_adv[hit], s.adv_logits[hit] = found[ok].to(s.x_adv.dtype), logits[ok].to(s.adv_logits.dtype)
    s.broken_by[hit.cpu()] = i
    s.unbroken[hit] = False
    s.forwards[idx.cpu()] += forwards
    s.backwards[idx.cpu()] += backwards
    s.stats[i] = torch.tensor([len(idx), len(hit), int(forwards.sum()), int(backwards.sum()), time.perf_counter() - t0])
    return len(hit)


def _first_ball(attacks: Sequence[Attack], eps: float | None, norm: str | None) -> tuple[Ball | None, int]:
    """The first attack's success ball and seed: where the noise check and the gradient-free stage search."""
    return (success_ball(attacks[0], eps, norm), getattr(attacks[0], "seed", 0)) if attacks else (None, 0)


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


def _gradient_free_stage(s: _State, i: int, ball: Ball | None, seed: int) -> dict[str, float]:
    """Square (:data:`advlab.evaluation.gradients.GRADIENT_FREE_QUERIES` queries per image, the first attack's ball and
    seed) on the samples still unbroken; what it broke counts as ``black_box_broke`` too. Nothing without an L-inf
    or L2 ball. It is the cascade's attack ``i``."""
    if ball is None or ball[1] not in ("linf", "l2") or not bool(s.unbroken.any()):
        return {}
    square = Square(eps=ball[0], norm=ball[1], max_queries=gradients.GRADIENT_FREE_QUERIES, seed=seed)
    tried = float(s.unbroken.sum())
    broke = float(_attempt(s, i, square, ball))
    return {"gradient_free_tried": tried, "gradient_free_broke": broke}


def _over_draws(
    model: nn.Module, s: _State, y: torch.Tensor, adv_pred: torch.Tensor, draws: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(expected clean correctness, expected robustness, robust in every draw) per sample, over ``draws`` fresh
    forwards of a randomized model on the clean and the worst-case inputs (each counted in ``s.forwards``)."""
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


def _result(
    s: _State, model: nn.Module, y: torch.Tensor, checks: dict[str, float], keep_adversarials: bool, draws: int
) -> BatchResult:
    """The per-sample columns of the finished cascade, on the CPU."""
    adv_pred = torch.where(s.broken_by.to(s.x.device) >= 0, s.adv_logits.argmax(1), s.clean_pred)
    expected_clean, expected_robust, always = _over_draws(model, s, y, adv_pred, draws)
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
        checks=checks,
        x_adv=s.x_adv.cpu() if keep_adversarials else None,
    )


def run_batch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: Sequence[Attack],
    *,
    eps: float | None = None,
    norm: str | None = None,
    attack_misclassified: bool = False,
    sanity: bool = True,
    first: bool = True,
    keep_adversarials: bool = False,
    attack_model: nn.Module | None = None,
    draws: int = 1,
    draw_model: nn.Module | None = None,
    gradient_checks_failed: bool = False,
) -> BatchResult:
    """The cascade on one batch (``x`` on the model's device, in [0, 1]; ``y`` labels, -1 = unlabelled).

    ``eps``/``norm``: the ball a success must lie in (None: each attack's own). ``sanity``: run the checks of
    :mod:`advlab.evaluation.checks` (``first``: this is the first batch, so also the randomness check).
    ``attack_model``: the attacks run on it instead (e.g. :class:`advlab.zoo.Autocast` of ``model``) and only
    the successes ``model`` confirms count (see :func:`_search`). ``draws`` > 1 (a randomized model, ``model`` its
    EOT version judging the successes): the expected correctness columns come from that many fresh forwards of
    ``draw_model`` (the randomized model itself) on the clean and the worst-case inputs, and a sample the attacks
    did not break keeps their last point as its worst case. ``gradient_checks_failed``: a gradient check of the
    first batch's probe failed already (:mod:`advlab.evaluation.gradients`). With ``sanity``, when it did or when a
    gradient check of this batch fails (:func:`advlab.evaluation.checks.failed_gradient_checks`) a gradient-free
    stage (Square) attacks the samples still unbroken after every other attack and check (not on a randomized
    model: EOT already ran, and each query would cost ``draws`` forwards).
    """
    s = _clean_pass(model, x, y, len(attacks), attack_misclassified, attack_model)
    s.keep_attempts = draws > 1
    s.probabilities = sanity_checks.is_probabilities(s.clean_logits)
    checks = sanity_checks.output_checks(model, x, s.clean_logits, first, s.forwards) if sanity else {}
    white_box_ran = False
    for i, atk in enumerate(attacks):
        broke = _attempt(s, i, atk, success_ball(atk, eps, norm))
        if atk.white_box:
            white_box_ran = True
        elif white_box_ran and broke:
            checks["black_box_broke"] = checks.get("black_box_broke", 0.0) + broke
    ball, seed = _first_ball(attacks, eps, norm)
    if sanity and white_box_ran:
        checks.update(_noise_check(s, len(attacks), ball, seed))
    if sanity:
        checks.update(
            sanity_checks.zero_gradient_check(
                model if attack_model is None else attack_model, x, s.clean_pred, s.unbroken, s.forwards, s.backwards
            )
        )  # the gradients the attacks saw
    if (
        sanity
        and white_box_ran
        and draws <= 1
        and (gradient_checks_failed or sanity_checks.failed_gradient_checks(checks))
    ):
        checks.update(_gradient_free_stage(s, len(attacks) + 1, ball, seed))
        checks["black_box_broke"] = checks.get("black_box_broke", 0.0) + checks.get("gradient_free_broke", 0.0)
    return _result(s, model if draw_model is None else draw_model, y, checks, keep_adversarials, draws)
