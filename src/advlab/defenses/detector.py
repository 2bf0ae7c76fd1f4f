"""A detector of adversarial inputs in the SafetyNet spirit, and the adaptive attack that must fool it too.

SafetyNet (Lu, Issaranon & Forsyth, ICCV 2017) puts a second classifier on the late activations of the
network: it accepts an input as "clean" or rejects it as "adversarial". The lecture's point (research note 004) is
that such a detector is only a defense if an attacker who knows it cannot fool the classifier AND the
detector at the same time; a detector that only ever saw attacks that ignore it proves nothing.

The detector (:func:`train_detector`). For an image x in [0, 1] (N, C, H, W), let a(x) be the output of
one layer of the classifier f (default: the penultimate layer, :func:`penultimate_layer`), pooled to a
vector in R^d (``pool="flatten"``: all values; ``"mean"``: the spatial mean per channel of an (N, C, H, W)
map; ``"auto"``: flatten up to :data:`MAX_FLAT` values, else mean). Then

    u(x)   = (a(x) - mu) / sigma                     standardized with the training set's mean and spread
    z_d(x) = w_2 . relu(W_1 u(x) + b_1) + b_2        a one-hidden-layer MLP (``hidden`` units, default 64)
             (``hidden=0``: w . u(x) + b, logistic regression)
    d(x)   = sigmoid(z_d(x)) = P("adversarial" | x)  the score, in [0, 1]; z_d is its log-odds

trained on clean images (label 0) and adversarial ones (label 1) by minimizing the class-balanced binary
cross-entropy (each class weighs half, whatever the counts) plus an L2 penalty on the weights, with Adam.
Why a small MLP and not logistic regression: adversarial examples move the penultimate layer mostly by
making a few units abnormally large for the predicted class (research note 003), and which units those are
depends on the class; a hidden layer can express "large for a unit that does not fit the rest", while a
linear score cannot (on digits-cnn's penultimate layer, held-out same-eps PGD: AUC about 0.95 for the MLP,
0.78 for logistic regression; ``hidden=0`` is there to compare).
Unlike SafetyNet's RBF-SVM on quantized codes, the detector is smooth on purpose: its gradients are
honest, so an adaptive attack measures the defense and not gradient masking (Athalye et al. 2018).

Operating point. An input is flagged iff d(x) > tau; :func:`threshold_at_fpr` picks tau on clean held-out
images so that at most a fraction ``fpr`` (e.g. 5%) of them is flagged. :func:`roc_auc` is the
threshold-free measure P(d(x_adv) > d(x_clean)) + 1/2 P(equal), computed exactly from ranks.

The adaptive attack. :class:`Guarded` is the classifier with a reject option: K + 1 outputs, the K logits
z of f and a "reject" output z_max + (z_d - logit(tau)), which is the largest exactly when the input is
flagged. :func:`guarded_loss` is the objective to ascend on it (untargeted, true class y):

    L(x) = min(m_f, kappa) + c * min(m_d, kappa) + (1 + c) kappa * [m_f > 0 and m_d > 0]
    m_f = max_{j != y} z_j - z_y        (> 0 iff f misclassifies x; logit units)
    m_d = logit(tau) - z_d(x)           (> 0 iff the detector does not flag x; log-odds units)

Why this form rather than the lecture's loss-plus-penalty CE(f(x), y) + c log(1 - d(x)): (1) each hinge
stops pulling once its goal is met with margin ``kappa``, so the gradient goes to the goal still unmet,
whereas an unbounded CE keeps buying "more misclassified" at the detector's expense (on digits-cnn the
CE form fooled both on about half as many images); (2) margins in logit units do not saturate as softmax
probabilities do; (3) the last term is a constant (no gradient) that ranks every success above every
failure (a success has L > (1 + c) kappa, a failure L < (1 + c) kappa), so PGD's "most adversarial
iterate" rule (a successful iterate first, then the highest loss) keeps an iterate that fools both
whenever one was visited; on the K + 1 outputs a rejected input also counts as "argmax != y", but its
loss is lower than any real evasion's. ``c`` converts the detector's log-odds into logit units (default
1). The plain max-min form min(m_f, c m_d), also exact in sign, did worse on digits (the gradient flips
between the goals from step to step). Usage:

    guarded = Guarded(model, detector, tau)
    x_adv = PGD(eps=0.1, steps=10, loss=guarded_loss())(guarded, x, y).x_adv
    success = evades(model, detector, tau, x_adv, y)       # misclassified and d(x_adv) <= tau

The same :func:`evades` scores an attack that ignores the detector (the non-adaptive baseline).

Nothing here changes the classifier: its parameters are never trained, its layer is read by a forward
hook that is removed on exit (also on errors), and its train/eval flags are restored.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from advlab.errors import AdvlabError
from advlab.hooks import first_tensor
from advlab.losses import margin

#: ``pool="auto"`` flattens a layer's output up to this many values per sample, else averages over space
MAX_FLAT = 4096
#: the pooling choices
POOLS = ("auto", "flatten", "mean")
#: the false-positive rate on clean held-out images at which the threshold is chosen by default
DEFAULT_FPR = 0.05

Scores = torch.Tensor | Sequence[float]


# ------------------------------------------------------------------------------------------------ the layer
def _module(model: nn.Module, layer: str) -> nn.Module:
    modules = dict(model.named_modules())
    if layer not in modules or layer == "":
        some = ", ".join(repr(n) for n in list(modules)[1:6])
        raise AdvlabError(f"unknown layer {layer!r}: names come from model.named_modules() (e.g. {some})")
    return modules[layer]


@contextmanager
def _captured(model: nn.Module, layer: str) -> Iterator[list[torch.Tensor]]:
    """Yield a list that holds, after a forward, the output of ``layer`` (its last call), still in the graph.

    The output is cloned (so an in-place layer after it cannot change it; the clone stays differentiable).
    The hook is removed on exit, also when the body raises.
    """
    store: list[torch.Tensor] = []

    def hook(mod: nn.Module, args: Any, out: Any) -> None:
        t = first_tensor(out)
        if t is not None:
            store[:] = [t.clone()]

    handle = _module(model, layer).register_forward_hook(hook)
    try:
        yield store
    finally:
        handle.remove()


def _output(store: list[torch.Tensor], layer: str, n: int) -> torch.Tensor:
    if not store:
        raise AdvlabError(f"layer {layer!r} was not called in the forward pass (or returned no tensor)")
    a = store[0]
    if a.ndim == 0 or a.shape[0] != n:
        raise AdvlabError(f"layer {layer!r} returned shape {tuple(a.shape)}, not one row per image ({n})")
    return a


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    """The model in eval mode for the body; every module's own ``training`` flag is restored after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, flag in modes:
            m.training = flag


