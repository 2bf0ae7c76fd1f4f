"""Built-in models load channels_last where it is faster; the layout never changes logits or input gradients."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from advlab import data, zoo
from advlab.cli.common import add_device_args, place_model
from advlab.errors import AdvlabError
from advlab.zoo.layout import is_channels_last, set_memory_format

CL = torch.channels_last


def logits_and_input_gradient(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits, and the gradient of the summed cross-entropy towards class 0 with respect to the [0, 1] input."""
    x = x.clone().requires_grad_(True)
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, torch.zeros(len(x), dtype=torch.long), reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return logits.detach(), grad


def test_lite0_loads_channels_last_with_the_nchw_logits_and_gradients() -> None:
    default = zoo.load("efficientnet-lite0")
    nchw = zoo.load("efficientnet-lite0", memory_format="contiguous")
    assert is_channels_last(default) and not is_channels_last(nchw)
    assert all(p.is_contiguous() for p in nchw.parameters())
    x, _ = data.load("samples", 224, limit=2)
    ref_logits, ref_grad = logits_and_input_gradient(nchw, x)
    for given in (x, x.contiguous(memory_format=CL)):  # an NCHW input works as well as a channels_last one
        logits, grad = logits_and_input_gradient(default, given)
        assert float((logits - ref_logits).abs().max()) <= 1e-4
        assert float((grad - ref_grad).abs().max()) <= 1e-4 * float(ref_grad.abs().max())
        assert torch.equal(logits.argmax(1), ref_logits.argmax(1))


TINY = (
    "import torch\n"
    "def make():\n"
    "    torch.manual_seed(0)\n"
    "    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),\n"
    "        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())\n"
    "    m.input_size = 12\n"
    "    return m.eval()\n"
)


def test_a_user_model_keeps_its_layout_unless_asked_and_computes_the_same(tmp_path: Path) -> None:
    (tmp_path / "tiny.py").write_text(TINY)
    spec = f"{tmp_path / 'tiny.py'}:make"
    built = zoo.load(spec)
    forced = zoo.load(spec, memory_format="channels_last")
    assert not is_channels_last(built) and is_channels_last(forced)
    x = torch.rand(5, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    ref_logits, ref_grad = logits_and_input_gradient(built, x)
    logits, grad = logits_and_input_gradient(forced, x)
    assert not grad.is_contiguous()  # the gradient comes back channels_last: same values, other strides
    assert torch.allclose(logits, ref_logits, atol=1e-5) and torch.allclose(grad, ref_grad, atol=1e-6)


def test_channels_last_weights_save_as_the_nchw_network_and_load_into_either_layout(tmp_path: Path) -> None:
    model = zoo.load("cifar-resnet18")
    assert is_channels_last(model)
    for state in (model.state_dict(), model.net.state_dict()):  # type: ignore[operator]
        assert all(v.is_contiguous() for v in state.values())
    path = tmp_path / "w.safetensors"
    save_file(model.net.state_dict(), str(path))  # type: ignore[operator]
    again = zoo.load("cifar-resnet18", weights=path, memory_format="contiguous")
    assert not is_channels_last(again)
    saved = load_file(str(path))
    assert all(torch.equal(saved[k], v) for k, v in again.net.state_dict().items())  # type: ignore[operator]
    x = torch.rand(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x), again(x), atol=1e-5)


def test_digits_cnn_contiguous_stops_converting_its_input() -> None:
    nchw = zoo.load("digits-cnn", memory_format="contiguous")
    assert not is_channels_last(nchw) and not nchw.net.channels_last  # type: ignore[union-attr]
    x, _ = data.load("digits:test", limit=16)
    seen: list[torch.Tensor] = []
    handle = nchw.net.features[0].register_forward_hook(lambda m, i, o: seen.append(o))  # type: ignore[index, union-attr]
    with torch.no_grad():
        out = nchw(x)
    handle.remove()
    assert seen[0].is_contiguous()
    with torch.no_grad():
        assert torch.allclose(out, zoo.load("digits-cnn")(x), atol=1e-5)
    set_memory_format(nchw, "channels_last")
    assert is_channels_last(nchw) and nchw.net.channels_last  # type: ignore[union-attr]


def test_memory_format_options_and_the_old_flag() -> None:
    with pytest.raises(AdvlabError, match="memory format must be one of auto, channels_last, contiguous"):
        zoo.load("digits-cnn", memory_format="nhwc")
    p = argparse.ArgumentParser()
    add_device_args(p)
    base: list[str] = []
    assert p.parse_args(base).channels_last == "auto"
    assert p.parse_args([*base, "--channels-last"]).channels_last == "channels_last"
    assert p.parse_args([*base, "--memory-format", "contiguous"]).channels_last == "contiguous"
    model = zoo.load("digits-cnn")
    assert not is_channels_last(place_model(model, torch.device("cpu"), "contiguous"))
    assert is_channels_last(place_model(model, torch.device("cpu"), True))
    assert is_channels_last(place_model(model, torch.device("cpu"), "auto"))  # auto keeps what it was given
