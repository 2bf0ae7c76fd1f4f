"""Tests for advlab.zoo.resnet: torchvision key compatibility, shapes, CIFAR stem, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from advlab.zoo.resnet import cifar_resnet18, resnet18

# torchvision.models.resnet18() state-dict keys and shapes, in order (122 entries).
TORCHVISION_RESNET18: list[tuple[str, tuple[int, ...]]] = [
    ("conv1.weight", (64, 3, 7, 7)),
    ("bn1.weight", (64,)),
    ("bn1.bias", (64,)),
    ("bn1.running_mean", (64,)),
    ("bn1.running_var", (64,)),
    ("bn1.num_batches_tracked", ()),
    ("layer1.0.conv1.weight", (64, 64, 3, 3)),
    ("layer1.0.bn1.weight", (64,)),
    ("layer1.0.bn1.bias", (64,)),
    ("layer1.0.bn1.running_mean", (64,)),
    ("layer1.0.bn1.running_var", (64,)),
    ("layer1.0.bn1.num_batches_tracked", ()),
    ("layer1.0.conv2.weight", (64, 64, 3, 3)),
    ("layer1.0.bn2.weight", (64,)),
    ("layer1.0.bn2.bias", (64,)),
    ("layer1.0.bn2.running_mean", (64,)),
    ("layer1.0.bn2.running_var", (64,)),
    ("layer1.0.bn2.num_batches_tracked", ()),
    ("layer1.1.conv1.weight", (64, 64, 3, 3)),
    ("layer1.1.bn1.weight", (64,)),
    ("layer1.1.bn1.bias", (64,)),
    ("layer1.1.bn1.running_mean", (64,)),
    ("layer1.1.bn1.running_var", (64,)),
    ("layer1.1.bn1.num_batches_tracked", ()),
    ("layer1.1.conv2.weight", (64, 64, 3, 3)),
    ("layer1.1.bn2.weight", (64,)),
    ("layer1.1.bn2.bias", (64,)),
    ("layer1.1.bn2.running_mean", (64,)),
    ("layer1.1.bn2.running_var", (64,)),
    ("layer1.1.bn2.num_batches_tracked", ()),
    ("layer2.0.conv1.weight", (128, 64, 3, 3)),
    ("layer2.0.bn1.weight", (128,)),
    ("layer2.0.bn1.bias", (128,)),
    ("layer2.0.bn1.running_mean", (128,)),
    ("layer2.0.bn1.running_var", (128,)),
    ("layer2.0.bn1.num_batches_tracked", ()),
    ("layer2.0.conv2.weight", (128, 128, 3, 3)),
    ("layer2.0.bn2.weight", (128,)),
    ("layer2.0.bn2.bias", (128,)),
    ("layer2.0.bn2.running_mean", (128,)),
    ("layer2.0.bn2.running_var", (128,)),
    ("layer2.0.bn2.num_batches_tracked", ()),
    ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
    ("layer2.0.downsample.1.weight", (128,)),
    ("layer2.0.downsample.1.bias", (128,)),
    ("layer2.0.downsample.1.running_mean", (128,)),
    ("layer2.0.downsample.1.running_var", (128,)),
    ("layer2.0.downsample.1.num_batches_tracked", ()),
    ("layer2.1.conv1.weight", (128, 128, 3, 3)),
    ("layer2.1.bn1.weight", (128,)),
    ("layer2.1.bn1.bias", (128,)),
    ("layer2.1.bn1.running_mean", (128,)),
    ("layer2.1.bn1.running_var", (128,)),
    ("layer2.1.bn1.num_batches_tracked", ()),
    ("layer2.1.conv2.weight", (128, 128, 3, 3)),
    ("layer2.1.bn2.weight", (128,)),
    ("layer2.1.bn2.bias", (128,)),
    ("layer2.1.bn2.running_mean", (128,)),
    ("layer2.1.bn2.running_var", (128,)),
    ("layer2.1.bn2.num_batches_tracked", ()),
    ("layer3.0.conv1.weight", (256, 128, 3, 3)),
    ("layer3.0.bn1.weight", (256,)),
    ("layer3.0.bn1.bias", (256,)),
    ("layer3.0.bn1.running_mean", (256,)),
    ("layer3.0.bn1.running_var", (256,)),
    ("layer3.0.bn1.num_batches_tracked", ()),
    ("layer3.0.conv2.weight", (256, 256, 3, 3)),
    ("layer3.0.bn2.weight", (256,)),
    ("layer3.0.bn2.bias", (256,)),
    ("layer3.0.bn2.running_mean", (256,)),
    ("layer3.0.bn2.running_var", (256,)),
    ("layer3.0.bn2.num_batches_tracked", ()),
    ("layer3.0.downsample.0.weight", (256, 128, 1, 1)),
    ("layer3.0.downsample.1.weight", (256,)),
    ("layer3.0.downsample.1.bias", (256,)),
    ("layer3.0.downsample.1.running_mean", (256,)),
    ("layer3.0.downsample.1.running_var", (256,)),
    ("layer3.0.downsample.1.num_batches_tracked", ()),
    ("layer3.1.conv1.weight", (256, 256, 3, 3)),
    ("layer3.1.bn1.weight", (256,)),
    ("layer3.1.bn1.bias", (256,)),
    ("layer3.1.bn1.running_mean", (256,)),
    ("layer3.1.bn1.running_var", (256,)),
    ("layer3.1.bn1.num_batches_tracked", ()),
    ("layer3.1.conv2.weight", (256, 256, 3, 3)),
    ("layer3.1.bn2.weight", (256,)),
    ("layer3.1.bn2.bias", (256,)),
    ("layer3.1.bn2.running_mean", (256,)),
    ("layer3.1.bn2.running_var", (256,)),
    ("layer3.1.bn2.num_batches_tracked", ()),
    ("layer4.0.conv1.weight", (512, 256, 3, 3)),
    ("layer4.0.bn1.weight", (512,)),
    ("layer4.0.bn1.bias", (512,)),
    ("layer4.0.bn1.running_mean", (512,)),
    ("layer4.0.bn1.running_var", (512,)),
    ("layer4.0.bn1.num_batches_tracked", ()),
    ("layer4.0.conv2.weight", (512, 512, 3, 3)),
    ("layer4.0.bn2.weight", (512,)),
    ("layer4.0.bn2.bias", (512,)),
    ("layer4.0.bn2.running_mean", (512,)),
    ("layer4.0.bn2.running_var", (512,)),
    ("layer4.0.bn2.num_batches_tracked", ()),
    ("layer4.0.downsample.0.weight", (512, 256, 1, 1)),
    ("layer4.0.downsample.1.weight", (512,)),
    ("layer4.0.downsample.1.bias", (512,)),
    ("layer4.0.downsample.1.running_mean", (512,)),
    ("layer4.0.downsample.1.running_var", (512,)),
    ("layer4.0.downsample.1.num_batches_tracked", ()),
    ("layer4.1.conv1.weight", (512, 512, 3, 3)),
    ("layer4.1.bn1.weight", (512,)),
    ("layer4.1.bn1.bias", (512,)),
    ("layer4.1.bn1.running_mean", (512,)),
    ("layer4.1.bn1.running_var", (512,)),
    ("layer4.1.bn1.num_batches_tracked", ()),
    ("layer4.1.conv2.weight", (512, 512, 3, 3)),
    ("layer4.1.bn2.weight", (512,)),
    ("layer4.1.bn2.bias", (512,)),
    ("layer4.1.bn2.running_mean", (512,)),
    ("layer4.1.bn2.running_var", (512,)),
    ("layer4.1.bn2.num_batches_tracked", ()),
    ("fc.weight", (1000, 512)),
    ("fc.bias", (1000,)),
]


def random_state_dict() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in TORCHVISION_RESNET18:
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=generator) + 0.5
        else:
            sd[key] = torch.randn(shape, generator=generator) * 0.1
    return sd


def test_key_list_is_torchvisions() -> None:
    """The hand-written key list above is what torchvision.models.resnet18() really has (where torchvision imports;
    the next test then ties advlab's resnet18 to torchvision through it)."""
    try:
        from torchvision.models import resnet18 as torchvision_resnet18
    except Exception:  # noqa: BLE001 - absent, or raising RuntimeError on import on this CPU machine
        pytest.skip("torchvision does not import here")
    sd = torchvision_resnet18(weights=None).state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == TORCHVISION_RESNET18


def test_resnet18_keys_shapes_and_order_match_torchvision() -> None:
    sd = resnet18().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == TORCHVISION_RESNET18


def test_resnet18_loads_torchvision_state_dict_strictly() -> None:
    sd = random_state_dict()
    torch.manual_seed(1)
    first = resnet18()
    torch.manual_seed(2)
    second = resnet18()
    first.load_state_dict(sd, strict=True)
    second.load_state_dict(sd, strict=True)
    first.eval()
    second.eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        out_first, out_second = first(x), second(x)
    assert torch.equal(out_first, out_second)
    assert first.state_dict()["layer2.0.bn1.num_batches_tracked"].item() == 7


def test_resnet18_deterministic_under_seed() -> None:
    torch.manual_seed(0)
    a = resnet18().state_dict()
    torch.manual_seed(0)
    b = resnet18().state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_output_shapes() -> None:
    model = resnet18().eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 224, 224)).shape == (2, 1000)
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 1000)
        assert resnet18(num_classes=7).eval()(torch.randn(1, 3, 64, 64)).shape == (1, 7)
        assert cifar_resnet18().eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
        assert cifar_resnet18(num_classes=100).eval()(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_cifar_stem_and_keys() -> None:
    model = cifar_resnet18()
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv2d)
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1) and conv1.padding == (1, 1)
    assert not any(isinstance(m, nn.MaxPool2d) for m in model.modules())
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(shapes) == [k for k, _ in TORCHVISION_RESNET18]
    assert shapes["conv1.weight"] == (64, 3, 3, 3)
    assert shapes["fc.weight"] == (10, 512)
    assert any(isinstance(m, nn.MaxPool2d) for m in resnet18().modules())


def test_input_gradient_flows_in_eval_mode() -> None:
    torch.manual_seed(0)
    for model, size in ((resnet18().eval(), 64), (cifar_resnet18().eval(), 32)):
        x = torch.randn(2, 3, size, size, requires_grad=True)
        model(x)[:, 0].sum().backward()
        assert x.grad is not None
        assert x.grad.abs().sum() > 0