def penultimate_layer(model: nn.Module, x: torch.Tensor) -> str:
    """The name of the module whose output feeds the classifier's last weighted layer.

    One forward of ``x`` (a few images suffice) records the order in which the leaf modules, and modules
    with weights of their own, produce outputs; the last one with weights is the output layer, and the
    module called just before it is the penultimate layer (for digits-cnn ``net.classifier.2``, the ReLU
    after the 512 -> 128 layer; for a ResNet the global average pool).
    """
    modules = [
        (n, m)
        for n, m in model.named_modules()
        if n and (next(m.children(), None) is None or next(m.parameters(recurse=False), None) is not None)
    ]
    order: list[str] = []
    handles = []
    try:
        for name, module in modules:

            def hook(mod: nn.Module, args: Any, out: Any, name: str = name) -> None:
                t = first_tensor(out)
                if t is not None and t.ndim > 0 and t.shape[0] == len(x):
                    if name in order:
                        order.remove(name)  # a module called twice counts at its last call
                    order.append(name)

            handles.append(module.register_forward_hook(hook))
        with torch.no_grad(), _eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()
    owners = {n for n, m in modules if next(m.parameters(recurse=False), None) is not None}
    weighted = [i for i, n in enumerate(order) if n in owners]
    if not weighted or weighted[-1] == 0:
        raise AdvlabError(
            "cannot find the penultimate layer (no module runs before the last weighted one); name a layer"
        )
    return order[weighted[-1] - 1]


def pool_features(a: torch.Tensor, pool: str) -> torch.Tensor:
    """A layer's output (N, ...) as vectors (N, d): ``"flatten"`` all values, ``"mean"`` the spatial mean per channel.

    ``"mean"`` on an (N, C, H, W) map gives (N, C); on an output with two dimensions or fewer it flattens.
    """
    if pool == "mean" and a.ndim > 2:
        return a.flatten(2).mean(2)
    if pool in ("flatten", "mean"):
        return a.flatten(1)
    raise AdvlabError(f"pool must be 'flatten' or 'mean' here, got {pool!r}")


