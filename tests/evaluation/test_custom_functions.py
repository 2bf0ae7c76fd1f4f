"""Custom autograd Functions whose backward fails (zero, negated, noise, a quantizer's zero): the probe finds them by
finite differences and the attacks get gradients through them (autograd on the Function's own forward, or the
output's gradient passed straight through); an honest custom Function keeps its backward."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

from advlab import attacks
from advlab.evaluation import EvalConfig, diagnostics, evaluate
from advlab.evaluation.bpda import StraightThrough, custom_functions, function_name
from advlab.zoo import traps

EPS = 0.1
PGD = [attacks.PGD(eps=EPS)]


class LyingReLU(torch.autograd.Function):
    """ReLU whose backward is the negated true one."""

    @staticmethod
    def forward(ctx: Any, h: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h)
        return h.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (h,) = ctx.saved_tensors
        return -g * (h > 0)


class HonestReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, h: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h)
        return h.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (h,) = ctx.saved_tensors
        return g * (h > 0)


class ZeroReLU(torch.autograd.Function):
    """ReLU in the newer style (forward without ctx, ``setup_context``) with a zero backward."""

    @staticmethod
    def forward(h: torch.Tensor) -> torch.Tensor:
        return h.clamp_min(0)

    @staticmethod
    def setup_context(ctx: Any, inputs: Any, output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(g)


class HonestSquash(torch.autograd.Function):
    """A custom input transform with the right backward: 0.8 x + 0.1 + 0.05 sin(2 pi x)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return 0.8 * x + 0.1 + 0.05 * torch.sin(2 * torch.pi * x)

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        return g * (0.8 + 0.1 * torch.pi * torch.cos(2 * torch.pi * x))


