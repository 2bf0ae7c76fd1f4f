"""The one place for attack bookkeeping: targets, success, counting, box and ball, model flags, eps lists.

An attack is a frozen config; ``attack(model, x, y, target=None)`` runs it. Subclasses implement
``_attack(oracle, x, goal, eps, init)`` and return ``(x_adv, logits)``; everything else (resolving the
:class:`Goal`, restoring the model's flags, buffers and modes, quantizing, norms, counts, robustness curves)
lives here, with the bookkeeping every iterative attack shares: :class:`Best` (the most adversarial point seen
per sample) and :func:`restarts` (further runs on the samples still unbroken). Each attack class carries its
``name`` and registers itself with :func:`register`, which is how the catalog (and so the CLI) knows what exists.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, cast

import torch
from torch import nn

from advlab.losses import Loss, bind
from advlab.threat import NORMS, distance
from advlab.types import AttackResult

Target = int | torch.Tensor | str | None
#: what ``Attack._attack`` returns: ``(x_adv, the model's logits on x_adv)``
Found = tuple[torch.Tensor, torch.Tensor]
AttackType = TypeVar("AttackType", bound="type[Attack]")

#: every registered attack class by its ``name`` (filled by :func:`register`, read by ``catalog.attack_classes``)
REGISTRY: dict[str, type[Attack]] = {}


def register(cls: AttackType) -> AttackType:
    """Class decorator: list the attack ``cls`` under ``cls.name`` (a name may be registered once)."""
    name = cls.__dict__.get("name")
    if not isinstance(name, str) or not name or name == "attack":
        raise TypeError(f"{cls.__name__} needs its own class attribute name = '...' to be registered")
    if name in REGISTRY and REGISTRY[name] is not cls:
        raise TypeError(f"attack name {name!r} is taken by {REGISTRY[name].__name__}")
    REGISTRY[name] = cls
    return cls


class Oracle:
    """The model as an attack sees it: logits and input gradients, each call counted per sample.

    ``idx`` are the positions (in the original batch) of the rows being evaluated, so that per-sample
    forward/backward counts stay right when attacks shrink the batch to the samples still running;
    ``None`` means every row. The counts live on the batch's device (no host sync per step).
    """

    def __init__(self, model: nn.Module, n: int, device: torch.device | str | None = None) -> None:
        self.model = model
        self.forwards = torch.zeros(n, dtype=torch.long, device=device)
        self.backwards = torch.zeros(n, dtype=torch.long, device=device)
        self.witness: Witness | None = None

    def _rows(self, idx: torch.Tensor | None) -> torch.Tensor | None:
        """The rows of the whole batch that ``idx`` names (None: every row)."""
        return idx

    def observe(self, x: torch.Tensor, idx: torch.Tensor | None, logits: torch.Tensor) -> None:
        """Show the :class:`Witness` (when one watches) the points ``x`` of rows ``idx`` and their logits."""
        if self.witness is not None:
            self.witness.observe(x, self._rows(idx), logits)

    def count(self, idx: torch.Tensor | None, forwards: int, backwards: int = 0) -> None:
        if idx is None:
            self.forwards += forwards
            self.backwards += backwards
            return
        i = idx.to(self.forwards.device)
        self.forwards[i] += forwards
        if backwards:
            self.backwards[i] += backwards

    def logits(self, x: torch.Tensor, idx: torch.Tensor | None) -> torch.Tensor:
        with torch.no_grad():
            out = self.model(x)
        self.count(idx, 1)
        self.observe(x, idx, out)
        return out

    def grad(
        self,
        x: torch.Tensor,
        idx: torch.Tensor | None,
        objective: Callable[[torch.Tensor], torch.Tensor],
        create_graph: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, objective(logits) per sample, d sum(objective) / dx)`` in one forward and one backward."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            value = objective(logits)
            (g,) = torch.autograd.grad(value.sum(), x, create_graph=create_graph)
        self.count(idx, 1, 1)
        self.observe(x.detach(), idx, logits.detach())
        return logits.detach(), value.detach(), g

    def logit_grads(
        self, x: torch.Tensor, idx: torch.Tensor | None, classes: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, d z_k / dx)`` for the classes ``classes`` (N, K): one forward and K backwards.

        The gradients have shape (N, K, *x.shape[1:]); each sample is counted 1 forward and K backwards
        (DeepFool's linearization around the current point).
        """
        x = x.detach().requires_grad_(True)
        k = classes.shape[1]
        grads = []
        with torch.enable_grad():
            logits = self.model(x)
            for j in range(k):
                sel = logits.gather(1, classes[:, j : j + 1]).sum()
                (g,) = torch.autograd.grad(sel, x, retain_graph=j < k - 1)
                grads.append(g)
        self.count(idx, 1, k)
        self.observe(x.detach(), idx, logits.detach())
        return logits.detach(), torch.stack(grads, 1)

    def evaluate(
        self,
        x: torch.Tensor,
        idx: torch.Tensor | None,
        objective: Callable[[torch.Tensor], torch.Tensor],
        need_grad: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """:meth:`grad` when another step follows, else a gradient-free forward (an iterative attack's last iterate)."""
        if need_grad:
            return self.grad(x, idx, objective)
        logits = self.logits(x, idx)
        return logits, objective(logits), None


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on the model's parameters for the attack and restore each flag after.

    Attacks need d loss / d x only; with parameters frozen autograd neither computes nor stores anything
    for weight gradients, and the model's ``.grad`` fields are never touched.
    """
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Leave ``model`` as found: every buffer (BatchNorm running statistics and batch counts) gets its value back
    and every submodule its train/eval flag, whatever the forwards inside did.

    A model left in train mode is attacked as it is (batch statistics, dropout), but the attack's forwards do
    not move its running statistics: before this, one PGD call changed 60 buffers of a cifar-resnet18.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        for m, flag in modes:
            m.training = flag


Fn = TypeVar("Fn", bound=Callable[..., Any])


def keeps_model_state(fn: Fn) -> Fn:
    """Decorator: run ``fn(model, ...)`` under :func:`preserved_state` of its first argument."""

    @functools.wraps(fn)
    def wrapper(model: nn.Module, *args: Any, **kwargs: Any) -> Any:
        with preserved_state(model):
            return fn(model, *args, **kwargs)

    return cast(Fn, wrapper)


def is_success(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == labels if targeted else pred != labels


@dataclass(frozen=True, slots=True)
class Goal:
    """What an attack aims at, per row of its batch: ``labels`` are the true classes (untargeted: make the
    argmax differ) or the targets (``targeted``: make the argmax equal); ``y_true`` are always the true classes
    (-1 where a sample has none), which targeted DLR needs."""

    labels: torch.Tensor
    targeted: bool
    y_true: torch.Tensor

    def rows(self, idx: torch.Tensor | None) -> Goal:
        """The goal of the rows ``idx`` of the batch (None: every row, this goal itself)."""
        return self if idx is None else Goal(self.labels[idx], self.targeted, self.y_true[idx])

    def reached(self, logits: torch.Tensor) -> torch.Tensor:
        """(N,) bool: the rows whose ``logits`` meet the goal."""
        return is_success(logits, self.labels, self.targeted)

    def objective(self, loss: Loss) -> Callable[[torch.Tensor], torch.Tensor]:
        """The per-sample objective ``logits -> loss(logits, labels, targeted, y_true)`` (to ascend)."""
        return bind(loss, self.labels, self.targeted, self.y_true)


def quantize_8bit(x: torch.Tensor, x0: torch.Tensor, eps: float | torch.Tensor | None, norm: str) -> torch.Tensor:
    """Round ``x`` to the 8-bit grid (k/255) while staying in [0, 1] and, for L-inf, in the eps-ball around ``x0``
    (``eps`` a float or per sample (N,)).

    For L2/L1 the rounding is towards ``x0`` (truncation of the perturbation in grid units), which never
    increases the norm when ``x0`` itself lies on the grid.
    """
    if norm == "linf" or eps is None:
        q = (x * 255).round() / 255
        if eps is not None:
            e = eps.to(x0).view(-1, *[1] * (x0.ndim - 1)) if isinstance(eps, torch.Tensor) else eps
            lo = torch.ceil(((x0 - e) * 255).clamp(min=0) - 1e-4) / 255
            hi = torch.floor(((x0 + e) * 255).clamp(max=255) + 1e-4) / 255
            q = torch.maximum(torch.minimum(q, hi), lo)
        return q.clamp(0, 1)
    x0q = (x0 * 255).round() / 255
    return (x0q + torch.trunc((x - x0q) * 255) / 255).clamp(0, 1)


def eps_list(eps: float | Sequence[float]) -> list[float]:
    """``eps`` as an ascending list of floats (one eps is a list of one)."""
    if isinstance(eps, (int, float)):
        return [float(eps)]
    return sorted(float(e) for e in eps)


def check_epsilons(eps: float | Sequence[float], norm: str) -> None:
    """Raise ValueError unless ``norm`` is a known norm and every eps is positive (and at most 1 for L-inf)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {norm!r}")
    try:
        values = eps_list(eps)
    except (TypeError, ValueError):
        raise ValueError(f"eps must be a positive number or a list of them, got {eps!r}") from None
    if not values or any(not e > 0 for e in values):
        raise ValueError(f"eps must be positive, got {eps}")
    if norm == "linf" and any(e > 1 for e in values):
        raise ValueError(f"an L-inf eps above 1 means nothing for [0, 1] images, got {eps}")


def check_counts(config: object, *names: str) -> None:
    """Raise ValueError unless each option ``names`` of ``config`` (steps, restarts, ...) is at least 1."""
    for name in names:
        value = getattr(config, name)
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")


def check_positive(config: object, *names: str) -> None:
    """Raise ValueError unless each option ``names`` of ``config`` is positive (None: left to its default)."""
    for name in names:
        value = getattr(config, name)
        if value is not None and not value > 0:
            raise ValueError(f"{name} must be positive, got {value}")


@dataclass(frozen=True, kw_only=True)
class Attack:
    """Base config shared by all attacks.

    ``seed``: the same seed gives the same result. Random starts are drawn per sample from (seed, restart,
    the sample's pixels), so an image gets the same start in any batch (:func:`advlab.threat.random_start`);
    so does all other randomness (random targets, noise, black-box proposals: :mod:`advlab.attacks.draws`), so the
    same seed gives each image the same result at any batch size or shard count.
    ``quantize``: return ``x_adv`` on the 8-bit grid, with success checked on exactly that tensor (saved
    PNGs stay adversarial). A bad setting raises ValueError at construction (:meth:`validate`).
    """

    seed: int = 0
    quantize: bool = False

    #: the attack's name in the catalog and the CLI (each registered class sets its own)
    name: ClassVar[str] = "attack"
    #: per option the attack lacks, what to use instead (the catalog adds it to the refusal)
    instead: ClassVar[dict[str, str]] = {}
    #: False for attacks that only query outputs (random noise, black-box attacks): ``evaluate`` flags a
    #: model on which such an attack breaks samples that the white-box attacks left unbroken
    white_box: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__repr__" not in cls.__dict__:  # set before @dataclass runs, so that it keeps this one (a class's own wins)
            # mypy forbids assigning to a method; replacing the one @dataclass would write is the point here
            cls.__repr__ = Attack.__repr__  # type: ignore[method-assign]

    def __post_init__(self) -> None:
        self.validate()

    def __repr__(self) -> str:
        """The dataclass repr with the values actually used: a step size left at None (a default computed from
        eps and steps) shows its value, e.g. ``alpha=0.025`` for PGD at eps 0.1 with 10 steps (one per eps of a
        list)."""
        shown = {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}, **self.resolved()}
        return f"{type(self).__qualname__}({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def resolved(self) -> dict[str, Any]:
        """Options left at None whose value is computed from the others, with that value: ``alpha`` of attacks with
        a ``step_size(eps)`` (PGD, MI-FGSM, NES) or ``step_size()`` (one-hot); a list of them for a list of eps."""
        step = getattr(self, "step_size", None)
        if getattr(self, "alpha", 0) is not None or not callable(step):
            return {}
        eps = getattr(self, "eps", None)
        if eps is None:
            return {"alpha": step()}
        values = [step(e) for e in eps_list(eps)]
        return {"alpha": values[0] if len(values) == 1 else values}

    @property
    def label(self) -> str:
        """The attack as reports print and store it: its ``name``, or a finer one (APGD adds its loss: ``apgd-ce``)."""
        return self.name

    @property
    def threat_norm(self) -> str:
        """The norm the perturbation is measured in (reports, eps checks): the attack's ``norm`` where it has
        one, else L2 (the minimum-norm attacks C&W, L-BFGS and one-hot)."""
        return str(getattr(self, "norm", "l2"))

    # ---------------------------------------------------------------- public API
    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target = None) -> AttackResult:
        """Attack ``model`` on images ``x`` (N, C, H, W) in [0, 1] with labels ``y`` (N,).

        ``target``: None (untargeted: make argmax != y), an int or (N,) tensor of target classes,
        ``"random"`` (a random class != y, from ``seed``) or ``"least-likely"`` (the clean argmin).
        Every point the attack evaluates is watched (:class:`Witness`): ``result.seen`` holds, per sample, the
        closest point on its path that met the goal (a silent success when ``x_adv`` does not).
        """
        return self._run(model, x, y, target, self._run_with_eps, watch=True)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, target: Target = None) -> torch.Tensor:
        """Only ``x_adv`` (same arguments as calling the attack), for loops that need nothing else.

        Adversarial training and prototype generation use this. Attacks with a cheaper path take it: a
        full-budget PGD returns its last iterate after exactly ``steps`` forward/backward passes, without
        the final forward that scoring the iterates needs. Others return ``self(...).x_adv``.
        """
        return self._run(model, x, y, target, self._x_adv_only)

    def _run(
        self,
        model: nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        target: Target,
        body: Callable[..., Any],
        watch: bool = False,
    ) -> Any:
        self.validate()
        _check_batch(x, y)
        if not self.white_box:  # query-only attacks see outputs only: any gradient request raises
            from advlab.attacks.blackbox.query_only import QueryOnly

            model = QueryOnly(model)
        with frozen_parameters(model), preserved_state(model):
            oracle = Oracle(model, len(x), x.device)
            goal = self._goal(oracle, x, y, target)
            if watch:
                oracle.witness = Witness(goal, x, self.threat_norm)
            return body(oracle, x, goal)

    def validate(self) -> None:
        """Raise ValueError for impossible settings (called at construction and before every run)."""

    # ---------------------------------------------------------------- for subclasses
    def _attack(
        self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None, init: torch.Tensor | None
    ) -> Found:
        """Return ``(x_adv, logits of the model on x_adv)`` for this (sub)batch, aiming at ``goal``; ``eps`` is the
        radius of the ball (None for unbounded attacks), ``init`` a warm start (a perturbation of ``x``) or None."""
        raise NotImplementedError

    def _epsilons(self) -> list[float | None]:
        """The radii to attack at, ascending: the attack's ``eps`` (a number or a list), or [None] without one."""
        eps = getattr(self, "eps", None)
        return [None] if eps is None else list(eps_list(eps))

    def _prepare(self, x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor | None) -> torch.Tensor:
        """What the model is evaluated on: the iterate itself, or its 8-bit rounding with ``quantize``."""
        return quantize_8bit(x_adv, x, eps, self.threat_norm) if self.quantize else x_adv

    def _last_iterate(self, oracle: Oracle, x: torch.Tensor, goal: Goal, eps: float | None) -> torch.Tensor | None:
        """``x_adv`` by a cheaper path than the full result, for :meth:`perturb` at one eps without ``quantize``;
        None where the attack has none (the default) or not for its settings."""
        return None

    # ---------------------------------------------------------------- internals
    def _x_adv_only(self, oracle: Oracle, x: torch.Tensor, goal: Goal) -> torch.Tensor:
        """What :meth:`perturb` returns: :meth:`_last_iterate` where it has an answer, else the full result's."""
        epsilons = self._epsilons()
        if len(epsilons) == 1 and not self.quantize:
            x_adv = self._last_iterate(oracle, x, goal, epsilons[0])
            if x_adv is not None:
                return x_adv
        return self._run_with_eps(oracle, x, goal).x_adv

    def _goal(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, target: Target) -> Goal:
        """The :class:`Goal` for true labels ``y`` and ``target`` (see :meth:`__call__`)."""
        if target is None:
            if (y < 0).any():
                raise ValueError("untargeted attacks need a label for every sample (found -1)")
            return Goal(y, False, y)
        if isinstance(target, str):
            t = self._named_targets(oracle, x, y, target)
        elif isinstance(target, int):
            t = torch.full_like(y, target)
        else:
            t = target.to(y.device).long().reshape(-1)
            if t.numel() == 1:
                t = t.expand_as(y).clone()
            if t.shape != y.shape:
                raise ValueError(f"target has {t.numel()} entries for {len(y)} samples")
        return Goal(t, True, y)

    def _named_targets(self, oracle: Oracle, x: torch.Tensor, y: torch.Tensor, target: str) -> torch.Tensor:
        """The targets ``"least-likely"`` (the clean argmin) or ``"random"`` (per sample a class != y, the same in
        any batch, from ``seed``)."""
        if target == "least-likely":
            return oracle.logits(x, None).argmin(1)
        if target != "random":
            raise ValueError(f"target must be a class index, a tensor, 'random' or 'least-likely', not {target!r}")
        from advlab.attacks.draws import TARGET_STREAM, SampleDraws

        with torch.no_grad():  # the class count, a property of the model: no sample's query
            k = int(oracle.model(x[:1]).shape[1])
        offset = SampleDraws(x, self.seed, stream=TARGET_STREAM).integers(None, 0, 1, k).to(y.device)
        return (y.clamp(min=0) + offset) % k

    def _run_with_eps(self, oracle: Oracle, x: torch.Tensor, goal: Goal) -> AttackResult:
        """Run ``_attack`` for each eps, ascending; a sample broken at a smaller eps stays broken (the balls are
        nested), so each larger eps attacks only the samples still unbroken, warm-started from the last iterate."""
        epsilons = self._epsilons()
        if len(epsilons) == 1:
            xa, za = self._attack(oracle, x, goal, epsilons[0], None)
            return result_from(oracle, x, xa.detach().to(x.dtype), goal, za.detach())
        x_adv = x.detach().clone()
        logits = oracle.logits(x, None)
        success = goal.reached(logits)
        min_eps = torch.full((len(x),), math.inf)
        curve: list[dict[str, float]] = []
        for eps in epsilons:
            todo = (~success).nonzero().flatten()
            if len(todo):
                sub = goal.rows(todo)
                xa, za = self._attack(SubOracle(oracle, todo), x[todo], sub, eps, x_adv[todo] - x[todo])
                x_adv[todo] = xa.detach().to(x.dtype)
                logits[todo] = za.detach().to(logits.dtype)
                success[todo] = sub.reached(za)
            assert eps is not None, "an eps list needs bounded epsilons"
            min_eps[success.cpu() & torch.isinf(min_eps)] = eps
            curve.append({"eps": eps, "success_rate": float(success.float().mean()) if len(x) else 0.0})
        res = result_from(oracle, x, x_adv, goal, logits)
        res.curve, res.min_eps = curve, min_eps
        return res