def layer_features(
    model: nn.Module, layer: str, x: torch.Tensor, *, pool: str = "flatten", batch_size: int = 256
) -> torch.Tensor:
    """``pool(a_layer(x))`` (N, d) in the layer's units, float32, on ``x``'s device; no gradients, model in eval
    mode."""
    out = []
    with torch.no_grad(), _eval_mode(model), _captured(model, layer) as store:
        for i in range(0, len(x), batch_size):
            xb = x[i : i + batch_size]
            store.clear()
            model(xb)
            out.append(pool_features(_output(store, layer, len(xb)), pool).float())
    return torch.cat(out)


# ------------------------------------------------------------------------------------------------ the detector
class Detector(nn.Module):
    """d(x) = sigmoid(head((pool(a_layer(x)) - mean) / scale)): the probability that x is adversarial.

    ``classifier`` is the model whose layer is read; it is referenced, not registered as a submodule, so
    ``state_dict()`` holds only the detector's own tensors (``mean``, ``scale``, ``head.*``) and moving or
    training the detector never touches the classifier. Build one with :func:`train_detector`, or from
    saved tensors with :meth:`from_state`.
    """

    mean: torch.Tensor  # (d,) feature means, in the layer's units
    scale: torch.Tensor  # (d,) feature standard deviations (floored), in the layer's units

    def __init__(self, classifier: nn.Module, layer: str, dim: int, *, hidden: int = 64, pool: str = "flatten") -> None:
        super().__init__()
        if hidden < 0:
            raise AdvlabError(f"hidden must be >= 0 (0: logistic regression), got {hidden}")
        if pool not in ("flatten", "mean"):
            raise AdvlabError(f"pool must be 'flatten' or 'mean', got {pool!r}")
        _module(classifier, layer)
        object.__setattr__(self, "classifier", classifier)  # not a submodule: see the class docstring
        self.classifier: nn.Module
        self.layer, self.dim, self.hidden, self.pool = layer, int(dim), int(hidden), pool
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("scale", torch.ones(dim))
        self.head: nn.Module = (
            nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, 1)) if hidden else nn.Linear(dim, 1)
        )

    def extra_repr(self) -> str:
        return f"layer={self.layer!r}, dim={self.dim}, hidden={self.hidden}, pool={self.pool!r}"

    def config(self) -> dict[str, str]:
        """What :meth:`from_state` needs besides the tensors (strings, for safetensors metadata)."""
        return {"layer": self.layer, "dim": str(self.dim), "hidden": str(self.hidden), "pool": self.pool}

    @classmethod
    def from_state(
        cls, classifier: nn.Module, state: Mapping[str, torch.Tensor], config: Mapping[str, str]
    ) -> Detector:
        """Rebuild a saved detector: ``state`` = its ``state_dict()``, ``config`` = its :meth:`config`."""
        det = cls(classifier, config["layer"], int(config["dim"]), hidden=int(config["hidden"]), pool=config["pool"])
        det.load_state_dict(dict(state))
        return det.eval()

    def head_logit(self, features: torch.Tensor) -> torch.Tensor:
        """z_d (N,) from pooled features (N, d): the log-odds that the input is adversarial."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise AdvlabError(f"the detector takes {self.dim} features per image, got shape {tuple(features.shape)}")
        u = (features.to(self.mean.dtype) - self.mean) / self.scale
        return self.head(u).squeeze(1)

    def logit(self, x: torch.Tensor) -> torch.Tensor:
        """z_d(x) (N,), differentiable in x (one forward of the classifier, as it is: mode not changed)."""
        with _captured(self.classifier, self.layer) as store:
            self.classifier(x)
        return self.head_logit(pool_features(_output(store, self.layer, len(x)), self.pool))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(x)

    def score(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """d(x) = P("adversarial") (N,), float64 (so that scores near 1 stay distinct), on ``x``'s device.

        No gradients; the classifier and the detector run in eval mode (their flags are restored after).
        """
        with torch.no_grad(), _eval_mode(self):
            feats = layer_features(self.classifier, self.layer, x, pool=self.pool, batch_size=batch_size)
            return torch.sigmoid(torch.cat([self.head_logit(f).double() for f in feats.split(batch_size)]))


def _init_(module: nn.Module, gen: torch.Generator) -> None:
    """PyTorch's default Linear init, U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, drawn from ``gen``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            bound = 1 / math.sqrt(m.in_features)
            with torch.no_grad():
                for p in (m.weight, m.bias):
                    p.copy_(torch.empty(p.shape).uniform_(-bound, bound, generator=gen))


