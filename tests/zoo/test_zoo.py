"""advlab.zoo: every model spec, the normalization inside the model, and weights loading."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from advlab import data, zoo
from advlab.defenses.training import accuracy
from advlab.errors import AdvlabError, NotAvailableError
from advlab.zoo.registry import IMAGENET_MEAN, IMAGENET_STD, LITE_MEAN, LITE_STD
from tests.zoo.test_resnet import random_state_dict

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return zoo.load("efficientnet-lite0")


@pytest.fixture(scope="module")
def samples() -> tuple[torch.Tensor, torch.Tensor]:
    return data.load("samples", 224)


def test_lite0_names_the_photos(lite0: torch.nn.Module, samples: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = samples
    with torch.no_grad():
        top3 = lite0(x).topk(3, dim=1).indices
    names = data.item_names("samples")
    cat = top3[names.index("chelsea")]
    assert CAT_CLASSES & set(cat.tolist()), f"no cat class in the cat photo's top 3: {cat.tolist()}"
    # every photo's own label is in its top 3 and the coffee cup is espresso at top 1
    assert (top3 == y[:, None]).any(1).all()
    assert int(top3[names.index("coffee"), 0]) == 967


def test_lite0_expects_tflite_preprocessing(lite0: torch.nn.Module, samples: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The hand check, kept as a test: (x*255 - 127)/128 fits the weights better than ImageNet mean/std."""
    x, y = samples
    net = lite0.net  # type: ignore[union-attr]

    def log_likelihood(mean: tuple[float, ...], std: tuple[float, ...]) -> float:
        m, s = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
        with torch.no_grad():
            return float(net((x - m) / s).log_softmax(1).gather(1, y[:, None]).mean())

    assert lite0.info.mean == LITE_MEAN  # type: ignore[union-attr]
    assert log_likelihood(LITE_MEAN, LITE_STD) > log_likelihood(IMAGENET_MEAN, IMAGENET_STD)


def test_models_take_unit_range_images_and_pass_gradients(lite0: torch.nn.Module) -> None:
    """Normalization is inside: the model's output equals net((x - mean) / std), and d logits / dx exists."""
    x = torch.rand(2, 3, 224, 224, requires_grad=True)
    out = lite0(x)
    mean, std = torch.tensor(LITE_MEAN).view(1, 3, 1, 1), torch.tensor(LITE_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        ref = lite0.net((x - mean) / std)  # type: ignore[operator, union-attr]
    assert torch.allclose(out, ref, atol=1e-5)
    out[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert not lite0.training


@pytest.mark.parametrize("name", ["efficientnet-lite1", "efficientnet-lite2"])
def test_bigger_lites_when_installed(name: str) -> None:
    if not zoo.available(name):
        with pytest.raises(NotAvailableError, match=r"advlab\[zoo\]"):
            zoo.load(name)
        return
    model = zoo.load(name)
    info = zoo.info(name)
    x, _ = data.load("samples", info.input_size)
    with torch.no_grad():
        top3 = model(x).topk(3, dim=1).indices
    assert 967 in top3[data.item_names("samples").index("coffee")].tolist()


def test_digits_cnn_is_accurate() -> None:
    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test")
    assert accuracy(model, x, y) >= 0.97
    info = zoo.info("digits-cnn")
    assert (info.channels, info.input_size, info.num_classes) == (1, 8, 10)


def test_resnet18_loads_a_torchvision_checkpoint(tmp_path: Path) -> None:
    sd = random_state_dict()
    x = torch.rand(2, 3, 64, 64)
    reference = zoo.load("resnet18")
    reference.net.load_state_dict(sd)  # type: ignore[union-attr, operator]
    with torch.no_grad():
        expected = reference(x)
    # .pth as torchvision saves it, nested under "state_dict" with a DDP "module." prefix, and safetensors
    torch.save(sd, tmp_path / "plain.pth")
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "nested.pth")
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    # checkpoints from before PyTorch 0.4.1 (torchvision's original resnet18 file) lack num_batches_tracked
    torch.save({k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}, tmp_path / "old.pth")
    for name in ["plain.pth", "nested.pth", "w.safetensors", "old.pth"]:
        model = zoo.load("resnet18", weights=tmp_path / name)
        with torch.no_grad():
            assert torch.allclose(model(x), expected, atol=1e-5), name
        assert model.info.pretrained  # type: ignore[union-attr]
    assert reference.info.mean == IMAGENET_MEAN  # type: ignore[union-attr]


def test_cifar_resnet18() -> None:
    model = zoo.load("cifar-resnet18")
    info = zoo.info("cifar-resnet18")
    assert (info.input_size, info.num_classes, info.class_names[0]) == (32, 10, "airplane")
    with torch.no_grad():
        assert model(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    assert not info.pretrained


def test_user_model_file_with_weights_and_normalization(tmp_path: Path) -> None:
    (tmp_path / "mine.py").write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(1)\n"
        "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 5))\n"
    )
    spec = f"{tmp_path / 'mine.py'}:make"
    other = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 5))
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, tmp_path / "w.safetensors")
    # the probe size defaults to 224; a model that needs 16x16 says so with input_size
    with pytest.raises(AdvlabError, match="rejects"):
        zoo.load(spec)
    (tmp_path / "mine.py").write_text(
        (tmp_path / "mine.py").read_text().replace("    return torch.nn.Sequential(", "    m = torch.nn.Sequential(")
        + "    m.input_size = 16\n    return m\n"
    )
    model = zoo.load(spec, weights=tmp_path / "w.safetensors", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), other((x - 0.5) / 0.25), atol=1e-5)
    assert model.info.num_classes == 5 and model.info.input_size == 16  # type: ignore[union-attr]
    with pytest.raises(AdvlabError, match="no callable"):
        zoo.load(f"{tmp_path / 'mine.py'}:missing")
    with pytest.raises(AdvlabError, match="no such model file"):
        zoo.load(f"{tmp_path / 'nope.py'}:make")


def test_torchvision_and_timm_say_what_to_install() -> None:
    for spec, module in [("torchvision:resnet18", "torchvision"), ("timm:resnet18", "timm")]:
        try:
            importlib.import_module(module)
        except Exception:  # noqa: BLE001 - on this CPU machine torchvision raises RuntimeError on import
            with pytest.raises(NotAvailableError, match=f"{module} is not available.*install"):
                zoo.load(spec)
        else:  # pragma: no cover - where it imports (GPU machines), the spec must build a classifier
            model = zoo.load(spec)
            with torch.no_grad():
                assert model(torch.rand(1, 3, 224, 224)).shape == (1, 1000)


def test_unknown_model_lists_the_zoo() -> None:
    with pytest.raises(AdvlabError, match="digits-cnn"):
        zoo.load("vgg-nonsense")
    with pytest.raises(AdvlabError, match="unknown model"):
        zoo.info("vgg-nonsense")


def test_check_input_and_labels() -> None:
    info = zoo.info("digits-cnn")
    zoo.check_input(info, torch.rand(2, 1, 8, 8))
    with pytest.raises(AdvlabError, match="3 channel"):
        zoo.check_input(info, torch.rand(2, 3, 8, 8))
    with pytest.raises(AdvlabError, match="only 8x8"):
        zoo.check_input(info, torch.rand(2, 1, 16, 16))
    zoo.check_labels(info, torch.tensor([0, 9, -1]))
    with pytest.raises(AdvlabError, match="class index 10 out of range"):
        zoo.check_labels(info, torch.tensor([0, 10]))
