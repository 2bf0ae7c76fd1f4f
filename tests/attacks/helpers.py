"""Checks every attack test makes of an AttackResult."""

from __future__ import annotations

import torch

from advlab import attacks
from advlab.threat import distance


def check_result(res: attacks.AttackResult, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x_adv has x's shape and dtype, lies in [0, 1], the reported logits are the model's on it and the
    reported L2 norms are those of x_adv - x. Returns the model's softmax on x_adv."""
    assert res.x_adv.shape == x.shape and res.x_adv.dtype == x.dtype
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    with torch.no_grad():
        logits = model(res.x_adv)
    assert torch.equal(logits.argmax(1), res.prediction)  # the reported logits are the model's on x_adv
    assert torch.allclose(res.l2, distance(res.x_adv - x, "l2"))
    return logits.softmax(1)


def check_png_roundtrip(
    res: attacks.AttackResult, model: torch.nn.Module, labels: torch.Tensor, targeted: bool
) -> None:
    """x_adv is on the 8-bit grid and exactly what a saved PNG holds is as adversarial as reported."""
    assert torch.allclose(res.x_adv * 255, (res.x_adv * 255).round(), atol=1e-4)
    reloaded = (res.x_adv * 255).round().to(torch.uint8).float() / 255
    with torch.no_grad():
        pred = model(reloaded).argmax(1)
    assert torch.equal(pred == labels if targeted else pred != labels, res.success)


class RowByRow(torch.nn.Module):
    """``net`` applied to one sample at a time: each row's logits (and input gradient) come from the same batch-of-one
    computation whatever batch the row sits in.

    Batched kernels may round a row differently at another batch size (oneDNN picks its kernels per shape: on
    AVX-512/AMX CPUs a shrinking batch changes the last bits). Claims that hold in exact arithmetic because two
    runs compute the same iterates on different batches (early stopping shrinks the batch to the samples still
    running; an attack on a subset of the rows) are checked through this wrapper, where they hold bit for bit on
    any CPU, instead of on the batched model, where they hold only on CPUs whose kernels ignore the batch size.
    """

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.net(x[i : i + 1]) for i in range(len(x))])