def train_detector(
    model: nn.Module,
    layer: str | None,
    x_clean: torch.Tensor,
    x_adv: torch.Tensor,
    *,
    epochs: int = 50,
    seed: int = 0,
    hidden: int = 64,
    pool: str = "auto",
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    batch_size: int = 128,
) -> Detector:
    """Train a :class:`Detector` on ``model``'s ``layer`` to tell ``x_clean`` (label 0) from ``x_adv`` (label 1).

    ``x_clean``, ``x_adv``: images (N, C, H, W) in [0, 1] on the model's device (the counts may differ).
    ``layer``: a name from ``model.named_modules()``; None = :func:`penultimate_layer`. ``pool``: "flatten",
    "mean" or "auto" (flatten up to :data:`MAX_FLAT` values per image). ``hidden``: MLP width (0: logistic
    regression). Minimizes, over ``epochs`` passes of shuffled mini-batches with Adam (learning rate ``lr``),

        (1/2) mean_clean softplus(z_d) + (1/2) mean_adv softplus(-z_d) + weight_decay * ||W||^2 / 2

    (the class-balanced binary cross-entropy of d = sigmoid(z_d); the decay is Adam's, on the weights and
    biases). The features are standardized with the mean and standard deviation over both sets (a unit
    that never varies is divided by 1e-3 of the typical spread, not by 0). Initialization and shuffling
    come from ``seed``: the same seed gives the same detector. The classifier is not changed.
    """
    _check_detector_inputs(epochs, pool, x_clean, x_adv)
    if layer is None:
        layer = penultimate_layer(model, x_clean[:2])
    _module(model, layer)
    if pool == "auto":
        probe = layer_features(model, layer, x_clean[:1], pool="flatten")
        pool = "flatten" if probe.shape[1] <= MAX_FLAT else "mean"
    fc = layer_features(model, layer, x_clean, pool=pool)
    fa = layer_features(model, layer, x_adv, pool=pool)
    return fit_detector(
        model,
        layer,
        fc,
        fa,
        pool=pool,
        epochs=epochs,
        seed=seed,
        hidden=hidden,
        lr=lr,
        weight_decay=weight_decay,
        batch_size=batch_size,
    )


def fit_detector(
    model: nn.Module,
    layer: str,
    fc: torch.Tensor,
    fa: torch.Tensor,
    *,
    pool: str,
    epochs: int = 50,
    seed: int = 0,
    hidden: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-3,
    batch_size: int = 128,
) -> Detector:
    """:func:`train_detector` from the features it trains on: ``fc``, ``fa`` (N, d) = :func:`layer_features` of
    the clean and the adversarial images on ``layer`` with ``pool`` ("flatten" or "mean"), on one device; so a
    caller that reads its images batch by batch keeps only these vectors."""
    feats = torch.cat([fc, fa])
    target = torch.cat([torch.zeros(len(fc)), torch.ones(len(fa))]).to(feats.device)
    weight = torch.where(target > 0, 0.5 / len(fa), 0.5 / len(fc))  # each class weighs 1/2 in the loss
    gen = torch.Generator().manual_seed(seed)
    det = Detector(model, layer, feats.shape[1], hidden=hidden, pool=pool)
    _init_(det.head, gen)
    det = det.to(feats.device)
    std, mu = torch.std_mean(feats, dim=0)
    with torch.no_grad():
        det.mean.copy_(mu)
        det.scale.copy_(std.clamp_min(1e-3 * float(std.mean()) + 1e-12))
    opt = torch.optim.Adam(det.head.parameters(), lr=lr, weight_decay=weight_decay)
    _fit_head(det, opt, feats, target, weight, gen, epochs=epochs, batch_size=batch_size)
    for p in det.parameters():
        p.requires_grad_(False)
    return det.eval()


def _check_detector_inputs(epochs: int, pool: str, x_clean: torch.Tensor, x_adv: torch.Tensor) -> None:
    """Raise AdvlabError unless epochs >= 1, ``pool`` is known and both image batches are non-empty and alike."""
    if epochs < 1:
        raise AdvlabError(f"epochs must be >= 1, got {epochs}")
    if pool not in POOLS:
        raise AdvlabError(f"pool must be one of {', '.join(POOLS)}, got {pool!r}")
    for name, xs in (("x_clean", x_clean), ("x_adv", x_adv)):
        if not isinstance(xs, torch.Tensor) or xs.ndim < 2 or len(xs) == 0:
            raise AdvlabError(f"{name} must be a non-empty batch of images (N, C, H, W)")
    if x_clean.shape[1:] != x_adv.shape[1:]:
        raise AdvlabError(f"x_clean images have shape {tuple(x_clean.shape[1:])} but x_adv {tuple(x_adv.shape[1:])}")


