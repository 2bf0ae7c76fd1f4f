"""Supervised training of small classifiers on in-memory [0, 1] images (digits-cnn's weights come from here).

Deterministic: the same seed, data and thread count give bit-identical weights on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class TrainConfig:
    """Adam with a one-cycle learning-rate schedule; augmentation by random circular shifts of up to ``shift`` pixels."""

    epochs: int = 40
    lr: float = 2e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    shift: int = 1
    seed: int = 0


@dataclass
class TrainHistory:
    """Per-epoch mean training loss and, when evaluation data is given, accuracy on it."""

    loss: list[float] = field(default_factory=list)
    eval_accuracy: list[float] = field(default_factory=list)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 512) -> float:
    """Top-1 accuracy of ``model`` on ``(x, y)`` in eval mode, restoring the model's mode afterwards."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch_size):
            correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / max(1, len(y))


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig = TrainConfig(),
    eval_data: tuple[torch.Tensor, torch.Tensor] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
    perturb: Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> TrainHistory:
    """Train ``model`` in place on images ``x`` (N, C, H, W) in [0, 1] and labels ``y`` by minimizing cross-entropy.

    ``on_step(epoch, step, loss)`` is called after every optimizer step (the CLI hangs a progress bar on it).
    ``perturb(model, xb, yb) -> xb'`` replaces each (augmented) batch before the step: with an attack, this
    is adversarial training (Madry et al. 2018: min_theta E max_{||d|| <= eps} CE(f(x + d), y)).
    Leaves the model in eval mode.
    """
    if config.epochs < 1 or config.batch_size < 1 or config.lr <= 0:
        raise ValueError(f"epochs and batch_size must be >= 1 and lr > 0, got {config}")
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (len(y) + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
    history = TrainHistory()
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(y), generator=gen)
        total = 0.0
        for step, start in enumerate(range(0, len(y), config.batch_size)):
            idx = order[start : start + config.batch_size]
            xb = x[idx]
            if config.shift:
                dy, dx = torch.randint(-config.shift, config.shift + 1, (2,), generator=gen).tolist()
                xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            if perturb is not None:
                xb = perturb(model, xb, y[idx]).detach()
            loss = F.cross_entropy(model(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            if on_step is not None:
                on_step(epoch, step, loss.item())
        history.loss.append(total / len(y))
        if eval_data is not None:
            history.eval_accuracy.append(accuracy(model, *eval_data))
    model.eval()
    return history
