"""digits-cnn runs channels_last: same logits, gradients, keys and checkpoints as the NCHW network."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from advlab import data, zoo
from advlab.attacks import PGD
from advlab.zoo.checkpoint import load_weights
from advlab.zoo.digits import DigitsCNN
from advlab.zoo.normalize import Normalized
from advlab.zoo.registry import _digits_weights

CHANNELS_LAST = torch.channels_last


@pytest.fixture(scope="module")
def both() -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the zoo's digits-cnn, the same weights in a plain NCHW DigitsCNN)."""
    nchw = DigitsCNN(channels_last=False)
    load_weights(nchw, _digits_weights())
    return zoo.load("digits-cnn"), Normalized(nchw).eval()


def test_the_zoo_model_stores_and_computes_channels_last(both: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    model, nchw = both
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 3 and all(c.weight.is_contiguous(memory_format=CHANNELS_LAST) for c in convs)
    # (the first has one input channel: it is both layouts at once)
    assert not any(c.weight.is_contiguous() for c in convs[1:])
    assert all(m.weight.is_contiguous() for m in nchw.modules() if isinstance(m, torch.nn.Conv2d))
    x, _ = data.load("digits:test", limit=16)
    seen: list[torch.Tensor] = []
    pool = model.net.features[4]  # type: ignore[index, union-attr]
    handle = pool.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    # the max-pool ran NHWC
    assert seen[0].shape == (16, 64, 4, 4) and seen[0].is_contiguous(memory_format=CHANNELS_LAST)
    assert not seen[0].is_contiguous()


def test_logits_and_input_gradients_match_nchw(both: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    model, nchw = both
    x, y = data.load("digits:test")
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    za, zb = model(xa), nchw(xb)
    assert float((za - zb).detach().abs().max()) <= 1e-5
    assert torch.equal(za.argmax(1), zb.argmax(1))
    (ga,) = torch.autograd.grad(F.cross_entropy(za, y), xa)
    (gb,) = torch.autograd.grad(F.cross_entropy(zb, y), xb)
    assert float((ga - gb).abs().max()) <= 1e-3 * float(gb.abs().max())  # float rounding of other reduction orders
    big = gb.abs() > 1e-3 * float(gb.abs().max())
    assert torch.equal(ga[big].sign(), gb[big].sign())  # the sign steps PGD takes


def test_pgd_finds_the_same_adversarials_in_both_layouts(both: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    model, nchw = both
    x, y = data.load("digits:test", limit=128)
    a, b = PGD(eps=0.1, steps=10)(model, x, y), PGD(eps=0.1, steps=10)(nchw, x, y)
    assert float(a.success.float().mean()) > 0.3  # it is an attack
    assert float((a.success == b.success).float().mean()) >= 0.98  # sign steps may flip on float rounding, rarely
    assert float((a.x_adv - x).abs().max()) <= 0.1 + 1e-6


def test_layout_conversions_keep_the_outputs(both: tuple[torch.nn.Module, torch.nn.Module]) -> None:
    """``place_model(..., channels_last=True)`` (``model.to(memory_format=...)``) and a conversion back to NCHW
    change the storage only; a channels_last input to the NCHW model is fine too."""
    model, nchw = both
    x, _ = data.load("digits:test", limit=64)
    with torch.no_grad():
        ref = nchw(x)
        for fmt in (torch.channels_last, torch.contiguous_format):
            moved = DigitsCNN()
            moved.load_state_dict(model.net.state_dict())  # type: ignore[union-attr]
            moved = Normalized(moved.to(memory_format=fmt)).eval()  # type: ignore[call-overload]
            assert float((moved(x) - ref).abs().max()) <= 1e-5, fmt
        assert float((nchw(x.contiguous(memory_format=CHANNELS_LAST)) - ref).abs().max()) <= 1e-5


def test_weights_save_and_load_across_layouts(tmp_path: Path) -> None:
    """The state-dict keys and shapes are the NCHW network's; weights saved from one layout load into the other."""
    model = zoo.load("digits-cnn")
    sd = model.net.state_dict()  # type: ignore[union-attr]
    assert {k: tuple(v.shape) for k, v in sd.items()} == {
        k: tuple(v.shape) for k, v in DigitsCNN(channels_last=False).state_dict().items()
    }
    path = tmp_path / "weights.safetensors"
    save_file({k: v.detach().cpu().contiguous() for k, v in sd.items()}, str(path))  # as run directories save weights
    saved = load_file(str(path))
    shipped = load_file(_digits_weights())
    assert saved.keys() == shipped.keys() and all(torch.equal(saved[k], shipped[k]) for k in saved)
    again = zoo.load("digits-cnn", weights=path)
    x, _ = data.load("digits:test", limit=32)
    with torch.no_grad():
        assert torch.equal(again(x), model(x))
    assert again.net.features[0].weight.is_contiguous(memory_format=CHANNELS_LAST)  # type: ignore[index, union-attr]