def _fit_head(
    det: Detector,
    opt: torch.optim.Optimizer,
    feats: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor,
    gen: torch.Generator,
    *,
    epochs: int,
    batch_size: int,
) -> None:
    """Minimize sum_i weight_i BCE(z_d(feats_i), target_i) over ``epochs`` shuffled passes (order from ``gen``).

    Each mini-batch's weighted sum is scaled by n / batch so that it estimates the full-data objective.
    """
    det.train()
    n = len(feats)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen).to(feats.device)
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                z = det.head_logit(feats[idx])
                loss = (weight[idx] * F.binary_cross_entropy_with_logits(z, target[idx], reduction="none")).sum()
                loss = loss * n / len(idx)  # the batch's estimate of the full-data objective
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()


# ------------------------------------------------------------------------------------------------ scores
def _scores(s: Scores, what: str) -> torch.Tensor:
    t = torch.as_tensor(s).detach().reshape(-1).to("cpu", torch.float64)
    if len(t) == 0:
        raise AdvlabError(f"{what} is empty")
    if not bool(torch.isfinite(t).all()):
        raise AdvlabError(f"{what} has NaN or infinite values")
    return t


def _midranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of ``v``, tied values sharing the mean of their ranks (float64)."""
    srt, order = v.sort(stable=True)
    _, inverse, counts = torch.unique_consecutive(srt, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)
    mid = last - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(v)
    ranks[order] = mid[inverse]
    return ranks


def roc_auc(scores_clean: Scores, scores_adv: Scores) -> float:
    """Area under the ROC curve: P(s_adv > s_clean) + 1/2 P(s_adv = s_clean) over all (clean, adv) pairs.

    Exact, from the Mann-Whitney statistic: with R_a the sum of the adversarial scores' midranks in the
    pooled sample (ties share the mean of their ranks), AUC = (R_a - n_a (n_a + 1) / 2) / (n_a n_c).
    1 = every adversarial score above every clean one, 0 = below, 1/2 = no better than chance. Scores in
    any monotone units (probabilities or log-odds give the same AUC).
    """
    c, a = _scores(scores_clean, "scores_clean"), _scores(scores_adv, "scores_adv")
    ranks = _midranks(torch.cat([c, a]))
    n_c, n_a = len(c), len(a)
    return float((ranks[n_c:].sum() - n_a * (n_a + 1) / 2) / (n_a * n_c))


def roc_curve(scores_clean: Scores, scores_adv: Scores) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(fpr, tpr, thresholds)`` (float64): one point per distinct score t, flagging ``score >= t``.

    fpr(t) = fraction of clean scores >= t, tpr(t) = fraction of adversarial scores >= t; the first point
    is t = +inf (0, 0), the last the smallest score (1, 1). The trapezoidal area under it equals
    :func:`roc_auc` (a run of tied scores is one diagonal segment, worth half).
    """
    c, a = _scores(scores_clean, "scores_clean").sort().values, _scores(scores_adv, "scores_adv").sort().values
    t = torch.cat([c, a]).unique().flip(0)
    fpr = (len(c) - torch.searchsorted(c, t, side="left")).to(torch.float64) / len(c)
    tpr = (len(a) - torch.searchsorted(a, t, side="left")).to(torch.float64) / len(a)
    zero = torch.zeros(1, dtype=torch.float64)
    return (
        torch.cat([zero, fpr]),
        torch.cat([zero, tpr]),
        torch.cat([torch.full((1,), math.inf, dtype=torch.float64), t]),
    )


def threshold_at_fpr(scores_clean: Scores, fpr: float = DEFAULT_FPR) -> float:
    """The threshold tau such that flagging ``score > tau`` flags at most a fraction ``fpr`` of these clean scores.

    With the n scores sorted from the largest, s_(1) >= s_(2) >= ..., and k = floor(fpr n): tau = s_(k+1),
    the smallest threshold allowed (ties at tau are not flagged, so fewer may be). ``fpr`` = 1 gives -inf.
    """
    if not 0 <= fpr <= 1:
        raise AdvlabError(f"fpr must be in [0, 1], got {fpr}")
    s = _scores(scores_clean, "scores_clean").sort(descending=True).values
    k = math.floor(fpr * len(s) + 1e-9)
    return -math.inf if k >= len(s) else float(s[k])


