"""Attack optimality (AttackBench: Cina et al. 2024): robust-accuracy curves from per-sample minimal distances,
their areas, and the comparison of several attacks on the same model, data and query budget.

From an attack's per-sample distances d_i (the norm of its smallest adversarial perturbation, inf where none;
0 for a sample the model already gets wrong), robust accuracy at every eps at once is

    RA(eps) = (1/N) #{i : correct_i and d_i > eps},
    and its area  A = int_0^eps_max RA = (1/N) sum_i correct_i min(d_i, eps_max)

(:func:`advlab.evaluation.metrics.robust_accuracy_curve` and :func:`~advlab.evaluation.metrics.robust_accuracy_area`).

With the reference d*_i = min over the attacks compared of d_i (the best any of them found) and its area A*,
an attack's optimality is AttackBench's

    optimality = 1 - (A - A*) / (clean_acc * eps_max - A*)

(1: it found every sample's best distance; 0: it broke nothing). ``eps_max`` defaults to the largest finite
reference distance, where the reference curve has reached its floor. Distances are in [0, 1] pixel units.

:func:`compare` runs the attacks: advlab's by name (:func:`advlab_attack`, configured to the budget of
forward + backward passes per sample) and peers' (torchattacks, Foolbox, ART) through :func:`peer_attack`,
only when the library imports. Every attack's output is re-checked on the model and measured the same way.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from advlab.attacks import APGD, APGDT, CW, DDN, FMN, LBFGS, DeepFool
from advlab.attacks.base import Attack
from advlab.attacks.minimal import bisect
from advlab.errors import AdvlabError
from advlab.evaluation import metrics
from advlab.threat import distance

#: advlab's attacks a comparison can run, with the norms each has
ADVLAB_NORMS: dict[str, tuple[str, ...]] = {
    "fmn": ("l0", "l1", "l2", "linf"),
    "ddn": ("l2",),
    "cw": ("l2",),
    "deepfool": ("l2", "linf"),
    "lbfgs": ("l2",),
    "apgd": ("l2", "linf", "l1"),
    "apgd-t": ("l2", "linf", "l1"),
}
#: the bisection of the eps-bounded attacks: probes and the first (largest) eps per norm, in [0, 1] pixel units
PROBES = 10
BISECT_HI = {"linf": 0.5, "l2": 4.0, "l1": 16.0}


def optimality(a: float, a_ref: float, clean_acc: float, eps_max: float) -> float:
    """AttackBench's optimality of an attack of area ``a`` against the reference area ``a_ref``."""
    span = clean_acc * eps_max - a_ref
    return 1.0 if span <= 0 else 1.0 - (a - a_ref) / span


@dataclass
class Entry:
    """One attack's run: per-sample distances (CPU, inf where it failed), forward/backward passes per sample
    (means), CPU seconds, and a note (e.g. "not installed")."""

    name: str
    distances: torch.Tensor | None
    forwards: float = 0.0
    backwards: float = 0.0
    seconds: float = 0.0
    note: str = ""


@dataclass
class Comparison:
    """The scores: per attack its area, optimality, success rate, median distance, passes and seconds (``rows``)
    and its per-sample distances (``distances``); the reference distances and which samples were correct."""

    norm: str
    budget: int
    n: int
    clean_accuracy: float
    eps_max: float
    reference_area: float
    reference: torch.Tensor
    correct: torch.Tensor
    rows: list[dict[str, Any]] = field(default_factory=list)
    distances: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "norm": self.norm,
            "budget": self.budget,
            "images": self.n,
            "clean_accuracy": self.clean_accuracy,
            "eps_max": self.eps_max,
            "reference_area": self.reference_area,
            "attacks": self.rows,
        }

    def markdown(self) -> str:
        head = (
            "| attack | optimality | area | success | median distance | forwards | backwards | seconds |\n"
            "|---|---|---|---|---|---|---|---|\n"
        )
        lines = []
        for r in self.rows:
            if r.get("note"):
                lines.append(f"| {r['attack']} | {r['note']} | | | | | | |")
                continue
            med = "-" if r["median_distance"] is None else f"{r['median_distance']:.4g}"
            lines.append(
                f"| {r['attack']} | {r['optimality']:.4f} | {r['area']:.4g} | {r['success_rate']:.1%} | {med} | "
                f"{r['forwards']:.0f} | {r['backwards']:.0f} | {r['seconds']:.2f} |"
            )
        return (
            head
            + "\n".join(lines)
            + f"\n\n{self.norm}, {self.n} images, budget {self.budget} forward+backward passes per image, "
            f"eps_max {self.eps_max:.4g}, clean accuracy {self.clean_accuracy:.1%}"
        )


