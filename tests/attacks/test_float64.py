"""Every attack runs on a float64 model and float64 images: x_adv stays float64, and a reported success is a real
change of the float64 model's prediction inside the ball (a regression test: ``Best`` kept its losses in float32,
so the one-hot attack, whose score is float64 there, failed with a dtype error)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab import attacks
from advlab.attacks.base import Best
from advlab.threat import distance

EPS = {"linf": 0.02, "l2": 0.06}  # about the median distance to the nearest boundary of the 20 images below

BOUNDED = {
    "fgsm": attacks.FGSM(eps=EPS["linf"]),
    "pgd": attacks.PGD(eps=EPS["linf"], steps=10),
    "pgd-l2": attacks.PGD(eps=EPS["l2"], norm="l2", steps=10),
    "mifgsm": attacks.MIFGSM(eps=EPS["linf"], steps=10),
    "apgd": attacks.APGD(eps=EPS["linf"], steps=20),
    "apgd-t": attacks.APGDT(eps=EPS["linf"], steps=20, n_targets=3),
    "noise": attacks.RandomNoise(eps=EPS["linf"], tries=50),
    "nes": attacks.NES(eps=EPS["linf"], max_queries=200),
    "spsa": attacks.SPSA(eps=EPS["linf"], max_queries=200),
    "square": attacks.Square(eps=EPS["linf"], max_queries=200),
}
UNBOUNDED = {
    "cw": attacks.CW(steps=50, binary_search_steps=3),
    "ddn": attacks.DDN(steps=50),
    "fmn": attacks.FMN(steps=50),
    "fmn-linf": attacks.FMN(norm="linf", steps=50),
    "lbfgs": attacks.LBFGS(search_steps=3, steps=20),
    "onehot": attacks.OneHot(steps=100),
    "onehot-gd": attacks.OneHot(steps=100, optimizer="gd"),
    "onehot-early": attacks.OneHot(steps=100, early_stop=True),
    "deepfool": attacks.DeepFool(),
}


@pytest.fixture(scope="module")
def linear64() -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """A float64 linear 5-class model on 1x4x4 images (its logits centred at x = 0.5), 20 images in [0.3, 0.7],
    their predicted classes as labels, and per norm each image's exact distance to the nearest decision boundary
    min_t (z_y - z_t) / ||w_y - w_t||_q (q the dual norm; the box never binds at these distances)."""
    gen = torch.Generator().manual_seed(0)
    lin = nn.Linear(16, 5).double()
    with torch.no_grad():
        lin.weight.copy_(torch.randn(5, 16, generator=gen, dtype=torch.float64))
        lin.bias.copy_(-0.5 * lin.weight.sum(1))
    model = nn.Sequential(nn.Flatten(), lin).eval()
    x = 0.3 + 0.4 * torch.rand(20, 1, 4, 4, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        z = model(x)
    y = z.argmax(1)
    w = lin.weight.detach()
    dw = w[y][:, None, :] - w[None, :, :]  # (N, K, D): w_y - w_t
    gap = (z.gather(1, y[:, None]) - z)[:, :, None]
    exact = {
        norm: (gap / dw.norm(p=q, dim=2, keepdim=True)).squeeze(2).masked_fill(gap.squeeze(2) == 0, torch.inf).amin(1)
        for norm, q in (("l2", 2.0), ("linf", 1.0))
    }
    return model, x, y, exact


def _check_real(res: attacks.AttackResult, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """x_adv is float64 in [0, 1], and the reported successes are the float64 model's changed predictions."""
    assert res.x_adv.dtype == torch.float64 and res.logits.dtype == torch.float64
    assert float(res.x_adv.min()) >= 0 and float(res.x_adv.max()) <= 1
    with torch.no_grad():
        pred = model(res.x_adv).argmax(1)
    assert torch.equal(res.success, pred != y)


@pytest.mark.parametrize("name", list(BOUNDED))
def test_bounded_attacks_change_float64_predictions_inside_the_ball(name: str, linear64) -> None:
    model, x, y, exact = linear64
    atk = BOUNDED[name]
    norm, eps = atk.threat_norm, EPS[atk.threat_norm]
    res = atk(model, x, y)
    _check_real(res, model, x, y)
    assert (distance(res.x_adv - x, norm) <= eps + 1e-6).all()
    inside = exact[norm] <= eps
    assert not (res.success & ~inside).any()  # nothing outside the ball can be broken, and nothing is
    assert int(res.success.sum()) >= int(inside.sum()) // 2  # 12 of 20 inside; measured 10 to 12 broken


@pytest.mark.parametrize("name", list(UNBOUNDED))
def test_unbounded_attacks_change_every_float64_prediction(name: str, linear64) -> None:
    model, x, y, exact = linear64
    atk = UNBOUNDED[name]
    res = atk(model, x, y)
    _check_real(res, model, x, y)
    assert res.success.all()
    norm = atk.threat_norm
    d = distance(res.x_adv - x, norm).double()
    assert (d >= exact[norm] * (1 - 1e-5)).all()  # no point is closer than the nearest boundary
    if name in ("fmn", "fmn-linf", "deepfool"):  # the minimum-norm attacks that land on it (DeepFool: + 2 %)
        assert (d <= exact[norm] * 1.05).all()


def test_onehot_hits_float64_targets(linear64) -> None:
    model, x, y, _ = linear64
    target = (y + 1) % 5
    res = attacks.OneHot(steps=100)(model, x, y, target=target)
    assert res.x_adv.dtype == torch.float64 and res.success.all()
    with torch.no_grad():
        assert torch.equal(model(res.x_adv).argmax(1), target)


def test_best_keeps_the_dtype_of_the_scores_it_is_given() -> None:
    x = torch.zeros(4, 1, 2, 2, dtype=torch.float64)
    best = Best(x)
    logits, failed = torch.zeros(2, 3, dtype=torch.float64), torch.tensor([False, False])
    loss = torch.tensor([0.1, 0.2], dtype=torch.float64)
    best.update(torch.tensor([0, 2]), x[:2] + 0.5, logits, failed, loss)
    best.update(torch.tensor([0, 2]), x[:2] + 0.25, logits, failed, loss + 1e-13)  # higher only in float64
    assert best.loss is not None and best.loss.dtype == torch.float64
    assert best.x[0].eq(0.25).all() and best.x[2].eq(0.25).all() and best.x[1].eq(0).all()
