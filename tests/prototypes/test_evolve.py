"""evolve: one batch of (start, target) pairs through the shared optimization step; min vs max mode, the L2 and
momentum methods, the eps ball, seeds and regularizers, snapshots, and agreement with a hand-written loop."""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import advlab.attacks.step as step_module
from advlab import losses, prototypes
from advlab.prototypes import Config

evolve_module = importlib.import_module(
    "advlab.prototypes.evolve"
)  # the module (the package's `evolve` is the function)


def test_max_mode_ends_with_a_larger_gradient_than_min_mode(digits) -> None:
    for start in ("blank:gray", "digits:test"):
        lo = prototypes.generate(digits, start, "all", Config(mode="min", steps=100), limit=1).evolution
        hi = prototypes.generate(digits, start, "all", Config(mode="max", steps=100), limit=1).evolution
        assert (hi.final_grad_norm > lo.final_grad_norm).all()
        assert (hi.final_grad_norm > 100 * lo.final_grad_norm).float().mean() >= 0.9
        # the max-mode result is still the target (it is the best iterate classified as the target)
        with torch.no_grad():
            pred = digits(hi.x).argmax(1)
        assert (pred == hi.target).all()
        assert (hi.final_top1 == hi.target).all()


def test_l2_and_momentum_methods_and_the_eps_ball(digits) -> None:
    for method, norm in (("pgdl2", "l2"), ("mifgsm", "linf")):
        cfg = Config(method=method, eps=1.5 if norm == "l2" else 0.2, alpha=0.1 if norm == "l2" else 0.01, steps=60)
        ev = prototypes.generate(digits, "blank:gray", "0-4", cfg).evolution
        dist = ev.l2 if norm == "l2" else ev.linf
        assert (dist <= cfg.eps + 1e-4).all()
        assert (ev.final_top1 == ev.target).float().mean() >= 0.8


def test_same_seed_same_prototypes_and_regularizers_act(digits) -> None:
    cfg = Config(steps=40, jitter=1, seed=3)
    a = prototypes.generate(digits, "noise:uniform", "all", cfg).x
    b = prototypes.generate(digits, "noise:uniform", "all", cfg).x
    c = prototypes.generate(digits, "noise:uniform", "all", Config(steps=40, jitter=1, seed=4)).x
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = prototypes.generate(digits, "noise:uniform", "all", Config(steps=60)).x
    smooth = prototypes.generate(digits, "noise:uniform", "all", Config(steps=60, tv=2.0)).x
    blurred = prototypes.generate(digits, "noise:uniform", "all", Config(steps=60, blur=0.8)).x
    tv = prototypes.total_variation()
    assert tv(smooth).mean() < 0.8 * tv(plain).mean()
    assert tv(blurred).mean() < 0.8 * tv(plain).mean()


def test_snapshots_show_the_trajectory(digits) -> None:
    run = prototypes.generate(digits, "blank:gray", "all", Config(steps=30, snapshots=(0, 10, 30)), strip_pairs=[2, 5])
    ev = run.evolution
    assert ev.snapshot_steps == [0, 10, 30] and ev.snapshot_pairs.tolist() == [2, 5]
    assert ev.snapshots.shape == (2, 3, 1, 8, 8)
    assert torch.equal(ev.snapshots[:, 0], run.starts.x.expand(2, -1, -1, -1))
    assert torch.allclose(ev.snapshots[:, 2], ev.x[[2, 5]])
    d10 = (ev.snapshots[:, 1] - ev.snapshots[:, 0]).flatten(1).norm(dim=1)
    assert torch.allclose(d10, ev.l2[[2, 5], 10], atol=1e-5)


def test_evolve_takes_its_step_from_attacks(digits, monkeypatch: pytest.MonkeyPatch) -> None:
    """Prototypes have no optimization step of their own: every move is one Iterate.step of advlab.attacks.step,
    and the margin recorded is advlab.losses.margin."""
    assert evolve_module.Iterate is step_module.Iterate and evolve_module.gradient is step_module.gradient
    assert evolve_module.margin is losses.margin
    assert not any(hasattr(evolve_module, name) for name in ("steepest_step", "project", "_margin"))
    moves: list[int] = []
    real = step_module.Iterate.step

    def counted(self: step_module.Iterate, ascent: torch.Tensor, **kw: bool) -> None:
        moves.append(self.running)
        real(self, ascent, **kw)

    monkeypatch.setattr(step_module.Iterate, "step", counted)
    x0 = torch.full((3, 1, 8, 8), 0.5)
    ev = prototypes.evolve(digits, x0, torch.tensor([1, 4, 7]), Config(steps=12, tol=0.0))
    assert moves == [3] * 12  # one step per move, all rows running (tol 0: nothing converges)
    ev2 = prototypes.evolve(digits, x0, torch.tensor([1, 4, 7]), Config(steps=60))
    assert len(moves) == 12 + int(ev2.stopped.max()) and moves[12:] == sorted(moves[12:], reverse=True)
    assert ev.x.shape == x0.shape


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 5)).eval()


