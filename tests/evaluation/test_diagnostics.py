"""Diagnostics: NaN logits are refused, a model without a gradient path is attacked gradient-free (never a crash),
and the verdict ``trust`` is "high" only when no check failed (no warning). The trap models come from
:mod:`advlab.zoo.traps`, each wrapping its honest twin (the shipped digits CNN)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from advlab import attacks, data
from advlab.errors import AdvlabError
from advlab.evaluation import EvalConfig, diagnostics, evaluate, gradients, indicators, probes
from advlab.evaluation.bpda import Reattached
from advlab.evaluation.views import FiniteDifferences
from advlab.zoo.traps import NaNLogits, NoisyInput, NumpyLogits, NumpyPreprocessed, RoundQuantized
from tests.cli.helpers import run_cli

EPS = 0.1


@pytest.fixture(scope="module")
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = data.load("digits:test")
    return x[:96], y[:96]


def test_nan_logits_are_refused(twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    x = x.clone()
    x[5, 0, 0, 0] = 0.5  # one sample's logits become NaN
    with pytest.raises(AdvlabError, match="NaN or infinite on 1 of 96"):
        evaluate(NaNLogits(twin), (x, y), EvalConfig(preset="fast", eps=EPS))
    with pytest.raises(AdvlabError, match="NaN or infinite"):
        probes.require_finite(torch.tensor([[0.0, float("inf")]]))
    probes.require_finite(torch.zeros(3, 4))  # finite: nothing happens


def test_nan_logits_in_the_cli_exit_2_with_one_line_and_no_directory(tmp_path: Path) -> None:
    (tmp_path / "trap.py").write_text(
        "import torch\n"
        "from advlab.zoo.digits import DigitsCNN\n"
        "class Trap(DigitsCNN):\n"
        "    def forward(self, x):\n"
        "        return super().forward(x) * float('nan')\n"
        "def make():\n"
        "    m = Trap()\n"
        "    m.input_size, m.in_channels = 8, 1\n"
        "    return m\n"
    )
    out = tmp_path / "run"
    rc, _, err = run_cli(
        [
            "eval",
            "--model",
            f"{tmp_path / 'trap.py'}:make",
            "--data",
            "digits:test",
            "--limit",
            "32",
            "--preset",
            "fast",
            "--eps",
            "0.1",
            "--out",
            str(out),
            "-q",
        ]
    )
    assert rc == 2
    assert err.count("\n") == 1 and "NaN or infinite" in err and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob("run*"))


def test_gradient_path_probe(twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    assert probes.gradient_path(twin, x)
    assert not probes.gradient_path(NumpyPreprocessed(twin), x)
    for layout in NumpyPreprocessed.LAYOUTS:  # BPDA with the identity across NumPy, the pixels in any layout
        trap = NumpyPreprocessed(twin, layout=layout)
        assert not probes.gradient_path(trap, x) and probes.gradient_path(Reattached(trap), x)
        xs = x[:3].clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(Reattached(trap)(xs)[:, 1].sum(), xs)
        # gamma 1: the identity (for "pil" the image rounded to 8 bits), so the twin's own gradient there
        xt = (x[:3] * 255).round().div(255) if layout == "pil" else x[:3].clone()
        (exact,) = torch.autograd.grad(twin(xt.requires_grad_(True))[:, 1].sum(), xt)
        assert torch.allclose(grad, exact, atol=1e-6), layout

    class Reversed(nn.Module):  # one image at a time through NumPy, last first: each is matched to its own input
        def __init__(self) -> None:
            super().__init__()
            self.twin = twin

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            images = [torch.from_numpy(i.detach().numpy() * 0.9) for i in v.unbind(0)[::-1]]
            return self.twin(torch.stack(images).flip(0))

    xs, xt = x[:5].clone().requires_grad_(True), (0.9 * x[:5]).requires_grad_(True)
    (grad,) = torch.autograd.grad(Reattached(Reversed())(xs)[torch.arange(5), y[:5]].sum(), xs)
    (exact,) = torch.autograd.grad(twin(xt)[torch.arange(5), y[:5]].sum(), xt)
    assert not probes.gradient_path(Reversed(), x) and torch.allclose(grad, exact, atol=1e-6)
    assert not probes.gradient_path(Reattached(NumpyLogits(twin)), x)  # the outputs left autograd: nothing comes back

    # a buffer that holds these very pixels, one row per digit (the active test's anchors), is the model's own, not the
    # input coming back: it is read first, and the image back from NumPy after it is the one reattached
    class Anchored(nn.Module):
        def __init__(self, anchors: torch.Tensor) -> None:
            super().__init__()
            self.trap = NumpyPreprocessed(twin, layout="flat")
            self.register_buffer("anchors", anchors.flatten(1).clone())

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            nearest = torch.cdist(v.detach().flatten(1), self.anchors).argmin(1)
            return self.trap(v) + 0 * nearest[:, None]

    xs, xt = x[:10].clone().requires_grad_(True), x[:10].clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(Reattached(Anchored(x[:10]))(xs)[:, 1].sum(), xs)
    (exact,) = torch.autograd.grad(twin(xt)[:, 1].sum(), xt)
    assert torch.allclose(grad, exact, atol=1e-6)

    class Indexed(nn.Module):  # the image back from NumPy first meets an operator (``__getitem__``: a channel order)
        def __init__(self) -> None:
            super().__init__()
            self.twin = twin

        def forward(self, v: torch.Tensor) -> torch.Tensor:
            return self.twin(torch.from_numpy(v.detach().numpy().copy())[:, [0]])

    assert probes.gradient_path(Reattached(Indexed()), x) and not probes.gradient_path(Indexed(), x)
    assert all(p.requires_grad for p in twin.parameters())  # the probe froze and restored them


def test_no_gradient_path_is_attacked_gradient_free_with_low_trust(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Today's white-box attacks would crash here ("does not require grad"); the evaluation runs Square instead,
    breaks samples inside the ball, and calls its number an upper bound. (Square's queries cut from 5,000 to 1,500
    for time: up to 4 runs of it on the survivors.)"""
    monkeypatch.setattr(diagnostics, "FALLBACK_QUERIES", 1500)
    monkeypatch.setattr(diagnostics, "FD_MAX_VALUES", 63)  # an input too large for finite differences (8x8 = 64)
    x, y = digits[0][:48], digits[1][:48]
    trap = NumpyLogits(twin)  # (the outputs come from NumPy: no image comes back for BPDA to take as the input)
    for config in (
        EvalConfig(preset="fast", eps=EPS, keep_adversarials=True),
        EvalConfig(attacks=(attacks.PGD(eps=EPS, steps=5),)),
    ):
        rep = evaluate(trap, (x, y), config)
        assert rep.attacks == ["square"]
        assert rep.trust == "low" and any("no gradient path" in f for f in rep.warnings)
        # the remedy of unavailable gradients: more Square runs with fresh seeds on the samples still unbroken
        # (marked: the samples the first Square left unbroken; those the more runs broke are the marked broken ones)
        checks, samples = rep.samples.checks, rep.samples
        unavailable = (samples.indicators & indicators.UNAVAILABLE_GRADIENTS) != 0
        assert checks["more_queries_runs"] >= 1 and bool(samples.attacked[unavailable].all())
        assert bool(unavailable[samples.attacked & ~samples.broken].all())
        assert int((unavailable & samples.broken).sum()) == checks["more_queries_broke"]
        assert rep.robust_accuracy < rep.clean_accuracy - 0.2  # the gradient-free attack really broke samples
        broken = rep.samples.broken
        assert float(rep.samples.linf[broken].max()) <= EPS + 1e-6
        assert rep.to_dict()["trust"] == "low"
        if config.keep_adversarials:  # every success is real on the trap itself, inside the ball
            assert rep.x_adv is not None and float((rep.x_adv - x).abs().amax()) <= EPS + 1e-6
            with torch.no_grad():
                robust = (trap(x).argmax(1) == y) & (trap(rep.x_adv).argmax(1) == y)
            assert int(robust.sum()) == round(rep.robust_accuracy * len(y))
    honest = evaluate(twin, (x, y), EvalConfig(preset="fast", eps=EPS))
    assert honest.trust == "high" and honest.warnings == []
    assert "(trust: high)" in honest.format()
    # an upper bound: the gradient-free number is not below what gradients find on the twin by more than the two
    # attacks' disagreement: Square minus APGD was -2 to +3 samples over 4 blocks of 48 digits and a weight perturbation
    assert rep.robust_accuracy >= honest.robust_accuracy - 5 / len(y)


