"""Supervised and adversarial training of small classifiers on [0, 1] images, in memory or streamed batch by batch
from :class:`advlab.data.Batches` (digits-cnn's weights come from here).

A defense in the sense of :mod:`advlab.defenses`: adversarial training and logit pairing change the weights so that
the model resists an attack, but unlike the post-hoc defenses in this package ``fit`` trains the model in place.

Objectives, per batch of B images x in [0, 1] with labels y (CE: mean cross-entropy over the batch):

- standard:               min_theta  CE(f(x), y)
- adversarial (Madry et al. 2018, "Towards deep learning models resistant to adversarial attacks"):

      min_theta  CE(f(x_adv), y),   x_adv ~ argmax_{||x' - x||_inf <= eps, x' in [0, 1]} CE(f(x'), y)

  where the inner maximum is approximated by PGD (``adversarial="pgd"``: random start, ``adv_steps`` sign
  steps of ``adv_alpha``) or by FGSM with a random start (``adversarial="fgsm-rs"``, Wong, Rice & Kolter 2020,
  "Fast is better than free": delta ~ U[-eps, eps]^n, one step delta <- Proj_eps(delta + alpha sign(grad)),
  alpha = 1.25 eps, then x + delta clipped to [0, 1]).
- the general objective, which covers both of the above, the lecture's mixed loss and adversarial logit
  pairing (ALP, Kannan, Kurakin & Goodfellow 2018):

      L = c * CE(f(x), y) + gamma * CE(f(x_adv), y) + lambda * (1/B) sum_i ||f(x_i) - f(x_adv,i)||_2^2

  with ``clean_weight`` = c, ``gamma`` and ``logit_pairing`` = lambda (f are logits). Defaults: c = 0 and
  gamma = 1 (Madry); with ``logit_pairing > 0`` and no explicit ``clean_weight``, c = 1: the lecture's ALP
  loss L(x, y) + gamma L(x_adv, y) + lambda ||f(x) - f(x_adv)||^2. Gradients flow through both logits of
  the pairing term; x_adv itself is a constant (no gradient through the attack).

``eps`` and ``adv_alpha`` are in [0, 1] pixel units (L-inf). x_adv is crafted on the (shift-augmented)
batch, against the current weights.

Mode during crafting (``attack_mode``): "eval" (the default) crafts with the model in eval mode, i.e.
against the network as it will be evaluated (BatchNorm running statistics, no dropout), and the crafting
passes leave BatchNorm statistics untouched; the weight update itself runs in train mode. "train" crafts in
train mode (batch statistics, dropout on, as in Madry's and Wong et al.'s reference code) but restores every
buffer afterwards, so only the update's forward passes move the running statistics. For models without
BatchNorm or dropout (digits-cnn) the two are identical.

Deterministic: the same seed, data and thread count give bit-identical weights on the CPU, and a run
stopped after any epoch and resumed from its :class:`TrainState` gives the same bits as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
import torch.nn.functional as F
from torch import nn

from advlab.attacks.pgd import PGD
from advlab.errors import AdvlabError
from advlab.evaluation import metrics

if TYPE_CHECKING:
    from advlab.data.stream import Batches

#: the inner maximizations ``TrainConfig.adversarial`` accepts
ADVERSARIAL = ("pgd", "fgsm-rs")
#: ``TrainConfig.attack_mode``: the mode the model is in while x_adv is crafted
ATTACK_MODES = ("eval", "train")
#: FGSM-RS step size in units of eps (Wong et al. 2020)
FGSM_RS_ALPHA = 1.25
#: divergence: a final epoch's mean loss above DIVERGED_LOSS * ln K (K classes; ln K is the loss of a uniform guess)
#: with a training accuracy below the majority-class share + DIVERGED_MARGIN (chance)
DIVERGED_LOSS, DIVERGED_MARGIN = 2.0, 0.05


class TrainingDiverged(AdvlabError):
    """``fit`` stopped: the loss or the weights became NaN or infinite, or training ended at chance with an
    exploded loss. The model's weights are then meaningless (not to be saved)."""


