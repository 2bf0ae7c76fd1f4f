"""Training is deterministic, the shipped digits-cnn weights are what `advlab train` produces, adversarial training
makes digits-cnn robust, logit pairing pairs logits, and an interrupted run resumes to the same bits."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from advlab import data, zoo
from advlab.attacks import PGD
from advlab.defenses.training import (
    TrainConfig,
    TrainHistory,
    TrainState,
    accuracy,
    fit,
    logit_distance,
    training_loss,
)
from advlab.evaluation import EvalConfig, evaluate
from advlab.zoo.digits import DigitsCNN
from advlab.zoo.registry import _digits_weights


def _train(config: TrainConfig, n: int | None = None) -> tuple[DigitsCNN, float]:
    x, y = data.load("digits:train", limit=n)
    torch.manual_seed(config.seed)
    net = DigitsCNN()
    fit(net, x, y, config)
    return net, accuracy(net, *data.load("digits:test"))


def test_same_seed_same_weights_other_seed_other_weights() -> None:
    cfg = TrainConfig(epochs=2, seed=5)
    a, _ = _train(cfg, 256)
    b, _ = _train(cfg, 256)
    c, _ = _train(TrainConfig(epochs=2, seed=6), 256)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.state_dict()["classifier.3.weight"], c.state_dict()["classifier.3.weight"])


def test_training_learns() -> None:
    torch.manual_seed(0)
    before = accuracy(DigitsCNN(), *data.load("digits:test"))
    _, after = _train(TrainConfig(epochs=6))
    assert after > 0.8 > before


def test_default_recipe_rebuilds_the_shipped_weights() -> None:
    """The default recipe (seed 0, 40 epochs, ~10 s) gives a >= 97% model that agrees with the shipped one.

    On the machine that made the file the weights are bit-identical; on another CPU the float reduction
    order may differ, so the test asks for agreement on predictions rather than equal bits. Measured on the 599 test
    digits: other roundings (ATEN_CPU_CAPABILITY=default; training images x (1 + 1e-7 noise), two draws) disagree
    with the shipped model on 1-3 digits, so 98% (11 allowed) has 8 digits of margin; note that another seed (1-5)
    disagrees on 7-12, so this bound tells the recipe on another CPU from another recipe only roughly.
    """
    net, acc = _train(TrainConfig())
    assert acc >= 0.97
    shipped = zoo.load("digits-cnn")
    x, _ = data.load("digits:test")
    with torch.no_grad():
        agree = (net(x).argmax(1) == shipped(x).argmax(1)).float().mean()
    assert agree >= 0.98
    shipped_sd = load_file(_digits_weights())
    assert set(shipped_sd) == set(net.state_dict())


# ------------------------------------------------------------------------------------------------ adversarial training
EPS = 0.1
#: the cheapest PGD recipe that is clearly robust on digits: PGD-3 (alpha 2.5 eps / 3), 10 epochs, ~12 s on one thread
QUICK = TrainConfig(epochs=10, adversarial="pgd", eps=EPS, adv_steps=3)
#: fast adversarial training (Wong et al.): FGSM-RS, 8 epochs, ~6 s on one thread
FAST = TrainConfig(epochs=8, adversarial="fgsm-rs", eps=EPS)


def _fit(
    config: TrainConfig, model: nn.Module | None = None, n: int | None = None, **kw: object
) -> tuple[nn.Module, TrainHistory]:
    x, y = data.load("digits:train", limit=n)
    torch.manual_seed(config.seed)
    net = model if model is not None else DigitsCNN()
    history = fit(net, x, y, config, **kw)  # type: ignore[arg-type]
    return net, history


@pytest.fixture(scope="module")
def madry() -> nn.Module:
    """digits-cnn trained with the quick PGD recipe (Madry objective: CE(f(x_adv), y) only)."""
    return _fit(QUICK)[0]


@pytest.fixture(scope="module")
def fast() -> tuple[nn.Module, TrainHistory]:
    """digits-cnn trained with FGSM-RS (Madry objective)."""
    return _fit(FAST)


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _pgd_logit_distance(model: nn.Module) -> float:
    """Mean ||f(x) - f(x_adv)||_2 over digits:test, x_adv from PGD-10 at EPS against the model itself."""
    x, y = data.load("digits:test")
    x_adv = PGD(eps=EPS, steps=10).perturb(model, x, y)
    with torch.no_grad():
        return float(logit_distance(model(x), model(x_adv)).sqrt().mean())


def test_pgd_training_keeps_clean_accuracy_and_gains_robustness(madry: nn.Module) -> None:
    """Madry et al.: the PGD-trained model keeps >= 90% clean accuracy and is far more robust at L-inf 0.1
    than the shipped standard model (fast preset: ~42% standard, ~69% after 10 epochs of PGD-3)."""
    config = EvalConfig(preset="fast", eps=EPS)
    robust = evaluate(madry, "digits:test", config)
    standard = evaluate(zoo.load("digits-cnn"), "digits:test", config)
    assert robust.clean_accuracy >= 0.90
    assert robust.robust_accuracy >= standard.robust_accuracy + 0.20, (robust.robust_accuracy, standard.robust_accuracy)
    assert not robust.warnings  # no masked-gradient warnings: the robustness is not an artefact of the attacks


def test_logit_pairing_pulls_clean_and_adversarial_logits_together(fast: tuple[nn.Module, TrainHistory]) -> None:
    """ALP (lambda 0.5, FGSM-RS, 8 epochs) halves the mean logit distance on held-out PGD-10 examples. Measured:
    1.16 against 2.27 for plain FGSM-RS training (Madry: CE(x_adv) only) and 3.01 for the same mixed clean +
    adversarial loss without the pairing term (c = gamma = 1, lambda = 0); with PGD-3 for 10 epochs: 1.06, 2.26,
    3.06."""
    alp, _ = _fit(dataclasses.replace(FAST, logit_pairing=0.5))
    mixed, _ = _fit(dataclasses.replace(FAST, clean_weight=1.0))
    d_alp, d_madry, d_mixed = _pgd_logit_distance(alp), _pgd_logit_distance(fast[0]), _pgd_logit_distance(mixed)
    assert d_alp < 0.7 * d_madry, (d_alp, d_madry)
    assert d_alp < 0.7 * d_mixed, (d_alp, d_mixed)
    x, y = data.load("digits:test")
    assert accuracy(alp, x, y) >= 0.90


def test_objective_is_the_documented_sum() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, x_adv = torch.rand(5, 1, 2, 2), torch.rand(5, 1, 2, 2)
    y = torch.tensor([0, 1, 2, 0, 1])
    z, za = model(x), model(x_adv)
    ce, ce_adv = F.cross_entropy(z, y), F.cross_entropy(za, y)
    pair = ((z - za) ** 2).sum(1).mean()
    cfg = TrainConfig(adversarial="pgd")
    assert torch.equal(training_loss(model, x, None, y, cfg), ce)
    assert torch.equal(training_loss(model, x, x_adv, y, cfg), ce_adv)  # Madry
    torch.testing.assert_close(
        training_loss(model, x, x_adv, y, dataclasses.replace(cfg, logit_pairing=0.3, gamma=0.5)),
        ce + 0.5 * ce_adv + 0.3 * pair,
    )  # the lecture's ALP: clean weight 1 by default
    torch.testing.assert_close(
        training_loss(model, x, x_adv, y, dataclasses.replace(cfg, logit_pairing=0.3, clean_weight=0.0)),
        ce_adv + 0.3 * pair,
    )
    torch.testing.assert_close(
        training_loss(model, x, x_adv, y, dataclasses.replace(cfg, clean_weight=1.0, gamma=2.0)), ce + 2 * ce_adv
    )


def test_fgsm_rs_is_one_random_start_step_inside_the_ball() -> None:
    cfg = TrainConfig(adversarial="fgsm-rs", eps=EPS)
    atk = cfg.attack(seed=3)
    assert (
        isinstance(atk, PGD) and atk.steps == 1 and atk.random_start and atk.step_size(EPS) == pytest.approx(1.25 * EPS)
    )
    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test", limit=64)
    x_adv = atk.perturb(model, x, y)
    d = x_adv - x
    assert float(d.abs().max()) <= EPS + 1e-6 and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    assert float(d.abs().max()) > 0.5 * EPS and not torch.equal(x_adv, cfg.attack(seed=4).perturb(model, x, y))  # type: ignore[union-attr]
    with torch.no_grad():
        assert (model(x_adv).argmax(1) != y).sum() > (model(x).argmax(1) != y).sum()  # it is an attack


def test_fgsm_rs_training_is_robust(fast: tuple[nn.Module, TrainHistory]) -> None:
    """FGSM-RS for 8 epochs: >= 90% clean and PGD-10 robust accuracy ~67% against the standard model's ~45%."""
    net, history = fast
    standard = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    pgd = PGD(eps=EPS, steps=10)
    x_adv, x_std = pgd.perturb(net, x, y), pgd.perturb(standard, x, y)
    with torch.no_grad():
        robust = float(((net(x_adv).argmax(1) == y) & (net(x).argmax(1) == y)).float().mean())
        robust_standard = float(((standard(x_std).argmax(1) == y) & (standard(x).argmax(1) == y)).float().mean())
    assert len(history.loss) == 8 and history.loss[-1] < history.loss[0]
    assert accuracy(net, x, y) >= 0.90
    assert robust > robust_standard + 0.15, (robust, robust_standard)