class SubOracle(Oracle):
    """The oracle restricted to some rows of the batch: indices are mapped back for the counts."""

    def __init__(self, parent: Oracle, rows: torch.Tensor) -> None:
        self.model, self.parent, self.rows = parent.model, parent, rows
        self.forwards, self.backwards = parent.forwards, parent.backwards
        self.witness = parent.witness

    def _rows(self, idx: torch.Tensor | None) -> torch.Tensor | None:
        rows = self.parent._rows(self.rows)
        return rows if idx is None or rows is None else rows[idx.to(rows.device)]

    def count(self, idx: torch.Tensor | None, forwards: int, backwards: int = 0) -> None:
        self.parent.count(self.rows if idx is None else self.rows[idx.to(self.rows.device)], forwards, backwards)


class Best:
    """Per sample, the most adversarial point evaluated so far: a successful one first, then the highest loss.

    Iterative attacks call :meth:`record` (or :meth:`update`) after every evaluation (``where`` = rows in the
    batch); the result is what they return. This is the "maximum confidence" rule that makes full-budget runs at
    least as strong as their final iterate. Logits and losses are kept in the dtypes the attack hands in (a
    float64 model gives float64 logits; a loss may be float64 too).
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x = x.detach().clone()
        self.logits: torch.Tensor | None = None
        self.success = torch.zeros(len(x), dtype=torch.bool, device=x.device)
        self.loss: torch.Tensor | None = None

    def record(
        self, where: torch.Tensor | None, x: torch.Tensor, logits: torch.Tensor, goal: Goal, loss: torch.Tensor
    ) -> torch.Tensor:
        """:meth:`update` with the success of ``logits`` against ``goal`` (the goal of these rows); returns it."""
        success = goal.reached(logits)
        self.update(where, x, logits, success, loss)
        return success

    def update(
        self,
        where: torch.Tensor | None,
        x: torch.Tensor,
        logits: torch.Tensor,
        success: torch.Tensor,
        loss: torch.Tensor,
    ) -> None:
        """Keep the better of the stored and the new point for rows ``where`` (None: every row, blended in place)."""
        if self.logits is None or self.loss is None:
            self.logits = torch.zeros(len(self.x), logits.shape[1], dtype=logits.dtype, device=logits.device)
            self.loss = torch.full((len(self.x),), -torch.inf, dtype=loss.dtype, device=self.x.device)
        if where is None:
            better = (success & ~self.success) | ((success == self.success) & (loss > self.loss))
            self.x = torch.where(better.view(-1, *[1] * (x.ndim - 1)), x.detach(), self.x)
            self.logits = torch.where(better[:, None], logits, self.logits)
            self.success, self.loss = self.success | success, torch.where(better, loss, self.loss)
            return
        better = (success & ~self.success[where]) | ((success == self.success[where]) & (loss > self.loss[where]))
        w = where[better]
        self.x[w], self.logits[w] = x[better].detach(), logits[better]
        self.success[w], self.loss[w] = success[better], loss[better]

    def unbroken(self) -> torch.Tensor:
        """Rows not yet broken (what a restart attacks again)."""
        return (~self.success).nonzero().flatten()

    def result(self) -> Found:
        assert self.logits is not None, "no evaluation was recorded"
        return self.x, self.logits


def restarts(best: Best, runs: int) -> Iterator[tuple[int, torch.Tensor | None]]:
    """``(restart, rows)`` for up to ``runs`` runs of an attack: every row first (``rows`` None), then at each
    restart the rows of ``best`` not yet broken, until none is left."""
    for restart in range(runs):
        rows = None if restart == 0 else best.unbroken()
        if rows is not None and len(rows) == 0:
            return
        yield restart, rows


class Witness:
    """Every point an attack evaluates, watched: per sample the closest one (in ``norm``, to the clean ``x0``) at which
    the oracle's logits met the ``goal``. An attack may see an adversarial point on its path and still return
    another (a last iterate, a point chosen by a loss that disagrees with the decision): a *silent success*
    (Pintor et al., NeurIPS 2022). ``points`` (N, ...) and ``distance`` (N,; inf where none was seen) are what
    it kept; the memory is one more copy of the batch, taken at the first success seen."""

    def __init__(self, goal: Goal, x0: torch.Tensor, norm: str) -> None:
        self.goal, self.x0, self.norm = goal, x0.detach(), norm
        self.distance = torch.full((len(x0),), math.inf, device=x0.device)
        self.points: torch.Tensor | None = None
        #: every evaluation's rows and their goal margins, in call order (:meth:`still_improving`)
        self.trace: list[tuple[torch.Tensor, torch.Tensor]] = []

    def observe(self, x: torch.Tensor, rows: torch.Tensor | None, logits: torch.Tensor) -> None:
        """Keep, per row, ``x`` where its logits meet the goal and it is closer than the point kept; trace the goal
        margin."""
        rows = torch.arange(len(self.x0), device=self.x0.device) if rows is None else rows.to(self.x0.device)
        if len(rows) != len(x):
            return  # not one point per row (an attack's own batching): nothing to attribute
        goal = self.goal.rows(rows)
        z = logits.detach().float()
        own = z.gather(1, goal.labels.clamp(min=0)[:, None])[:, 0]
        other = z.scatter(1, goal.labels.clamp(min=0)[:, None], -torch.inf).amax(1)
        self.trace.append((rows, own - other if goal.targeted else other - own))
        reached = goal.reached(logits.detach())
        if not bool(reached.any()):
            return
        d = distance((x.detach() - self.x0[rows]).to(self.x0.dtype), self.norm).to(self.distance.device)
        closer = reached.to(d.device) & (d < self.distance[rows])
        if not bool(closer.any()):
            return
        if self.points is None:
            self.points = self.x0.clone()
        keep = rows[closer]
        self.points[keep] = x.detach()[closer].to(self.points.dtype)
        self.distance[keep] = d[closer]

    def still_improving(self, tail: float = 0.2, share: float = 0.1) -> torch.Tensor:
        """Per sample (N,) bool: whether the attack's best goal margin (``max_{j != y} z_j - z_y`` untargeted,
        ``z_t - max_{j != t} z_j`` targeted) still rose in its last ``tail`` of evaluations by more than ``share`` of
        its whole rise from the first evaluation (and by 1e-3 at least): the optimization had not converged when the
        budget ran out (Pintor et al.'s "incomplete optimization")."""
        n = len(self.x0)
        out = torch.zeros(n, dtype=torch.bool)
        if not self.trace:
            return out
        rows = torch.cat([r for r, _ in self.trace]).cpu()
        margins = torch.cat([m for _, m in self.trace]).cpu()
        for i in rows.unique().tolist():
            m = margins[rows == i]
            if len(m) < 5:
                continue
            cut = max(1, int(len(m) * (1 - tail)))
            before, best = float(m[:cut].max()), float(m.max())
            rise = best - float(m[0])
            out[i] = best - before > max(share * rise, 1e-3)
        return out


def _check_batch(x: torch.Tensor, y: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise ValueError("x must be a batch tensor (N, C, H, W)")
    if not x.is_floating_point():
        raise ValueError(f"x must be float images in [0, 1], got dtype {x.dtype}")
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape ({len(x)},), got {tuple(y.shape)}")
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError("x must be in [0, 1]; advlab models carry their own normalization")


def result_from(
    oracle: Oracle, x: torch.Tensor, x_adv: torch.Tensor, goal: Goal, logits: torch.Tensor | None = None
) -> AttackResult:
    """Norms, success and counts for a finished ``x_adv`` (evaluates the model once if ``logits`` is None)."""
    if logits is None:
        logits = oracle.logits(x_adv, None)
    d = (x_adv - x).detach()
    return AttackResult(
        x_adv=x_adv.detach().to(x.dtype),
        success=goal.reached(logits).cpu(),
        logits=logits.detach(),
        y=goal.y_true,
        target=goal.labels if goal.targeted else None,
        l0=distance(d, "l0").cpu(),
        l2=distance(d, "l2").cpu(),
        linf=distance(d, "linf").cpu(),
        forwards=oracle.forwards.cpu().clone(),
        backwards=oracle.backwards.cpu().clone(),
        seen=None if oracle.witness is None or oracle.witness.points is None else oracle.witness.points,
        seen_distance=None if oracle.witness is None else oracle.witness.distance.cpu(),
        still_improving=None if oracle.witness is None else oracle.witness.still_improving(),
    )