@dataclass(frozen=True)
class TrainConfig:
    """Adam with a one-cycle learning-rate schedule; augmentation by random circular shifts of up to ``shift`` pixels.

    Adversarial training (see the module docstring for the objective): ``adversarial`` None (standard
    training), "pgd" or "fgsm-rs"; ``eps`` the L-inf radius in [0, 1] pixel units; ``adv_steps`` PGD's
    steps (fgsm-rs takes one); ``adv_alpha`` the step size (default: 2.5 eps / adv_steps for PGD, 1.25 eps for
    fgsm-rs); ``clean_weight`` (c), ``gamma`` and ``logit_pairing`` (lambda) weigh the three loss terms;
    ``attack_mode`` is the mode the model is in while x_adv is crafted.
    """

    epochs: int = 40
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    shift: int = 1
    seed: int = 0
    adversarial: str | None = None
    eps: float = 0.1
    adv_steps: int = 7
    adv_alpha: float | None = None
    gamma: float = 1.0
    logit_pairing: float = 0.0
    clean_weight: float | None = None
    attack_mode: str = "eval"

    def validate(self, external_attack: bool = False) -> None:
        """Raise ValueError for impossible settings. ``external_attack``: ``fit`` got a ``perturb=`` hook."""
        if self.epochs < 1 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {self}")
        if self.adversarial is not None and self.adversarial not in ADVERSARIAL:
            raise ValueError(f"adversarial must be None or one of {', '.join(ADVERSARIAL)}, got {self.adversarial!r}")
        if not (0 < self.eps <= 1) or not math.isfinite(self.eps):
            raise ValueError(f"eps must be in (0, 1] ([0, 1] pixel units, L-inf), got {self.eps}")
        if self.adv_steps < 1:
            raise ValueError(f"adv_steps must be >= 1, got {self.adv_steps}")
        if self.adv_alpha is not None and not self.adv_alpha > 0:
            raise ValueError(f"adv_alpha must be positive, got {self.adv_alpha}")
        if self.attack_mode not in ATTACK_MODES:
            raise ValueError(f"attack_mode must be one of {', '.join(ATTACK_MODES)}, got {self.attack_mode!r}")
        weights = {"gamma": self.gamma, "logit_pairing": self.logit_pairing, "clean_weight": self.clean_weight}
        for name, w in weights.items():
            if w is not None and not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"{name} must be a finite number >= 0, got {w}")
        if self.adversarial is None and not external_attack:
            changed = [k for k, v in weights.items() if v != getattr(TrainConfig, k)]
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} weigh(s) adversarial terms: "
                    f"set adversarial to one of {', '.join(ADVERSARIAL)}"
                )
            return
        c, g, _ = self.loss_weights()
        if c + g <= 0:
            raise ValueError(
                "clean_weight + gamma must be positive (a loss of logit pairing alone is minimized by a constant model)"
            )

    def loss_weights(self) -> tuple[float, float, float]:
        """``(c, gamma, lambda)`` of L = c CE(f(x), y) + gamma CE(f(x_adv), y) + lambda mean ||f(x) - f(x_adv)||^2.

        ``clean_weight=None`` resolves to 1 with logit pairing (the lecture's ALP loss) and 0 without (Madry).
        """
        c = self.clean_weight if self.clean_weight is not None else (1.0 if self.logit_pairing > 0 else 0.0)
        return float(c), float(self.gamma), float(self.logit_pairing)

    def attack(self, seed: int = 0) -> PGD | None:
        """The attack that crafts x_adv (None for standard training): PGD, or FGSM-RS as a one-step PGD with
        random start."""
        if self.adversarial is None:
            return None
        if self.adversarial == "fgsm-rs":
            alpha = self.adv_alpha if self.adv_alpha is not None else FGSM_RS_ALPHA * self.eps
            return PGD(eps=self.eps, alpha=alpha, steps=1, random_start=True, seed=seed)
        return PGD(eps=self.eps, alpha=self.adv_alpha, steps=self.adv_steps, random_start=True, seed=seed)


