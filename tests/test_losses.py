"""Losses: signs, invariances and the facts each attack relies on."""

from __future__ import annotations

import torch

from advlab import losses


def test_margin_is_positive_exactly_on_success() -> None:
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    m = losses.margin(z, y)
    assert torch.equal(m > 0, z.argmax(1) != y)
    t = torch.tensor([1, 1])
    assert torch.equal(losses.margin(z, t, targeted=True) > 0, z.argmax(1) == t)


def test_dlr_is_shift_and_scale_invariant_where_ce_saturates() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 10, generator=g)
    y = torch.randint(0, 10, (5,), generator=g)
    assert torch.allclose(losses.dlr(z, y), losses.dlr(z * 1000 + 7, y), atol=1e-5)
    t = (y + 1) % 10
    assert torch.allclose(losses.dlr(z, t, True, y_true=y), losses.dlr(z * 50 - 3, t, True, y_true=y), atol=1e-5)
    # scaled logits saturate softmax: the CE gradient vanishes, DLR's does not
    zs = (z * 1000).requires_grad_(True)
    right = zs.detach().argmax(1)
    (g_ce,) = torch.autograd.grad(losses.cross_entropy(zs, right).sum(), zs)
    (g_dlr,) = torch.autograd.grad(losses.dlr(zs, right).sum(), zs)
    assert g_ce.abs().max() < 1e-6 < g_dlr.abs().max()


def test_targeted_ce_and_onehot_prefer_the_target() -> None:
    z = torch.tensor([[0.0, 5.0], [5.0, 0.0]])
    t = torch.tensor([1, 1])
    ce = losses.cross_entropy(z, t, targeted=True)
    oh = losses.onehot_l2(z, t, targeted=True)
    assert ce[0] > ce[1] and oh[0] > oh[1]
    assert torch.allclose(oh, -0.5 * ((z.softmax(1) - torch.eye(2)[t]) ** 2).sum(1))


def test_every_loss_takes_the_true_labels_the_same_way() -> None:
    """loss(logits, y, targeted, y_true): targeted DLR uses y_true; the others accept it and ignore it."""
    g = torch.Generator().manual_seed(2)
    z = torch.randn(6, 10, generator=g)
    y = torch.randint(0, 10, (6,), generator=g)
    t = (y + 3) % 10
    for name, loss in losses.LOSSES.items():
        assert loss(z, t, True, y).shape == (6,), name
        if name != "dlr":
            assert torch.equal(loss(z, t, True, y), loss(z, t, True)), name
    expect = -(z.gather(1, y[:, None]) - z.gather(1, t[:, None])).squeeze(1)
    srt = z.sort(1, descending=True).values
    assert torch.allclose(losses.dlr(z, t, True, y), expect / (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3])))
    # without a label (-1) the competitor of the target is the best other class
    unlabelled = losses.dlr(z, t, True, torch.full_like(y, -1))
    other = z.scatter(1, t[:, None], float("-inf")).amax(1)
    assert torch.allclose(
        unlabelled * (srt[:, 0] - 0.5 * (srt[:, 2] + srt[:, 3])), -(other - z.gather(1, t[:, None]).squeeze(1))
    )