def evades(
    model: nn.Module, detector: Detector, threshold: float, x_adv: torch.Tensor, y: torch.Tensor, batch_size: int = 256
) -> torch.Tensor:
    """(N,) bool on the CPU: ``argmax f(x_adv) != y`` and ``d(x_adv) <= threshold`` (misclassified, not flagged).

    The success of an attack against the guarded classifier, adaptive or not.
    """
    with torch.no_grad(), _eval_mode(model):
        pred = torch.cat([model(xb).argmax(1) for xb in x_adv.split(batch_size)])
    flagged = detector.score(x_adv, batch_size) > threshold
    return ((pred != y.to(pred.device)) & ~flagged).cpu()


# ------------------------------------------------------------------------------------------------ the adaptive attack
def _logit(p: float) -> float:
    """log(p / (1 - p)), with p clamped to [1e-15, 1 - 1e-15] (finite for thresholds 0 and 1)."""
    p = min(max(float(p), 1e-15), 1 - 1e-15)
    return math.log(p / (1 - p))


class Guarded(nn.Module):
    """The classifier with the detector as a reject option: (N, K + 1) outputs for (N, C, H, W) images in [0, 1].

    Columns 0..K-1 are f's logits z; column K is z_max + z_d(x) - logit(threshold), the largest exactly
    when d(x) > threshold (the input is rejected). One forward of ``model`` gives both (the detector reads
    ``detector.layer`` of ``model`` through a hook removed after the forward). ``threshold`` is a
    probability in [0, 1]. The model's and detector's modes are used as they are; attack it with
    :func:`guarded_loss` (see the module docstring), which also works with every other advlab attack
    that takes a ``loss``.
    """

    def __init__(self, model: nn.Module, detector: Detector, threshold: float) -> None:
        super().__init__()
        if not 0 <= threshold <= 1:
            raise AdvlabError(f"threshold must be a probability in [0, 1], got {threshold}")
        _module(model, detector.layer)
        self.model, self.detector, self.threshold = model, detector, float(threshold)
        self.info = getattr(model, "info", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _captured(self.model, self.detector.layer) as store:
            z = self.model(x)
        zd = self.detector.head_logit(pool_features(_output(store, self.detector.layer, len(x)), self.detector.pool))
        reject = z.amax(1) + (zd.to(z.dtype) - _logit(self.threshold))
        return torch.cat([z, reject[:, None]], 1)


def split_guarded(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z, m_d)`` from :class:`Guarded` outputs: the K logits and logit(threshold) - z_d (> 0: not flagged)."""
    z = out[:, :-1]
    return z, z.amax(1) - out[:, -1]


@dataclass(frozen=True)
class GuardedLoss:
    """The adaptive objective on :class:`Guarded` outputs, to ascend, per sample (N,):

        L = min(m_f, kappa) + c * min(m_d, kappa) + (1 + c) * kappa * [m_f > 0 and m_d > 0]

    m_f = max_{j != y} z_j - z_y (targeted, y = target: z_y - max_{j != y} z_j), in logit units;
    m_d = logit(threshold) - z_d(x), in the detector's log-odds units; ``c`` > 0 converts one into the
    other; ``kappa`` > 0 is the margin beyond which a goal stops pulling. L > (1 + c) kappa exactly when
    the input fools classifier and detector. Why this form: see the module docstring. A frozen config
    with a readable repr, called as ``loss(outputs, y, targeted)`` like every advlab loss.
    """

    c: float = 1.0
    kappa: float = 1.0

    def __post_init__(self) -> None:
        if not self.c > 0:
            raise AdvlabError(f"c must be positive, got {self.c}")
        if not self.kappa > 0:
            raise AdvlabError(f"kappa must be positive, got {self.kappa}")

    def __call__(
        self, out: torch.Tensor, y: torch.Tensor, targeted: bool = False, y_true: torch.Tensor | None = None
    ) -> torch.Tensor:
        z, m_d = split_guarded(out.float())
        m_f = margin(z, y, targeted)
        both = ((m_f > 0) & (m_d > 0)).float()
        return m_f.clamp(max=self.kappa) + self.c * m_d.clamp(max=self.kappa) + (1 + self.c) * self.kappa * both


def guarded_loss(c: float = 1.0, kappa: float = 1.0) -> GuardedLoss:
    """:class:`GuardedLoss` ``(c, kappa)``: the adaptive objective, for ``PGD(loss=guarded_loss())`` on a
    :class:`Guarded` model."""
    return GuardedLoss(float(c), float(kappa))