class ZeroRound(torch.autograd.Function):
    """An input quantizer to 1/8 with the true (zero) gradient."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * 8) / 8

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(g)


class Activation(nn.Module):
    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fn(h)


class Before(nn.Module):
    """``twin(fn(x))``."""

    def __init__(self, twin: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        self.twin, self.fn = twin, fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.twin(self.fn(x))


def _relus_replaced(twin: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]) -> nn.Module:
    """The digits CNN with the three ReLUs of its convolutional features replaced by ``fn`` (the same function when
    ``fn`` computes a ReLU; three, so that negated backwards do not cancel)."""
    net = copy.deepcopy(twin)
    seq = net.net.features
    for i, layer in enumerate(seq):
        if isinstance(layer, nn.ReLU):
            seq[i] = Activation(fn)
    return net.eval()


def _input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(model(xs), y), xs)
    return g


def _bound_zero_identity(twin: nn.Module) -> nn.Module:
    apply = traps._Backward.apply  # bound before the evaluation: the forward cannot be swapped in

    return Before(twin, lambda x: apply(x, "zero", None, 0.0))


#: a model with a failing custom backward -> (how the probe should treat it, whether its attacked view's input
#: gradient is the twin's exactly)
FAILING: dict[str, tuple[Callable[[nn.Module], nn.Module], str]] = {
    "deep negated relu": (lambda t: _relus_replaced(t, lambda h: LyingReLU.apply(h)), "differentiated"),
    "deep zero relu (setup_context)": (lambda t: _relus_replaced(t, lambda h: ZeroReLU.apply(h)), "differentiated"),
    "input zero": (lambda t: traps.CustomBackward(t, mode="zero"), "differentiated"),
    "input negated": (lambda t: traps.CustomBackward(t, mode="negated"), "differentiated"),
    "input noisy": (lambda t: traps.CustomBackward(t, mode="noisy", seed=0), "differentiated"),
    "input zero, apply bound early": (_bound_zero_identity, "straight"),
}


@pytest.mark.parametrize("kind", FAILING)
def test_a_failing_backward_is_found_and_the_attacks_get_the_twins_gradient(
    kind: str, twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits[0][:16], digits[1][:16]
    make, way = FAILING[kind]
    model = make(twin).eval()
    findings = diagnostics.probe(model, model, x, PGD)
    names = custom_functions(model, x)
    assert len(names) == 1
    found = {"differentiated": findings.differentiated_functions, "straight": findings.straight_through_functions}
    assert found[way] == tuple(names) and sum(map(len, found.values())) == 1
    assert diagnostics.Findings.from_dict(findings.to_dict()) == findings  # saved in plan.json, rebuilt on resume
    view = diagnostics.plan_for(model, EvalConfig(eps=EPS), findings).attacked
    with torch.no_grad():
        assert torch.equal(view(x), model(x))  # the forward is the model's own
    own, fixed, true = (_input_gradient(m, x, y) for m in (model, view, twin))
    assert not torch.allclose(own, true, atol=1e-6)  # the trap's own backward misleads
    torch.testing.assert_close(fixed, true, rtol=1e-4, atol=1e-6)  # the attacks see the twin's gradient
    assert torch.autograd.Function.__dict__["apply"].__func__.__qualname__ == "Function.apply"  # restored


def test_honest_custom_functions_keep_their_backward(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x = digits[0][:16]
    model = Before(_relus_replaced(twin, lambda h: HonestReLU.apply(h)), lambda v: HonestSquash.apply(v)).eval()
    assert custom_functions(model, x) == sorted(function_name(c) for c in (HonestReLU, HonestSquash))
    findings = diagnostics.probe(model, model, x, PGD)
    assert findings.differentiated_functions == findings.straight_through_functions == ()
    assert diagnostics.plan_for(model, EvalConfig(eps=EPS), findings).attacked is model
    assert diagnostics.failing_functions(model, x, ops=False) == ((), ())


def test_a_quantizer_with_its_true_zero_gradient_gets_straight_through_gradients(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """All gradients vanish (the quantizer's true derivative): its forward is differentiated with ``round``
    straight-through, the BPDA choice, the same gradient as a hand-written ``x + stop(q(x) - x)``."""
    x, y = digits[0][:16], digits[1][:16]
    model = Before(twin, lambda v: ZeroRound.apply(v)).eval()
    assert float(_input_gradient(model, x, y).abs().max()) == 0
    findings = diagnostics.probe(model, model, x, PGD)
    assert findings.differentiated_functions == (function_name(ZeroRound),)
    view = diagnostics.plan_for(model, EvalConfig(eps=EPS), findings).attacked
    by_hand = Before(twin, lambda v: v + (torch.round(v * 8) / 8 - v).detach())
    torch.testing.assert_close(_input_gradient(view, x, y), _input_gradient(by_hand, x, y))


def test_reliable_on_a_lying_custom_relu_is_the_twins_number_with_high_trust(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """The same network as the twin, its ReLUs a custom Function with a negated backward: before, PGD climbed the
    wrong way and only gradient-free search found anything; now the number is the twin's own (the same attacks on
    the same gradients), every success real on the model."""
    x, y = digits[0][:48], digits[1][:48]
    model = _relus_replaced(twin, lambda h: LyingReLU.apply(h))
    misled = attacks.PGD(eps=EPS, steps=10)(model, x, y)
    plain = attacks.PGD(eps=EPS, steps=10)(twin, x, y)
    assert misled.success_rate < plain.success_rate - 0.2  # the lie really misleads gradient attacks
    config = EvalConfig(eps=EPS, keep_adversarials=True)
    rep, honest = evaluate(model, (x, y), config), evaluate(twin, (x, y), config)
    assert abs(rep.robust_accuracy - honest.robust_accuracy) <= 1 / len(y) + 1e-9
    assert rep.trust == "high", rep.warnings
    assert any("differentiated their forward" in a for a in rep.adaptations)
    assert rep.x_adv is not None and float((rep.x_adv - x).abs().amax()) <= EPS * (1 + 1e-5) + 1e-6
    with torch.no_grad():
        robust = (model(x).argmax(1) == y) & (model(rep.x_adv).argmax(1) == y)
    assert rep.robust_accuracy == pytest.approx(float(robust.double().mean()), abs=1e-12)


def test_the_swapped_forward_is_undone_when_the_model_raises(twin: nn.Module) -> None:
    class Raises(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            LyingReLU.apply(x)
            raise KeyError("boom")

    view = StraightThrough(Raises(), ops=False, differentiated=(function_name(LyingReLU),))
    with pytest.raises(KeyError):
        view(torch.rand(2, 1, 8, 8, requires_grad=True))
    assert torch.autograd.Function.__dict__["apply"].__func__.__qualname__ == "Function.apply"


class NoBackward(torch.autograd.Function):
    """An identity with no backward written: autograd raises when a gradient reaches it."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0


def test_a_custom_function_without_a_backward_is_differentiated_not_a_crash(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits[0][:32], digits[1][:32]
    model = Before(twin, lambda v: NoBackward.apply(v)).eval()
    with pytest.raises(NotImplementedError):
        _input_gradient(model, x, y)
    rep = evaluate(model, (x, y), EvalConfig(preset="fast", eps=EPS, keep_adversarials=True))
    honest = evaluate(twin, (x, y), EvalConfig(preset="fast", eps=EPS))
    assert rep.findings.differentiated_functions == (function_name(NoBackward),)
    assert rep.robust_accuracy == honest.robust_accuracy < rep.clean_accuracy  # the same gradients as the twin's
    assert rep.x_adv is not None
    with torch.no_grad():
        robust = (model(x).argmax(1) == y) & (model(rep.x_adv).argmax(1) == y)
    assert rep.robust_accuracy == pytest.approx(float(robust.double().mean()), abs=1e-12)
