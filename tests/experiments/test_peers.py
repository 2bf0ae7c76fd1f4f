"""The adapters to other libraries' minimum-norm attacks (torchattacks, Foolbox, ART) on a known-answer model.

The peers are optional. Where a library is absent (here: shadowed, so the path is tested whether it is installed or
not), asking for its attack raises ImportError and ``optimality.compare`` keeps going with a "not installed" row.
Where it imports, its attack runs through the adapter on the linear known-answer problem and must find adversarial
points no closer than the exact minimum: a real comparison with advlab's own attack on the same images.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable

import pytest
import torch

from advlab.errors import AdvlabError
from advlab.experiments import known, peers
from advlab.experiments import optimality as O

ADAPTERS: dict[str, Callable[..., peers.Run]] = {
    "torchattacks": peers.torchattacks_attack,
    "foolbox": peers.foolbox_attack,
    "art": peers.art_attack,
}
CLASSES = 5


@pytest.fixture(scope="module")
def linear_problem() -> known.Known:
    """16 images in [0.25, 0.75] labelled by a random 5-class linear model, with their exact minimal distances."""
    return known.linear_problem(n=16, classes=CLASSES, seed=1)


def _shadow(monkeypatch: pytest.MonkeyPatch, lib: str) -> None:
    """Make ``import lib`` (and its submodules) fail, as on a machine without it."""
    monkeypatch.setitem(sys.modules, lib, None)


def test_an_attack_or_norm_the_adapter_lacks_is_refused_before_any_import(monkeypatch: pytest.MonkeyPatch) -> None:
    for lib in ADAPTERS:
        _shadow(monkeypatch, lib)  # the refusal must not depend on the library being there
    with pytest.raises(AdvlabError, match="torchattacks has no 'fmn' in advlab's adapters; choose from cw, deepfool"):
        peers.torchattacks_attack("fmn", "l2", 100, CLASSES, known.SHAPE)
    with pytest.raises(AdvlabError, match=r"foolbox:ddn has no linf version \(it has l2\)"):
        peers.foolbox_attack("ddn", "linf", 100, CLASSES, known.SHAPE)
    with pytest.raises(AdvlabError, match=r"art:cw has no l1 version \(it has l2\)"):
        peers.art_attack("cw", "l1", 100, CLASSES, known.SHAPE)
    with pytest.raises(AdvlabError, match="unknown peer 'cleverhans:cw'"):
        O.peer_attack("cleverhans:cw", "l2", 100, CLASSES, known.SHAPE)


@pytest.mark.parametrize("lib", list(ADAPTERS))
def test_a_library_that_does_not_import_gives_a_not_installed_row(
    lib: str, linear_problem: known.Known, monkeypatch: pytest.MonkeyPatch
) -> None:
    _shadow(monkeypatch, lib)
    with pytest.raises(ImportError):
        ADAPTERS[lib]("deepfool", "l2", 100, CLASSES, known.SHAPE)
    p = linear_problem
    cmp = O.compare(p.model, p.x, p.y, ["deepfool", f"{lib}:deepfool"], "l2", 100)
    rows = {r["attack"]: r for r in cmp.rows}
    assert rows[f"{lib}:deepfool"] == {"attack": f"{lib}:deepfool", "note": "not installed (ModuleNotFoundError)"}
    # advlab's own DeepFool still ran, is the reference, and is never closer than the exact minimum
    assert rows["deepfool"]["optimality"] == pytest.approx(1.0) and rows["deepfool"]["success_rate"] == 1.0
    found = cmp.distances["deepfool"].double()
    assert (found >= p.truth("l2") * (1 - 1e-3)).all()


def _installed(lib: str) -> bool:
    return importlib.util.find_spec(lib) is not None


@pytest.mark.parametrize(
    ("lib", "name"),
    [("torchattacks", "deepfool"), ("torchattacks", "cw"), ("foolbox", "deepfool"), ("foolbox", "fmn")]
    + [("foolbox", "ddn"), ("art", "deepfool")],
)
def test_an_installed_peer_is_held_to_the_known_answer(lib: str, name: str, linear_problem: known.Known) -> None:
    if not _installed(lib):
        pytest.skip(f"{lib} is not installed (optional: bootstrap.sh bench installs the peers)")
    p = linear_problem
    run = ADAPTERS[lib](name, "l2", 200, CLASSES, known.SHAPE)
    x_adv = run(p.model.eval(), p.x.clone(), p.y.clone())
    assert x_adv.shape == p.x.shape and float(x_adv.min()) >= 0 and float(x_adv.max()) <= 1
    found = O.measured(p.model, p.x, p.y, x_adv, "l2").double()  # inf where the peer failed
    broken = torch.isfinite(found)
    assert float(broken.double().mean()) >= 0.75, f"{lib}:{name} fooled {int(broken.sum())} of {len(found)}"
    # nobody gets below the exact minimal distance of a linear model (float32 rounding aside)
    assert (found[broken] >= p.truth("l2")[broken] * (1 - 1e-3)).all()
    # and the comparison scores the peer against advlab's DeepFool on the same images
    cmp = O.compare(p.model, p.x, p.y, ["deepfool", f"{lib}:{name}"], "l2", 200)
    rows = {r["attack"]: r for r in cmp.rows}
    assert 0 <= rows[f"{lib}:{name}"]["optimality"] <= 1 + 1e-9
    assert math.isfinite(rows[f"{lib}:{name}"]["area"])
    assert rows[f"{lib}:{name}"]["forwards"] > 0