class _BNDropNet(nn.Module):
    """A tiny model with BatchNorm (buffers) and dropout (global RNG), for the resume and attack-mode tests."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.head = nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Dropout(0.2), nn.Linear(512, 10))
        self.update_stats: list[torch.Tensor] = []  # running mean seen by each forward with autograd on (the update)

    def running_mean(self) -> torch.Tensor:
        return dict(self.named_buffers())["bn.running_mean"].clone()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.training:
            self.update_stats.append(self.running_mean())
        return self.head(self.bn(self.conv(x)))


def test_attack_mode_eval_or_train_and_buffers_restored() -> None:
    """x_adv is crafted in eval mode by default; in train mode the crafting passes' BatchNorm updates are undone."""
    seen: list[tuple[bool, torch.Tensor]] = []

    def hook(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            model(xb)  # in train mode this moves BatchNorm's running statistics
        seen.append((model.training, model.running_mean()))  # type: ignore[operator]
        return xb

    cfg = TrainConfig(epochs=1, batch_size=64)
    _fit(cfg, model=_BNDropNet(), n=128, perturb=hook)
    assert [mode for mode, _ in seen] == [False, False]
    seen.clear()
    net = _BNDropNet()
    _fit(dataclasses.replace(cfg, attack_mode="train"), model=net, n=128, perturb=hook)
    assert [mode for mode, _ in seen] == [True, True]
    assert not torch.equal(seen[0][1], torch.zeros(8))  # the crafting pass moved the statistics...
    assert torch.equal(net.update_stats[0], torch.zeros(8))  # ...but the update starts from those before it
    assert not torch.equal(seen[1][1], net.update_stats[1])


def test_resume_after_an_interrupt_gives_the_same_bits() -> None:
    """Interrupt after epoch 2 of 4 (the callback raises KeyboardInterrupt), save the state as safetensors + JSON,
    resume: the weights, optimizer moments and history equal the uninterrupted run's, bit for bit."""
    from safetensors.torch import load, save

    cfg = TrainConfig(epochs=4, batch_size=32, adversarial="fgsm-rs", eps=EPS, logit_pairing=0.5, attack_mode="train")
    xe, ye = data.load("digits:test", limit=100)
    metric = {"mean_logit": lambda m: float(m(xe).mean())}

    def metrics(m: nn.Module) -> dict[str, float]:
        with torch.no_grad():
            return {k: f(m) for k, f in metric.items()}

    torch.manual_seed(0)
    full, h_full = _fit(cfg, model=_BNDropNet(), n=200, eval_data=(xe, ye), epoch_metrics=metrics)
    saved: list[tuple[bytes, str]] = []

    def on_epoch(epoch: int, state: TrainState) -> None:
        tensors, info = state.to_saved()
        saved.append((save(tensors), json.dumps(info)))
        if epoch == 1:
            raise KeyboardInterrupt

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        _fit(cfg, model=_BNDropNet(), n=200, eval_data=(xe, ye), epoch_metrics=metrics, on_epoch=on_epoch)
    assert len(saved) == 2
    state = TrainState.from_saved(load(saved[-1][0]), json.loads(saved[-1][1]))
    assert state.epochs_done == 2 and len(state.history.loss) == 2
    torch.manual_seed(123)  # whatever the fresh model and the global RNG hold, the state overrides them
    resumed, h_res = _fit(cfg, model=_BNDropNet(), n=200, eval_data=(xe, ye), epoch_metrics=metrics, resume=state)
    assert _same_weights(full, resumed)
    assert h_res.loss == h_full.loss and h_res.eval_accuracy == h_full.eval_accuracy and h_res.metrics == h_full.metrics
    assert len(h_res.seconds) == 4
    with pytest.raises(ValueError, match="another config"):
        _fit(dataclasses.replace(cfg, epochs=5), model=_BNDropNet(), n=200, resume=state)
    with pytest.raises(ValueError, match="200 samples"):
        _fit(cfg, model=_BNDropNet(), n=100, resume=state)


def test_perturb_hook_still_trains_like_before() -> None:
    """The ``perturb=`` path (benchmarks/eval_speed.py) is plain Madry: CE(f(hook(x)), y), deterministic."""
    pgd = PGD(eps=EPS, alpha=0.025, steps=2)
    cfg = TrainConfig(epochs=1)
    a, ha = _fit(cfg, n=128, perturb=lambda m, xb, yb: pgd(m, xb, yb).x_adv)
    b, _ = _fit(cfg, n=128, perturb=lambda m, xb, yb: pgd(m, xb, yb).x_adv)
    c, _ = _fit(cfg, n=128)
    assert _same_weights(a, b) and not _same_weights(a, c)
    with pytest.raises(ValueError, match="not both"):
        _fit(TrainConfig(epochs=1, adversarial="pgd"), n=64, perturb=lambda m, xb, yb: xb)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"adversarial": "cw"}, "adversarial must be"),
        ({"adversarial": "pgd", "eps": 0.0}, "eps must be"),
        ({"adversarial": "pgd", "eps": 1.5}, "eps must be"),
        ({"adversarial": "pgd", "adv_steps": 0}, "adv_steps"),
        ({"adversarial": "pgd", "adv_alpha": -0.1}, "adv_alpha"),
        ({"adversarial": "pgd", "gamma": -1.0}, "gamma"),
        ({"adversarial": "pgd", "gamma": 0.0}, "clean_weight \\+ gamma"),
        ({"logit_pairing": 0.5}, "set adversarial"),
        ({"adversarial": "pgd", "attack_mode": "test"}, "attack_mode"),
    ],
)
def test_bad_configs_raise(kw: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _fit(TrainConfig(epochs=1, **kw), n=32)  # type: ignore[arg-type]
