"""advlab.device.device_of: the device a module computes on, read from its first parameter, else its first buffer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.device import device_of
from advlab.zoo.normalize import Normalize


def test_a_module_with_parameters_is_on_their_device() -> None:
    assert device_of(nn.Linear(3, 2)) == torch.device("cpu")
    assert device_of(nn.Linear(3, 2).to("meta")) == torch.device("meta")


def test_the_default_does_not_override_a_real_device() -> None:
    assert device_of(nn.Linear(3, 2), default="meta") == torch.device("cpu")


def test_a_buffer_only_module_is_on_its_buffers_device() -> None:
    # Normalize holds mean/std as buffers and no parameter
    normalize = Normalize([0.5], [0.25]).to("meta")
    assert list(normalize.parameters()) == []
    assert device_of(normalize, default="cpu") == torch.device("meta")


def test_a_parameter_comes_before_a_buffer() -> None:
    module = nn.Module()
    module.register_buffer("scale", torch.ones(1, device="meta"))
    module.weight = nn.Parameter(torch.zeros(1))
    assert device_of(module) == torch.device("cpu")


@pytest.mark.parametrize("default", ["meta", torch.device("meta")])
def test_a_module_with_neither_gets_the_default_as_a_device(default: str | torch.device) -> None:
    relu = nn.ReLU()  # no parameter, no buffer: next(relu.parameters()) would raise StopIteration
    got = device_of(relu, default=default)
    assert isinstance(got, torch.device) and got == torch.device("meta")
    assert device_of(relu) == torch.device("cpu")


def test_a_nested_parameter_counts() -> None:
    net = nn.Sequential(nn.ReLU(), nn.Sequential(nn.Flatten(), nn.Linear(4, 2).to("meta")))
    assert device_of(net) == torch.device("meta")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_module_reports_its_index() -> None:
    assert device_of(nn.Linear(3, 2).cuda()) == torch.device("cuda", torch.cuda.current_device())
