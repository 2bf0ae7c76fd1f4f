"""Training is deterministic, and the shipped digits-cnn weights are what `advlab train` produces."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from advlab import data, zoo
from advlab.train import TrainConfig, accuracy, fit
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
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.state_dict()["classifier.3.weight"], c.state_dict()["classifier.3.weight"])


def test_training_learns() -> None:
    torch.manual_seed(0)
    before = accuracy(DigitsCNN(), *data.load("digits:test"))
    _, after = _train(TrainConfig(epochs=6))
    assert after > 0.8 > before


def test_default_recipe_rebuilds_the_shipped_weights() -> None:
    """The default recipe (seed 0, 40 epochs, ~10 s) gives a >= 97% model that agrees with the shipped one.

    On the machine that made the file the weights are bit-identical; on another CPU the float reduction
    order may differ, so the test asks for agreement on predictions rather than equal bits.
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