def score(
    entries: list[Entry], correct: torch.Tensor, norm: str, budget: int, eps_max: float | None = None
) -> Comparison:
    """Reference distances (the per-sample best over the entries that ran), areas and optimality of each entry."""
    ran = [e.distances for e in entries if e.distances is not None]
    n = len(correct)
    if not ran:
        raise AdvlabError("no attack of the comparison ran")
    ref = torch.stack(ran).amin(0)
    finite = ref[torch.isfinite(ref) & correct.bool()]
    top = float(eps_max) if eps_max is not None else (float(finite.max()) if len(finite) else 1.0)
    clean = metrics.rate(correct)
    a_ref = metrics.robust_accuracy_area(ref, correct, top)
    cmp = Comparison(norm, budget, n, clean, top, a_ref, ref, correct.bool().cpu())
    for e in entries:
        if e.distances is None:
            cmp.rows.append({"attack": e.name, "note": e.note or "did not run"})
            continue
        cmp.distances[e.name] = e.distances
        a = metrics.robust_accuracy_area(e.distances, correct, top)
        broken = correct.bool() & torch.isfinite(e.distances)
        med = e.distances[broken]
        cmp.rows.append(
            {
                "attack": e.name,
                "optimality": round(optimality(a, a_ref, clean, top), 6),
                "area": round(a, 6),
                "success_rate": metrics.attack_success_rate(broken, attacked=correct),
                "median_distance": round(float(med.median()), 6) if len(med) else None,
                "forwards": round(e.forwards, 1),
                "backwards": round(e.backwards, 1),
                "seconds": round(e.seconds, 3),
                "curve": curve_points(e.distances, correct, top),
            }
        )
    return cmp


def curve_points(dist: torch.Tensor, correct: torch.Tensor, eps_max: float, points: int = 51) -> list[list[float]]:
    """[eps, robust accuracy] at ``points`` evenly spaced eps in [0, eps_max] (what plots and JSON hold)."""
    eps = torch.linspace(0, eps_max, points)
    curve = metrics.robust_accuracy_curve(dist, correct, eps)
    return [[round(float(e), 6), round(float(r), 6)] for e, r in zip(eps, curve, strict=True)]


