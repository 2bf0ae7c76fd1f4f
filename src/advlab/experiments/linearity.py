"""The linearity view of adversarial examples (Goodfellow, Shlens & Szegedy 2015), as curves and an identity.

For a linear model ``z = W x + b`` on ``x in [0, 1]^n`` (logits ``z in R^K``, rows ``w_c`` of ``W``), an
L-inf perturbation ``eta`` with ``||eta||_inf <= eps`` changes the difference of two logits by

    (w_t - w_y) . eta  <=  eps * ||w_t - w_y||_1,

with equality for ``eta = eps * sign(w_t - w_y)``: the step of FGSM on the margin ``z_t - z_y``. The
change grows linearly with the dimension ``n`` (``||w||_1 ~ n * mean|w_j|``) while ``eps`` stays fixed, so
many small changes add up to a large one: a linear model is very vulnerable. When a pixel is clipped to
the box ``[0, 1]`` its term ``(w_t - w_y)_j * eta_j`` shrinks, so the identity holds exactly only for
pixels at least ``eps`` away from 0 and 1 along the step (see :func:`fgsm_margin_shift`).

:func:`fgsm_curve` gives the accuracy of a model under FGSM (``x + eps * sign(grad_x L)``, clipped to
[0, 1]) for a list of ``eps`` in [0, 1] pixel units; :func:`linear_digits_model` trains the linear model
(a multinomial logistic regression on scikit-learn's 8x8 digits) that the CLI compares with the CNN;
:func:`affine_map` reads ``W`` and ``b`` off any affine model; :func:`linear_flip_eps` is the smallest
L-inf perturbation (ignoring the box) that changes a linear model's decision: ``min_{t != y} (z_y -
z_t) / ||w_y - w_t||_1``, the distance to the nearest pairwise decision boundary in the L-inf metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from advlab.attacks import FGSM
from advlab.device import device_of
from advlab.evaluation import metrics
from advlab.losses import Loss


# ------------------------------------------------------------------------------------------------ curves
def check_eps_list(eps_list: Sequence[float]) -> list[float]:
    """The epsilons as floats, in the given order; ValueError unless each is in [0, 1] (L-inf, [0, 1] pixels)."""
    eps = [float(e) for e in eps_list]
    if not eps:
        raise ValueError("eps_list is empty: give at least one eps")
    bad = [e for e in eps if not 0 <= e <= 1]
    if bad:
        raise ValueError(f"eps must be in [0, 1] ([0, 1] pixel units, L-inf), got {bad[0]}")
    return eps


def fgsm_curve(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps_list: Sequence[float],
    *,
    loss: str | Loss = "ce",
    batch_size: int = 512,
) -> list[tuple[float, float]]:
    """``[(eps, accuracy), ...]``: top-1 accuracy of ``model`` on
    ``x_adv = clip_[0,1](x + eps * sign(grad_x L(f(x), y)))``.

    One independent FGSM step per eps (Goodfellow et al. 2015; not warm-started from a smaller eps, so the
    curve is what a single step of that size does and need not be monotone for a non-linear model).
    ``eps = 0`` is the clean accuracy. ``x``: (N, C, H, W) in [0, 1]; ``y``: (N,) labels; ``eps`` in
    [0, 1] pixel units; ``loss``: "ce" (the paper's) or any advlab loss, e.g. "margin", whose gradient
    does not vanish where float32 softmax saturates. The model should be in eval mode. Accuracy
    (:func:`advlab.evaluation.metrics.accuracy`) counts a sample as correct when ``argmax f(x_adv) == y``, so a
    clean mistake stays a mistake.
    """
    eps = check_eps_list(eps_list)
    if y.shape != (len(x),):
        raise ValueError(f"y must have shape ({len(x)},), got {tuple(y.shape)}")
    if len(x) == 0:
        raise ValueError("x is empty: nothing to attack")
    return [(e, metrics.accuracy(y, _fgsm_predictions(model, x, y, e, loss, batch_size))) for e in eps]


def _fgsm_predictions(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, loss: str | Loss, batch_size: int
) -> torch.Tensor:
    """(N,) ``argmax f(x_adv)`` of one FGSM step of size ``eps`` (``x`` itself at eps 0), batch by batch."""
    preds = []
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        xa = xb if eps == 0 else FGSM(eps=eps, loss=loss).perturb(model, xb, yb)
        with torch.no_grad():
            preds.append(model(xa).argmax(1).to(y.device))
    return torch.cat(preds)


# ------------------------------------------------------------------------------------------------ the linear model
def linear_digits_model(
    seed: int = 0,
    *,
    epochs: int = 30,
    lr: float = 0.05,
    weight_decay: float = 0.0,
    data: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> nn.Sequential:
    """A multinomial logistic regression on scikit-learn's 8x8 digits: ``z = W x + b``, ``W`` (10, 64).

    ``nn.Sequential(nn.Flatten(), nn.Linear(64, 10))`` taking (N, 1, 8, 8) images in [0, 1], trained with
    :func:`advlab.defenses.training.fit` (Adam, one-cycle schedule, cross-entropy, no shift augmentation) on
    ``digits:train`` (or ``data = (x, y)``) from ``seed``; well under a second of training on one CPU thread (the first
    Adam in a process also imports torch._dynamo, a few seconds) and 96-97% (seeds 0-4) on
    ``digits:test``. Deterministic for a given seed and thread count. Returned in eval mode.
    """
    from advlab.defenses.training import TrainConfig, fit

    if data is None:
        from advlab.data import load

        data = load("digits:train")
    x, y = data
    torch.manual_seed(seed)  # the initial weights; fit seeds its own shuffling
    model = nn.Sequential(nn.Flatten(), nn.Linear(x[0].numel(), int(y.max()) + 1))
    fit(model, x, y, TrainConfig(epochs=epochs, lr=lr, weight_decay=weight_decay, shift=0, seed=seed))
    return model.eval()


def affine_map(model: nn.Module, input_shape: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, b)`` of an affine model ``f(x) = W vec(x) + b``: ``b = f(0)``, row ``w_c = grad_x f_c`` at ``x = 0``.

    ``input_shape``: one input's shape, e.g. (1, 8, 8). ``W``: (K, n) with n = prod(input_shape), float32
    on the model's device. For a non-affine model this is only its linearization at 0.
    """
    x0 = torch.zeros(1, *input_shape, device=device_of(model))
    with torch.no_grad():
        b = model(x0)[0].float()
    rows = []
    for c in range(len(b)):
        xg = x0.clone().requires_grad_(True)
        with torch.enable_grad():
            (g,) = torch.autograd.grad(model(xg)[0, c], xg)
        rows.append(g.flatten().float())
    return torch.stack(rows), b


def fgsm_margin_shift(w: torch.Tensor, y: torch.Tensor, t: torch.Tensor, eps: float) -> torch.Tensor:
    """Goodfellow's predicted change of ``z_t - z_y`` under the step ``eta = eps * sign(w_t - w_y)``:
    ``eps * ||w_t - w_y||_1``.

    ``w``: (K, n) weights; ``y``, ``t``: (N,) class pairs; returns (N,) in logit units. Exact when no
    pixel of ``x + eta`` leaves [0, 1]; otherwise an upper bound.
    """
    return eps * (w[t] - w[y]).abs().sum(1)


def linear_flip_eps(w: torch.Tensor, b: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(N,) the smallest L-inf perturbation that makes a linear model misclassify ``x``, ignoring the [0, 1] box:

        eps*(x) = min_{t != y} max(0, z_y - z_t) / ||w_y - w_t||_1,   z = W vec(x) + b

    (0 for an image already misclassified or tied). The box can only make the true minimum larger.
    """
    z = x.flatten(1).float() @ w.T + b
    zy = z.gather(1, y[:, None])
    norms = (w[y][:, None, :] - w[None, :, :]).abs().sum(2)  # (N, K): ||w_y - w_t||_1
    ratio = (zy - z).clamp_min(0) / norms.clamp_min(torch.finfo(norms.dtype).tiny)
    ratio = ratio.scatter(1, y[:, None], float("inf"))
    return ratio.amin(1)


# ------------------------------------------------------------------------------------------------ summaries
def eps_below(curve: Sequence[tuple[float, float]], level: float = 0.5) -> float | None:
    """The first eps of a :func:`fgsm_curve` whose accuracy is below ``level`` (None when none is)."""
    return next((e for e, a in curve if a < level), None)


def linear_margins(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float | None]:
    """For an affine model (:func:`affine_map` at ``x``'s shape): ``median_flip_eps``, the median over the images
    of :func:`linear_flip_eps` (the finite ones; None when none is), and ``mean_pair_l1``, the mean of
    ``||w_c - w_t||_1`` over the ordered class pairs c != t (logit units per unit of L-inf perturbation)."""
    w, b = affine_map(model, x.shape[1:])
    flip = linear_flip_eps(w, b, x, y)
    finite = torch.isfinite(flip)
    pairs = (w[:, None, :] - w[None, :, :]).abs().sum(2)
    return {
        "median_flip_eps": float(flip[finite].median()) if finite.any() else None,
        "mean_pair_l1": float(pairs.sum() / (len(w) * (len(w) - 1))),
    }