def test_finite_differences_give_the_twins_gradient(twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    """Central differences through a model without a gradient path: the twin's own input gradient (a piecewise linear
    ReLU net: up to the kinks within the step and float32 rounding), also at pixels on the box's edge (0 or 1)."""
    x, y = digits[0][:6], digits[1][:6]
    view = FiniteDifferences(NumpyLogits(twin))
    assert float(x.min()) == 0 and float(x.max()) == 1  # pixels at both edges of the box
    xs, xt = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    (fd,) = torch.autograd.grad(nn.functional.cross_entropy(view(xs), y), xs)
    (exact,) = torch.autograd.grad(nn.functional.cross_entropy(twin(xt), y), xt)
    assert view.queries == 2 * 64
    rel = (fd - exact).flatten(1).norm(dim=1) / exact.flatten(1).norm(dim=1)
    # (measured: 1.4-4.8% relative error at the step of 1e-2, where ReLU kinks fall inside the step; 0.1-1% at 1e-3)
    assert float(rel.max()) < 0.15
    assert float(nn.functional.cosine_similarity(fd.flatten(1), exact.flatten(1)).min()) > 0.99


def test_no_gradient_path_on_a_small_input_is_attacked_through_finite_differences(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model served outside autograd on 8x8 digits: the preset's own white-box attacks run through central
    differences (every query counted), the gradient-free stage after them, and the number, backed by x_adv and
    called an upper bound, is the twin's within the two searches' disagreement. (Square's queries cut to 300.)"""
    monkeypatch.setattr(gradients, "GRADIENT_FREE_QUERIES", 300)
    x, y = digits[0][:32], digits[1][:32]
    trap = NumpyLogits(twin).eval()
    findings = diagnostics.probe(trap, trap, x, [attacks.PGD(eps=EPS)])
    assert findings.no_gradient_path and findings.finite_differences
    rep = evaluate(trap, (x, y), EvalConfig(preset="fast", eps=EPS, keep_adversarials=True))
    assert rep.attacks == ["apgd-ce", "apgd-dlr"] and rep.samples.checks["gradient_free_tried"] > 0
    assert rep.trust == "low" and any("central differences" in w for w in rep.warnings)
    assert rep.forwards_per_image > 128 * rep.backwards_per_image  # 2 x 64 queries per gradient, counted
    assert rep.x_adv is not None and float((rep.x_adv - x).abs().amax()) <= EPS * (1 + 1e-5) + 1e-6
    with torch.no_grad():
        robust = (trap(x).argmax(1) == y) & (trap(rep.x_adv).argmax(1) == y)
    assert rep.robust_accuracy == pytest.approx(float(robust.double().mean()), abs=1e-12)
    honest = evaluate(twin, (x, y), EvalConfig(preset="fast", eps=EPS))
    assert abs(rep.robust_accuracy - honest.robust_accuracy) <= 2 / len(y)


def test_adapt_keeps_black_box_attacks_and_needs_a_ball(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, _ = digits
    trap = NumpyLogits(twin)
    noise, pgd = attacks.RandomNoise(eps=EPS), attacks.PGD(eps=EPS)
    assert not diagnostics.probe(twin, twin, x, [pgd, noise]).no_gradient_path
    assert diagnostics.probe(trap, trap, x, [pgd, noise]).no_gradient_path
    assert not diagnostics.probe(trap, trap, x, [noise]).no_gradient_path  # black-box attacks need no gradient
    adapted = diagnostics.fallback([noise, pgd, attacks.APGD(eps=EPS)], None, None)
    assert [a.name for a in adapted] == ["noise", "square"]
    square = adapted[1]
    assert isinstance(square, attacks.Square) and square.eps == EPS and square.norm == "linf"
    with pytest.raises(AdvlabError, match="no eps"):
        diagnostics.fallback([attacks.CW(steps=5)], None, None)


def test_well_behaved_model_gets_high_trust_under_the_reliable_preset(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits
    rep = evaluate(twin, (x[:48], y[:48]), EvalConfig(eps=EPS))
    assert rep.trust == "high" and rep.warnings == []
    assert rep.robust_accuracy < rep.clean_accuracy  # the attacks did something


def _hand_bpda_pgd(trap: RoundQuantized, x: torch.Tensor, y: torch.Tensor, steps: int = 50) -> torch.Tensor:
    """The adaptive reference, written out by hand: PGD (L-inf EPS, alpha EPS/8, no random start) whose backward
    treats the quantizer as the identity, judged on the trap itself. Returns the robust mask."""
    net = trap.twin
    xa = x.clone()
    for _ in range(steps):
        xg = xa.detach().requires_grad_(True)
        q = xg + (torch.round(xg * trap.levels) / trap.levels - xg).detach()
        (g,) = torch.autograd.grad(nn.functional.cross_entropy(net(q), y, reduction="sum"), xg)
        xa = (x + (xa + EPS / 8 * g.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
    with torch.no_grad():
        return (trap(x).argmax(1) == y) & (trap(xa).argmax(1) == y)


def test_torch_op_quantizer_gets_bpda_automatically(twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]) -> None:
    x, y = digits
    trap = RoundQuantized(twin).eval()
    pgd = [attacks.PGD(eps=EPS)]
    assert diagnostics.probe(twin, twin, x, pgd).straight_through == ()
    assert diagnostics.probe(trap, trap, x, pgd).straight_through == ("round",)
    naive = attacks.PGD(eps=EPS, steps=10)(trap, x, y)  # plain gradients: nothing to follow
    reference = float(_hand_bpda_pgd(trap, x, y).float().mean())
    rep = evaluate(trap, (x, y), EvalConfig(preset="fast", eps=EPS))
    assert naive.success_rate < 0.2 < 1 - reference  # the trap fools plain PGD, not the adaptive reference
    # within 4 samples of the adaptive reference, or stronger: over 6 blocks of 96 digits and 3 weight perturbations
    # the two differ by -2 to +1 samples (two different attacks); without BPDA the number would be naive's (> 0.8)
    assert rep.robust_accuracy <= reference + 4 / len(y)
    assert any("straight-through" in a and "round" in a for a in rep.adaptations)
    assert rep.trust == "high", rep.warnings  # the attacks saw gradients: no zero-gradient warning
    # every success is real on the trap itself, inside the ball
    adv = evaluate(trap, (x, y), EvalConfig(preset="fast", eps=EPS, keep_adversarials=True)).x_adv
    assert adv is not None and float((adv - x).abs().amax()) <= EPS + 1e-6
    with torch.no_grad():
        robust = (trap(x).argmax(1) == y) & (trap(adv).argmax(1) == y)
    assert int(robust.sum()) == round(rep.robust_accuracy * len(y))


def test_straight_through_keeps_the_forward_bit_for_bit(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    from advlab.evaluation.bpda import StraightThrough

    x, _ = digits

    class Methods(nn.Module):  # the ops as tensor methods, and sign
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return twin(((x * 7).floor() / 7 + (x - 0.5).sign() * 0.01).clamp(0, 1))

    trap = Methods()
    assert diagnostics.probe(trap, trap, x, [attacks.PGD(eps=EPS)]).straight_through == ("floor", "sign")
    st = StraightThrough(trap)
    with torch.no_grad():
        assert torch.equal(st(x), trap(x))
    xg = x[:4].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(st(xg).logsumexp(1).sum(), xg)
    assert float(g.abs().sum()) > 0  # gradients flow through floor and sign
    (g0,) = torch.autograd.grad(trap(xg).logsumexp(1).sum(), xg)
    assert float(g0.abs().sum()) == 0  # and do not without it


def test_probability_outputs_are_attacked_as_log_probabilities(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    """A final softmax makes the attacks' cross-entropy one of probabilities (a flatter, saturating objective;
    sign steps survive it on this model, loss-value rules like APGD's step size less so); the evaluation attacks
    log p instead and gets the number of the logits model, within 2 pp, with no user action."""
    x, y = digits
    probs = nn.Sequential(twin, nn.Softmax(dim=1)).eval()
    pgd = EvalConfig(attacks=(attacks.PGD(eps=EPS, steps=10),))
    on_probs, on_logits = evaluate(probs, (x, y), pgd), evaluate(twin, (x, y), pgd)
    assert abs(on_probs.robust_accuracy - on_logits.robust_accuracy) <= 0.02
    reliable = evaluate(probs, (x[:48], y[:48]), EvalConfig(eps=EPS))
    assert abs(reliable.robust_accuracy - evaluate(twin, (x[:48], y[:48]), EvalConfig(eps=EPS)).robust_accuracy) <= 0.02
    assert any("outputs probabilities" in a for a in on_probs.adaptations) and on_probs.trust == "high"
    assert probes.outputs_probabilities(probs, x) and not probes.outputs_probabilities(twin, x)


def _hand_eot_pgd(trap: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 20, k: int = 16) -> float:
    """The adaptive reference, by hand: PGD on the mean cross-entropy of k draws per step (EOT on the loss), then
    the expected robust accuracy over 16 fresh draws (right on the clean and on the adversarial input)."""
    xa = x.clone()
    for _ in range(steps):
        xg = xa.detach().requires_grad_(True)
        loss = sum(nn.functional.cross_entropy(trap(xg), y, reduction="sum") for _ in range(k)) / k
        (g,) = torch.autograd.grad(loss, xg)
        xa = (x + (xa + EPS / 8 * g.sign() - x).clamp(-EPS, EPS)).clamp(0, 1)
    with torch.no_grad():
        return float(
            torch.stack([((trap(x).argmax(1) == y) & (trap(xa).argmax(1) == y)).float() for _ in range(16)]).mean()
        )


def test_randomized_model_gets_eot_and_an_expected_accuracy(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor]
) -> None:
    x, y = digits[0][:48], digits[1][:48]
    trap = NoisyInput(twin).eval()
    torch.manual_seed(0)
    assert probes.randomized(trap, x) and not probes.randomized(twin, x)
    rep = evaluate(trap, (x, y), EvalConfig(eps=EPS))
    e = rep.expected_accuracy
    assert e is not None and e["draws"] == diagnostics.ACCURACY_DRAWS
    reference = _hand_eot_pgd(trap, x, y)
    # near the adaptive reference. On 48 digits both are noisy: over the trap's noise seeds 0-5 the evaluation's
    # expected robust accuracy minus the reference's was -0.021 to +0.039 (sd 0.025; 6 pp was 2.1 sd), so the bound
    # is 10 pp (3.7 sd). It still fails an evaluation that attacks nothing: 0.67-0.71 against a reference of 0.30-0.33
    assert e["robust"] <= reference + 0.10
    assert e["robust_worst_case"] <= e["robust"] <= e["clean"] and e["clean"] > 0.7
    # the headline is the expected accuracy, with its interval; one draw's stays beside it
    assert (rep.robust_accuracy, rep.clean_accuracy) == (e["robust"], e["clean"]) and rep.single_draw is not None
    h = rep.headline
    assert h.value == e["robust"] and h.low <= h.value <= h.high and "expected over 16 draws" in h.name
    assert any("EOT" in a for a in rep.adaptations) and rep.trust == "low"  # one draw's robust_accuracy is no bound
    assert all("early_stop=False" in a["config"] for a in rep.per_attack if a["attack"] != "noise-check")
    entry = rep.robustbench("noisy", "digits")
    assert entry["robust_acc"] == f"{100 * e['robust']:.2f}"
    assert evaluate(twin, (x, y), EvalConfig(preset="fast", eps=EPS)).expected_accuracy is None


def test_a_randomized_model_without_a_gradient_path_reports_its_expected_accuracy(
    twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Noise inside a model served outside autograd: no finite differences (fresh noise in every query), Square on the
    expected probabilities, and the headline is the expected accuracy over fresh draws, called an upper bound.
    (Square's queries cut to 300 for time.)"""
    monkeypatch.setattr(diagnostics, "FALLBACK_QUERIES", 300)
    x, y = digits[0][:16], digits[1][:16]
    trap = NumpyLogits(NoisyInput(twin, sigma=0.1)).eval()
    findings = diagnostics.probe(trap, trap, x, [attacks.PGD(eps=EPS)])
    assert findings.no_gradient_path and findings.randomized and not findings.finite_differences
    rep = evaluate(trap, (x, y), EvalConfig(preset="fast", eps=EPS))
    e = rep.expected_accuracy
    assert rep.attacks == ["square"] and e is not None and e["draws"] == diagnostics.ACCURACY_DRAWS
    assert (rep.robust_accuracy, rep.clean_accuracy) == (e["robust"], e["clean"]) and rep.single_draw is not None
    assert rep.trust == "low" and any("no gradient path" in w for w in rep.warnings)


class NoGradPreprocessed(nn.Module):
    """``twin(0.9 x + 0.05)`` with the preprocessing under ``torch.no_grad``."""

    def __init__(self, twin: nn.Module) -> None:
        super().__init__()
        self.twin = twin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            pre = 0.9 * x + 0.05
        return self.twin(pre)


@pytest.mark.parametrize("kind", ["numpy", "flat", "no_grad"])
def test_an_input_that_leaves_autograd_gets_bpda_with_the_identity(
    kind: str, twin: nn.Module, digits: tuple[torch.Tensor, torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Preprocessing outside autograd that hands back an image of the input's shape: the probe finds it, the attacks
    are the preset's own white-box ones through BPDA (the twin's gradient at the preprocessed image, exactly), the
    gradient-free stage still runs after them and the number, backed by x_adv, is called an upper bound. (Square's
    queries cut to 300 for time.)"""
    monkeypatch.setattr(gradients, "GRADIENT_FREE_QUERIES", 300)
    x, y = digits[0][:32], digits[1][:32]
    model = (
        NoGradPreprocessed(twin)
        if kind == "no_grad"
        else NumpyPreprocessed(twin, layout={"numpy": "image"}.get(kind, kind))
    ).eval()
    findings = diagnostics.probe(model, model, x, [attacks.PGD(eps=EPS)])
    assert findings.reattached and not findings.no_gradient_path
    xs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(nn.functional.cross_entropy(Reattached(model)(xs), y), xs)
    pre = 0.9 * x + 0.05 if kind == "no_grad" else x.clone()
    pre.requires_grad_(True)
    (g_twin,) = torch.autograd.grad(nn.functional.cross_entropy(twin(pre), y), pre)
    torch.testing.assert_close(g, g_twin)  # the identity across the outside part, the twin's gradient after it
    rep = evaluate(model, (x, y), EvalConfig(preset="fast", eps=EPS, keep_adversarials=True))
    assert rep.attacks == ["apgd-ce", "apgd-dlr"] and rep.samples.checks["gradient_free_tried"] > 0
    assert rep.trust == "low" and any("leaves autograd" in w for w in rep.warnings)
    assert rep.x_adv is not None and float((rep.x_adv - x).abs().amax()) <= EPS * (1 + 1e-5) + 1e-6
    with torch.no_grad():
        robust = (model(x).argmax(1) == y) & (model(rep.x_adv).argmax(1) == y)
    assert rep.robust_accuracy == pytest.approx(float(robust.double().mean()), abs=1e-12)
    if kind != "no_grad":  # the twin's own function: the same gradients, so the twin's number or below
        assert rep.robust_accuracy <= evaluate(twin, (x, y), EvalConfig(preset="fast", eps=EPS)).robust_accuracy