@dataclass
class TrainHistory:
    """Per epoch: mean training objective, accuracy on the evaluation data (when given), training seconds
    (wall clock, without the evaluations) and the values of ``fit``'s ``epoch_metrics`` by name."""

    loss: list[float] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "loss": list(self.loss),
            "eval_accuracy": list(self.eval_accuracy),
            "seconds": list(self.seconds),
            "metrics": {k: list(v) for k, v in self.metrics.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainHistory:
        return cls(
            loss=[float(v) for v in d["loss"]],
            eval_accuracy=[float(v) for v in d["eval_accuracy"]],
            seconds=[float(v) for v in d.get("seconds", [])],
            metrics={k: [float(v) for v in vs] for k, vs in d.get("metrics", {}).items()},
        )


# ------------------------------------------------------------------------------------------------ checkpoints
def _encode(obj: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """``obj`` as JSON with its tensors moved to ``tensors`` (named by their path); tuples, non-string keys
    and non-finite floats are tagged so that :func:`_decode` gives back the same structure."""
    if isinstance(obj, torch.Tensor):
        tensors[key] = obj.detach().cpu().clone().contiguous()
        return {"__tensor__": key}
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, f"{key}.{i}", tensors) for i, v in enumerate(obj)]
    if isinstance(obj, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in obj):
            return {k: _encode(v, f"{key}.{k}", tensors) for k, v in obj.items()}
        return {"__items__": [[k, _encode(v, f"{key}.{k}", tensors)] for k, v in obj.items()]}
    raise TypeError(f"cannot checkpoint a {type(obj).__name__} at {key}")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        return tensors[obj["__tensor__"]]
    if "__float__" in obj:
        return float(obj["__float__"])
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors) for v in obj["__tuple__"])
    if "__items__" in obj:
        return {k: _decode(v, tensors) for k, v in obj["__items__"]}
    return {k: _decode(v, tensors) for k, v in obj.items()}


