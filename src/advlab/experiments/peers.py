"""Thin adapters to other libraries' minimum-norm attacks (torchattacks, Foolbox 3, ART), for
:func:`advlab.experiments.optimality.compare`. Each returns ``run(model, x, y) -> x_adv`` for images in [0, 1]
and imports its library when called: a library that is not installed raises ImportError. The libraries are
optional and untyped, so they are imported by name (:func:`importlib.import_module`): their attributes are ``Any``.

Budgets follow advlab's (forward + backward passes per sample): FMN / DDN ``budget // 2`` steps; C&W 5 binary
search rounds of ``budget // 10`` steps (torchattacks' C&W has no search: ``budget // 2`` steps at c = 1);
DeepFool up to 50 steps, overshoot 0.02. Other settings are each library's defaults.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from advlab.errors import AdvlabError

Run = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


def _missing(lib: str, name: str, norm: str, have: Mapping[str, tuple[str, ...]]) -> AdvlabError:
    if name not in have:
        return AdvlabError(f"{lib} has no {name!r} in advlab's adapters; choose from {', '.join(have)}")
    return AdvlabError(f"{lib}:{name} has no {norm} version (it has {', '.join(have[name])})")


#: the attacks each library's adapter runs, and their norms
TORCHATTACKS: dict[str, tuple[str, ...]] = {"cw": ("l2",), "deepfool": ("l2",)}
FOOLBOX: dict[str, tuple[str, ...]] = {
    "fmn": ("l0", "l1", "l2", "linf"),
    "ddn": ("l2",),
    "cw": ("l2",),
    "deepfool": ("l2", "linf"),
}
ART: dict[str, tuple[str, ...]] = {"cw": ("l2",), "deepfool": ("l2",)}


def torchattacks_attack(name: str, norm: str, budget: int, classes: int, shape: tuple[int, ...]) -> Run:
    if norm not in TORCHATTACKS.get(name, ()):
        raise _missing("torchattacks", name, norm, TORCHATTACKS)
    torchattacks = importlib.import_module("torchattacks")

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if name == "cw":
            atk = torchattacks.CW(model, c=1, kappa=0, steps=max(1, budget // 2), lr=0.01)
        else:
            atk = torchattacks.DeepFool(model, steps=50, overshoot=0.02)
        out = atk(x, y)
        return out[0] if isinstance(out, tuple) else out

    return run


def foolbox_attack(name: str, norm: str, budget: int, classes: int, shape: tuple[int, ...]) -> Run:
    if norm not in FOOLBOX.get(name, ()):
        raise _missing("foolbox", name, norm, FOOLBOX)
    fb = importlib.import_module("foolbox")

    def build() -> Any:
        if name == "fmn":
            cls = {
                "l0": fb.attacks.L0FMNAttack,
                "l1": fb.attacks.L1FMNAttack,
                "l2": fb.attacks.L2FMNAttack,
                "linf": fb.attacks.LInfFMNAttack,
            }[norm]
            return cls(steps=max(1, budget // 2))
        if name == "ddn":
            return fb.attacks.DDNAttack(steps=max(1, budget // 2))
        if name == "cw":
            return fb.attacks.L2CarliniWagnerAttack(binary_search_steps=5, steps=max(1, budget // 10))
        cls = fb.attacks.L2DeepFoolAttack if norm == "l2" else fb.attacks.LinfDeepFoolAttack
        return cls(steps=50, overshoot=0.02, candidates=classes)

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        fmodel = fb.PyTorchModel(model.eval(), bounds=(0, 1))
        _, clipped, _ = build()(fmodel, x, y, epsilons=None)
        return clipped[0] if isinstance(clipped, list) else clipped

    return run


def art_attack(name: str, norm: str, budget: int, classes: int, shape: tuple[int, ...]) -> Run:
    if norm not in ART.get(name, ()):
        raise _missing("art", name, norm, ART)
    evasion = importlib.import_module("art.attacks.evasion")
    classification = importlib.import_module("art.estimators.classification")

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        clf = classification.PyTorchClassifier(
            model=model,
            loss=nn.CrossEntropyLoss(),
            input_shape=shape,
            nb_classes=classes,
            clip_values=(0.0, 1.0),
            device_type="cpu",
        )
        if name == "cw":
            atk = evasion.CarliniL2Method(
                clf,
                confidence=0.0,
                learning_rate=0.01,
                binary_search_steps=5,
                max_iter=max(1, budget // 10),
                initial_const=1.0,
                batch_size=len(x),
                verbose=False,
            )
        else:
            atk = evasion.DeepFool(clf, max_iter=50, epsilon=0.02, nb_grads=classes, batch_size=len(x), verbose=False)
        out = atk.generate(x=x.detach().cpu().numpy(), y=y.detach().cpu().numpy() if name == "cw" else None)
        return torch.from_numpy(out).to(x)

    return run