def _reference(
    model: nn.Module, x0: torch.Tensor, t: torch.Tensor, steps: int, alpha: float, eps: float, tol: float, mu: float
) -> dict[str, torch.Tensor]:
    """Min mode with L-inf steps, written out by hand: descend CE by sign steps (MI-FGSM's L1-normalised
    momentum when mu > 0), project onto the eps-ball and [0, 1], stop a pair where ||g||_2 < tol."""
    n = len(x0)
    x, v = x0.clone(), torch.zeros_like(x0)
    running = torch.ones(n, dtype=torch.bool)
    stopped = torch.full((n,), steps)
    rec: dict[str, list[torch.Tensor]] = {k: [] for k in ("prob", "top1", "margin", "grad_norm", "l2", "linf")}
    for s in range(steps + 1):
        xr = x.clone().requires_grad_(True)
        z = model(xr)
        (g,) = torch.autograd.grad(F.cross_entropy(z, t, reduction="none").sum(), xr)
        z = z.detach()
        zt = z.gather(1, t[:, None]).squeeze(1)
        values = {
            "prob": z.softmax(1).gather(1, t[:, None]).squeeze(1),
            "top1": z.argmax(1),
            "margin": zt - z.scatter(1, t[:, None], -torch.inf).amax(1),
            "grad_norm": g.flatten(1).norm(dim=1),
            "l2": (x - x0).flatten(1).norm(dim=1),
            "linf": (x - x0).flatten(1).abs().amax(1),
        }
        for k, val in values.items():  # a stopped pair keeps its last values
            rec[k].append(torch.where(running, val, rec[k][-1]) if s else val)
        if s == steps:
            break
        newly = running & (values["grad_norm"] < tol)
        stopped[newly], running = s, running & ~newly
        u = -g
        if mu:
            u = mu * v + u / (u.flatten(1).abs().sum(1).view(-1, 1, 1, 1) + 1e-12)
            v = torch.where(running.view(-1, 1, 1, 1), u, v)
        moved = (x0 + (x + alpha * u.sign() - x0).clamp(-eps, eps)).clamp(0, 1)
        x = torch.where(running.view(-1, 1, 1, 1), moved, x)
    out = {k: torch.stack(vs, 1) for k, vs in rec.items()}
    return {**out, "x": x, "stopped": stopped}


@pytest.mark.parametrize("method, mu", [("pgd", 0.0), ("mifgsm", 0.9)])
def test_min_mode_agrees_with_a_hand_written_loop(method: str, mu: float) -> None:
    """The rewrite on advlab.attacks.step keeps the science: on a tiny model and a fixed seed every record,
    every stopping step and the prototypes match the loop written out by hand (1e-6)."""
    model = _tiny()
    gen = torch.Generator().manual_seed(1)
    x0, t = torch.rand(8, 1, 4, 4, generator=gen), torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    cfg = Config(method=method, eps=0.3, alpha=0.02, steps=40, tol=0.12, momentum=mu)
    ev = prototypes.evolve(model, x0, t, cfg)
    ref = _reference(model, x0, t, cfg.steps, 0.02, 0.3, 0.12, mu)
    assert 0 < int(ev.converged.sum()) < len(t)  # some pairs stop early, some run to the end: both paths tested
    assert torch.equal(ev.stopped, ref["stopped"]) and torch.equal(ev.converged, ref["stopped"] < cfg.steps)
    assert torch.equal(ev.top1, ref["top1"])
    for k in ("x", "prob", "margin", "grad_norm", "l2", "linf"):
        assert torch.allclose(getattr(ev, k), ref[k], atol=1e-6, rtol=0), k


def test_records_do_not_depend_on_how_many_steps_wait(digits, monkeypatch: pytest.MonkeyPatch) -> None:
    """The logits of several steps become records together; with one step at a time (a large model's case)
    every record, stop and prototype is the same, also for pairs that stop in the middle of a wait."""
    x0 = prototypes.parse_start("digits:test", 1, 8, limit=2).x.repeat_interleave(5, 0)
    t = torch.tensor([0, 2, 4, 6, 8] * 2)
    cfg = Config(steps=70, tol=1e-3)
    batched = prototypes.evolve(digits, x0, t, cfg).tensors()
    monkeypatch.setattr(evolve_module, "PENDING_BYTES", 1)
    one = prototypes.evolve(digits, x0, t, cfg).tensors()
    assert 0 < int(batched["converged"].sum()) and all(torch.equal(batched[k], one[k]) for k in batched)
    stops = batched["stopped"][batched["converged"]].tolist()
    assert any(s % evolve_module.PENDING_STEPS not in (0, evolve_module.PENDING_STEPS - 1) for s in stops)


def test_max_mode_steps_are_the_gradient_norm_ascent_once_the_target_wins() -> None:
    """Max mode: while the target is top-1 the step ascends ||dCE/dx||^2 (double backprop); the kept iterate is
    the one classified as the target with the largest ||g||, and that is the recorded ||g|| at ``final``."""
    model = _tiny()
    x0, t = torch.rand(4, 1, 4, 4, generator=torch.Generator().manual_seed(2)), torch.tensor([0, 1, 2, 3])
    ev = prototypes.evolve(model, x0, t, Config(mode="max", alpha=0.02, steps=50))
    hit = ev.top1 == t[:, None]
    best = torch.where(hit, ev.grad_norm, torch.full_like(ev.grad_norm, -1)).amax(1)
    reached = hit.any(1)
    assert reached.any()
    assert torch.allclose(ev.final_grad_norm[reached], best[reached])
    with torch.no_grad():
        g_at_x = []
        for i in range(4):
            xr = ev.x[i : i + 1].clone().requires_grad_(True)
            with torch.enable_grad():
                (g,) = torch.autograd.grad(F.cross_entropy(model(xr), t[i : i + 1]), xr)
            g_at_x.append(g.norm())
    assert torch.allclose(torch.stack(g_at_x)[reached], best[reached], rtol=1e-4)