@dataclass
class TrainState:
    """Everything ``fit`` needs to continue after ``epochs_done`` epochs and end with the same bits.

    Model, optimizer and scheduler state dicts (copies, on the CPU), the shuffling generator's state, the
    global CPU generator's state (dropout), the history so far, the config as a dict and the number of
    training samples (both checked on resume). :meth:`to_saved` splits it into plain tensors and a
    JSON-able dict (safetensors + JSON: no pickle), :meth:`from_saved` reads that back.
    """

    epochs_done: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generator: torch.Tensor
    rng: torch.Tensor
    history: TrainHistory
    config: dict[str, Any]
    samples: int

    def to_saved(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(tensors, info)``: a flat name -> tensor dict (for safetensors) and a JSON-able dict."""
        tensors: dict[str, torch.Tensor] = {"generator": self.generator.clone(), "rng": self.rng.clone()}
        for k, v in self.model.items():
            tensors[f"model.{k}"] = v.detach().cpu().clone().contiguous()
        info = {
            "epochs_done": self.epochs_done,
            "samples": self.samples,
            "config": _encode(self.config, "config", tensors),
            "model_keys": list(self.model),
            "optimizer": _encode(self.optimizer, "optimizer", tensors),
            "scheduler": _encode(self.scheduler, "scheduler", tensors),
            "history": _encode(self.history.to_dict(), "history", tensors),
        }
        return tensors, info

    @classmethod
    def from_saved(cls, tensors: Mapping[str, torch.Tensor], info: Mapping[str, Any]) -> TrainState:
        """The inverse of :meth:`to_saved`."""
        return cls(
            epochs_done=int(info["epochs_done"]),
            model={k: tensors[f"model.{k}"] for k in info["model_keys"]},
            optimizer=_decode(info["optimizer"], tensors),
            scheduler=_decode(info["scheduler"], tensors),
            generator=tensors["generator"],
            rng=tensors["rng"],
            history=TrainHistory.from_dict(_decode(info["history"], tensors)),
            config=_decode(info["config"], tensors),
            samples=int(info["samples"]),
        )


def _snapshot(obj: Any) -> Any:
    """A deep copy of a state dict's tensors (the live ones keep changing)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().clone()
    if isinstance(obj, Mapping):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


# ------------------------------------------------------------------------------------------------ training
#: training or evaluation images: a tensor (N, C, H, W) in [0, 1], or :class:`advlab.data.Batches` (streamed:
#: read batch by batch, so memory does not grow with N)
Images: TypeAlias = "torch.Tensor | Batches"


def image_batches(x: Images, batch_size: int, order: torch.Tensor | None = None) -> Iterator[torch.Tensor]:
    """The images ``x[order]`` (default: all, in data order) in consecutive batches of ``batch_size``: sliced from
    a tensor, or read from :class:`~advlab.data.Batches` (``x.reordered(order)``, at most its ``PREFETCH``
    batches ahead with its ``workers``); the same values either way."""
    if isinstance(x, torch.Tensor):
        n = len(x) if order is None else len(order)
        for i in range(0, n, batch_size):
            yield x[i : i + batch_size] if order is None else x[order[i : i + batch_size]]
        return
    for xb, _ in (x if order is None else x.reordered(order)).rebatched(batch_size):
        yield xb


def accuracy(model: nn.Module, x: Images, y: torch.Tensor, batch_size: int | None = None) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode (:func:`advlab.evaluation.metrics.accuracy`: over the
    labelled samples, 0.0 for none), restoring the model's mode afterwards. ``x``: see :data:`Images`;
    ``batch_size``: images per forward (default 512 from a tensor, a Batches' own batches)."""
    was_training = model.training
    model.eval()
    size = batch_size or (512 if isinstance(x, torch.Tensor) else x.batch_size)
    with torch.no_grad():
        preds = [model(xb).argmax(1).to(y.device) for xb in image_batches(x, size)]
    model.train(was_training)
    return metrics.accuracy(y, torch.cat(preds)) if preds else 0.0


def check_diverged(model: nn.Module, x: Images, y: torch.Tensor, history: TrainHistory, lr: float) -> None:
    """Raise :class:`TrainingDiverged` after training when the weights are not finite, or when the last epoch's
    mean loss is above ``DIVERGED_LOSS`` ln K and the training accuracy is at chance (the majority-class share
    + ``DIVERGED_MARGIN``). Costs one pass over ``x`` only when the loss is that high."""
    bad = [
        n
        for n, t in [*model.named_parameters(), *model.named_buffers()]
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
    if bad:
        raise TrainingDiverged(
            f"training diverged: {len(bad)} weight tensors hold NaN or infinite values (e.g. {bad[0]}); "
            f"lower the learning rate (lr={lr:g})"
        )
    if not history.loss or not len(y):
        return
    was = model.training
    model.eval()
    with torch.no_grad():
        k = int(model(next(image_batches(x, 1, torch.arange(1)))).shape[1])
    model.train(was)
    if not history.loss[-1] > DIVERGED_LOSS * math.log(max(k, 2)):
        return
    acc, majority = accuracy(model, x, y), float(torch.bincount(y.clamp(min=0)).max()) / len(y)
    if acc < majority + DIVERGED_MARGIN:
        raise TrainingDiverged(
            f"training diverged: the last epoch's loss is {history.loss[-1]:.3g} (a uniform guess scores "
            f"ln {k} = {math.log(k):.2f}) and training accuracy {acc:.1%} is at chance; lower the learning rate "
            f"(lr={lr:g})"
        )


def logit_distance(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample squared L2 distance ||a_i - b_i||_2^2 between logit rows (N, K) -> (N,)."""
    return (a - b).pow(2).flatten(1).sum(1)


def training_loss(
    model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor | None, y: torch.Tensor, config: TrainConfig
) -> torch.Tensor:
    """The training loss of one batch (a scalar with a graph to the weights); see the module docstring.

    ``x_adv is None``: CE(f(x), y). Otherwise c CE(f(x), y) + gamma CE(f(x_adv), y) + lambda mean_i
    ||f(x_i) - f(x_adv,i)||_2^2 with ``(c, gamma, lambda) = config.loss_weights()``; f(x) is computed only
    when c or lambda is nonzero.
    """
    if x_adv is None:
        return F.cross_entropy(model(x), y)
    c, gamma, lam = config.loss_weights()
    z_adv = model(x_adv)
    loss = F.cross_entropy(z_adv, y)
    if gamma != 1.0:
        loss = gamma * loss
    if c or lam:
        z = model(x)
        if c:
            loss = loss + c * F.cross_entropy(z, y)
        if lam:
            loss = loss + lam * logit_distance(z, z_adv).mean()
    return loss


def _craft(
    model: nn.Module,
    make: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    y: torch.Tensor,
    mode: str,
) -> torch.Tensor:
    """x_adv from ``make`` with the model in ``mode`` ("eval", or "train" with every buffer restored after)."""
    if mode == "eval":
        model.eval()
        try:
            return make(model, x, y).detach()
        finally:
            model.train()
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        return make(model, x, y).detach()
    finally:
        with torch.no_grad():
            for b, v in saved:
                b.copy_(v)


Perturb = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def fit(
    model: nn.Module,
    x: Images,
    y: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    eval_data: tuple[Images, torch.Tensor] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    perturb: Perturb | None = None,
    *,
    on_epoch: Callable[[int, TrainState], None] | None = None,
    resume: TrainState | None = None,
    epoch_metrics: Callable[[nn.Module], Mapping[str, float]] | None = None,
) -> TrainHistory:
    """Train ``model`` in place on images ``x`` (N, C, H, W) in [0, 1] and labels ``y`` by minimizing the
    objective of the module docstring (cross-entropy; with ``config.adversarial``, adversarial training).
    ``x`` (and ``eval_data``'s images) may be :class:`advlab.data.Batches` with ``y = x.labels()``: each epoch then
    reads its shuffled batches as it goes (``x.reordered(order)``; memory independent of N), and the weights are
    the same bits as with the stacked tensor.

    ``on_step(epoch, step, loss)`` is called after every optimizer step (the CLI hangs a progress bar on it).
    ``perturb(model, xb, yb) -> xb'`` is an external inner maximization: each (augmented) batch is replaced
    by it (Madry et al. 2018: min_theta E max_{||d|| <= eps} CE(f(x + d), y)), and ``config``'s loss weights
    apply to it as to a built-in attack; it cannot be combined with ``config.adversarial``.
    ``epoch_metrics(model) -> {name: value}`` runs after each epoch with the model in eval mode; its values
    go to ``history.metrics`` (and so into checkpoints).
    ``on_epoch(epoch, state)`` is called after each epoch (0-based ``epoch``) with a :class:`TrainState`
    snapshot to save; ``resume=state`` continues from such a snapshot (same config and data): on the CPU the
    final weights are bit-identical to an uninterrupted run's. A ``KeyboardInterrupt`` raised in a callback
    simply stops training. Leaves the model in eval mode. A run that diverges (a NaN or infinite loss at any step,
    non-finite weights, or an exploded loss at chance accuracy at the end: :func:`check_diverged`) raises
    :class:`TrainingDiverged`.
    """
    config.validate(external_attack=perturb is not None)
    if perturb is not None and config.adversarial is not None:
        raise ValueError("give perturb= or config.adversarial, not both")
    run = _Run.start(model, config, len(y))
    history, first = (run.restore(resume, len(y)), resume.epochs_done) if resume is not None else (TrainHistory(), 0)
    craft = run.inner_maximization(perturb)
    for epoch in range(first, config.epochs):
        t0 = time.perf_counter()
        total = run.epoch(x, y, craft, epoch, on_step)
        history.seconds.append(time.perf_counter() - t0)
        history.loss.append(total / len(y))
        model.eval()
        if eval_data is not None:
            history.eval_accuracy.append(accuracy(model, *eval_data))
        if epoch_metrics is not None:
            for k, v in epoch_metrics(model).items():
                history.metrics.setdefault(k, []).append(float(v))
        if on_epoch is not None:
            on_epoch(epoch, run.state(epoch + 1, history, len(y)))
    model.eval()
    check_diverged(model, x, y, history, config.lr)
    return history


@dataclass
class _Run:
    """What moves while ``fit`` trains: the model, Adam, the one-cycle schedule and the training generator
    (shuffling, shifts and the attack's random starts all draw from ``gen``, in that order per batch)."""

    model: nn.Module
    config: TrainConfig
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    gen: torch.Generator

    @classmethod
    def start(cls, model: nn.Module, config: TrainConfig, samples: int) -> _Run:
        """Seeded generators (``config.seed``, also the global one: dropout), Adam and OneCycleLR over all steps."""
        gen = torch.Generator().manual_seed(config.seed)
        torch.manual_seed(config.seed)
        opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        steps_per_epoch = (samples + config.batch_size - 1) // config.batch_size
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
        return cls(model, config, opt, sched, gen)

    def restore(self, state: TrainState, samples: int) -> TrainHistory:
        """Load ``state`` (checked to come from the same config and sample count); returns its history (a copy)."""
        saved_config = {**dataclasses.asdict(self.config)}
        if state.config != saved_config:
            diff = sorted(k for k in saved_config if state.config.get(k) != saved_config[k])
            raise ValueError(f"the state was saved with another config (differs in {', '.join(diff) or 'fields'})")
        if state.samples != samples:
            raise ValueError(f"the state was saved training on {state.samples} samples, not {samples}")
        self.model.load_state_dict(state.model)
        self.opt.load_state_dict(state.optimizer)
        self.sched.load_state_dict(state.scheduler)
        self.gen.set_state(state.generator)
        torch.set_rng_state(state.rng)
        return TrainHistory.from_dict(state.history.to_dict())

    def state(self, epochs_done: int, history: TrainHistory, samples: int) -> TrainState:
        """A :class:`TrainState` snapshot (copies) after ``epochs_done`` epochs."""
        return TrainState(
            epochs_done=epochs_done,
            model=_snapshot(self.model.state_dict()),
            optimizer=_snapshot(self.opt.state_dict()),
            scheduler=_snapshot(self.sched.state_dict()),
            generator=self.gen.get_state(),
            rng=torch.get_rng_state(),
            history=TrainHistory.from_dict(history.to_dict()),
            config=dataclasses.asdict(self.config),
            samples=samples,
        )

    def inner_maximization(self, perturb: Perturb | None) -> Perturb | None:
        """x_adv for a batch: the config's attack (a fresh random start per batch, seeded from ``gen``), or
        ``perturb``, crafted in ``config.attack_mode``; None for standard training."""
        attack, mode = self.config.attack(), self.config.attack_mode
        if attack is not None:

            def craft(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
                seed = int(torch.randint(0, 2**62, (1,), generator=self.gen))
                return _craft(model, dataclasses.replace(attack, seed=seed).perturb, xb, yb, mode)

            return craft
        if perturb is not None:
            return lambda model, xb, yb: _craft(model, perturb, xb, yb, mode)
        return None

    def epoch(
        self,
        x: Images,
        y: torch.Tensor,
        craft: Perturb | None,
        epoch: int,
        on_step: Callable[[int, int, float], None] | None,
    ) -> float:
        """Epoch ``epoch``: one shuffled pass of optimizer steps in train mode, calling ``on_step(epoch, step, loss)``
        after each; returns the sum over batches of loss * batch size."""
        config, gen = self.config, self.gen
        self.model.train()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for step, xb in enumerate(image_batches(x, config.batch_size, order)):
            yb = y[order[step * config.batch_size : (step + 1) * config.batch_size]]
            if config.shift:
                dy, dx = torch.randint(-config.shift, config.shift + 1, (2,), generator=gen).tolist()
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            x_adv = craft(self.model, xb, yb) if craft is not None else None
            loss = training_loss(self.model, xb, x_adv, yb, config)
            value = loss.item()
            if not math.isfinite(value):
                raise TrainingDiverged(
                    f"training diverged: the loss is {value} in epoch {epoch + 1}, step {step + 1}; "
                    f"lower the learning rate (lr={config.lr:g})"
                )
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            self.sched.step()
            total += value * len(yb)
            if on_step is not None:
                on_step(epoch, step, value)
        return total