def measured(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-sample distances of ``x_adv`` as the model sees it: the norm where argmax != y (0 for a sample
    already wrong), inf where the model still answers y or x_adv leaves [0, 1]."""
    with torch.no_grad():
        wrong = model(x_adv.to(x)).argmax(1).cpu() != y.cpu()
    d = distance(x_adv.detach().cpu().float() - x.detach().cpu().float(), norm)
    inside = (x_adv.detach().cpu().flatten(1).amin(1) >= 0) & (x_adv.detach().cpu().flatten(1).amax(1) <= 1)
    return torch.where(wrong & inside, d, torch.full_like(d, math.inf))


# ------------------------------------------------------------------------------------------------ advlab attacks
def advlab_attack(
    name: str, norm: str, budget: int, classes: int
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], Any]:
    """advlab's attack ``name`` configured for at most ``budget`` forward + backward passes per sample in ``norm``:
    FMN / DDN ``(budget - K - 2) // 2`` steps (K backwards and 2 forwards pick the nearest class); C&W 5 rounds of
    ``budget // 10`` Adam steps; DeepFool up to 50 linearizations; L-BFGS 8 searches of ``budget // 16``
    iterations (L-BFGS-B may evaluate more often); APGD / APGD-T a per-sample bisection of 10 probes
    (:func:`advlab.attacks.minimal.bisect`), APGD-T over 3 targets. Returns ``run(model, x, y) -> AttackResult``."""
    if name not in ADVLAB_NORMS:
        raise AdvlabError(
            f"unknown attack {name!r} for a comparison; choose from {', '.join(ADVLAB_NORMS)} "
            "or torchattacks:/foolbox:/art: peers"
        )
    if norm not in ADVLAB_NORMS[name]:
        raise AdvlabError(f"{name} has no {norm} version (it has {', '.join(ADVLAB_NORMS[name])})")
    if budget < 1:
        raise AdvlabError(f"budget must be at least 1 forward+backward pass, got {budget}")
    if name in ("apgd", "apgd-t"):
        bounded = _bisected_apgd(name, norm, budget)
        return lambda model, x, y: bisect(bounded, model, x, y, hi=BISECT_HI[norm], probes=PROBES)
    atk = _minimal_attack(name, norm, budget, classes)
    return lambda model, x, y: atk(model, x, y)


def _minimal_attack(name: str, norm: str, budget: int, classes: int) -> Attack:
    """The minimum-norm attack ``name`` (fmn, ddn, cw, deepfool, lbfgs) within ``budget`` passes per sample."""
    steps = max(1, (budget - classes - 2) // 2)
    if name == "fmn":
        return FMN(norm=norm, steps=steps)
    if name == "ddn":
        return DDN(steps=steps)
    if name == "cw":
        return CW(binary_search_steps=5, steps=max(1, budget // 10))
    if name == "deepfool":
        return DeepFool(norm=norm, steps=max(1, min(50, (budget - 1) // (2 + classes))), candidates=classes)
    return LBFGS(search_steps=8, steps=max(1, budget // 16))


def _bisected_apgd(name: str, norm: str, budget: int) -> Attack:
    """APGD (or APGD-T over 3 targets) at the largest eps of the bisection, each probe's share of ``budget``."""
    per = budget // PROBES
    if name == "apgd":
        return APGD(norm=norm, eps=BISECT_HI[norm], steps=max(1, (per - 2) // 2))
    return APGDT(norm=norm, eps=BISECT_HI[norm], steps=max(1, (per - 2) // 6), n_targets=3)


def run_advlab(
    name: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, budget: int, classes: int
) -> Entry:
    """Run advlab's ``name`` and measure it (:func:`measured`), with its per-sample passes and CPU seconds."""
    run = advlab_attack(name, norm, budget, classes)
    t = time.process_time()
    res = run(model, x, y)
    sec = time.process_time() - t
    return Entry(
        name,
        measured(model, x, y, res.x_adv, norm),
        float(res.forwards.float().mean()),
        float(res.backwards.float().mean()),
        sec,
    )


# ------------------------------------------------------------------------------------------------ peers
class Counted(nn.Module):
    """``model`` with its forward and backward passes counted in samples (a batch of N counts N)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.forwards, self.backwards = model, 0, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model(x)
        self.forwards += len(x)
        if out.requires_grad:
            n = len(x)

            def count(g: torch.Tensor) -> None:
                self.backwards += n

            out.register_hook(count)
        return out


def peer_attack(
    spec: str, norm: str, budget: int, classes: int, shape: tuple[int, ...]
) -> Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]:
    """A peer's attack as ``run(model, x, y) -> x_adv``: ``library:attack`` with library torchattacks, foolbox or
    art and attack fmn, ddn, cw or deepfool, configured to ``budget`` like advlab's. Raises ImportError when
    the library does not import, AdvlabError for an attack or norm it does not have."""
    lib, _, atk = spec.partition(":")
    from advlab.experiments import peers

    table = {"torchattacks": peers.torchattacks_attack, "foolbox": peers.foolbox_attack, "art": peers.art_attack}
    if lib not in table or not atk:
        raise AdvlabError(f"unknown peer {spec!r}; write torchattacks:NAME, foolbox:NAME or art:NAME")
    return table[lib](atk, norm, budget, classes, shape)


def run_peer(
    spec: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, norm: str, budget: int, classes: int
) -> Entry:
    """Run a peer's attack through :class:`Counted`; a library that does not import gives an entry "not installed"."""
    try:
        run = peer_attack(spec, norm, budget, classes, tuple(x.shape[1:]))
    except ImportError as e:
        return Entry(spec, None, note=f"not installed ({type(e).__name__})")
    counted = Counted(model).eval()
    t = time.process_time()
    x_adv = run(counted, x, y)
    sec = time.process_time() - t
    n = max(len(x), 1)
    return Entry(spec, measured(model, x, y, x_adv, norm), counted.forwards / n, counted.backwards / n, sec)


def compare(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    attacks: list[str],
    norm: str,
    budget: int,
    progress: Callable[[str], None] | None = None,
) -> Comparison:
    """Run each attack of ``attacks`` (advlab names, or ``library:name`` peers) on ``model``, ``x``, ``y`` within
    ``budget`` passes per sample in ``norm``, and score them against their per-sample best (:func:`score`)."""
    if budget < 1:
        raise AdvlabError(f"budget must be at least 1 forward+backward pass, got {budget}")
    with torch.no_grad():
        logits = model(x)
    classes, correct = logits.shape[1], metrics.clean_correct(y, logits.argmax(1)).cpu()
    for name in attacks:  # every name (and norm) checked before anything runs
        if ":" not in name:
            advlab_attack(name, norm, budget, classes)
            continue
        try:
            peer_attack(name, norm, budget, classes, tuple(x.shape[1:]))
        except ImportError:
            pass
    entries = []
    for name in attacks:
        if progress is not None:
            progress(name)
        entries.append(
            run_peer(name, model, x, y, norm, budget, classes)
            if ":" in name
            else run_advlab(name, model, x, y, norm, budget, classes)
        )
    return score(entries, correct, norm, budget)
