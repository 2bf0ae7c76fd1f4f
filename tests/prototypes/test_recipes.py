"""recipes: the adversarial recipe is today's pixel PGD, the natural one its documented ingredients; options
override ingredients; natural prototypes of the digits CNN are recognized better than adversarial ones by an
independently trained digits model (a stand-in for a person)."""

from __future__ import annotations

import pytest
import torch

from advlab import prototypes
from advlab.prototypes import Config


@pytest.fixture(scope="module")
def judge() -> torch.nn.Module:
    """A digits CNN trained with another seed: it never saw the prototypes' model."""
    from advlab.data import load
    from advlab.defenses import training as train
    from advlab.zoo.digits import DigitsCNN

    x, y = load("digits:train")
    torch.manual_seed(1)  # the initial weights come from the global generator: without this, from whatever ran before
    other = DigitsCNN()
    train.fit(other, x, y, train.TrainConfig(epochs=3, seed=1))
    return other.eval()


def test_recipes_and_their_overrides(digits) -> None:
    assert prototypes.recipe("adversarial", digits, steps=50) == Config(steps=50)
    nat = prototypes.recipe("natural", digits)
    assert (nat.param, nat.method, nat.alpha, nat.jitter, nat.scale, nat.rotate, nat.tol) == (
        "fourier",
        "mifgsm",
        0.05,
        1,
        0.3,
        20.0,
        0.0,
    )
    assert nat.objective is None and nat.steps == 256  # cross-entropy alone, the measured step count
    assert prototypes.recipe("natural", None, size=224).jitter == 22  # 10% of the side
    assert (
        prototypes.recipe("natural", digits, steps=None).steps == 256
        and prototypes.recipe("natural", digits, steps=9).steps == 9
    )
    over = prototypes.recipe("natural", digits, rotate=0, param="phase", tv=0.1, l2=0.2, transforms_per_step=2)
    assert (over.rotate, over.param, over.transforms_per_step) == (0, "phase", 2)
    assert repr(over.minimized()) == "cross_entropy() + 0.1 * total_variation() + 0.2 * l2()"
    with pytest.raises(ValueError, match="unknown recipe"):
        prototypes.recipe("dreamy", digits)


def test_natural_prototypes_are_recognized_better_by_an_independent_model(digits, judge) -> None:
    """50 prototypes per recipe (each digit from gray and from 4 noise images). The judge is itself a training run, so
    another CPU trains another judge: over 10 judges (seeds 1-10) the natural ones got 0.17-0.28 more target
    probability (mean 0.21, sd 0.03) and 12-21 more top-1 hits of 50 (mean 16.5, sd 2.8). On the 10 gray-started
    prototypes alone the top-1 counts tied for 2 of the 10 judges: too few prototypes to compare."""
    out = {}
    for name in ("adversarial", "natural"):
        cfg = prototypes.recipe(name, digits, steps=100)
        runs = [prototypes.generate(digits, start, "all", cfg) for start in ("blank:gray", "noise:gaussian@4")]
        x, target = torch.cat([r.x for r in runs]), torch.cat([r.evolution.target for r in runs])
        top1 = torch.cat([r.evolution.final_top1 for r in runs])
        assert (
            float((top1 == target).float().mean()) >= 0.95
        )  # both recipes make the targets top-1 (measured 50 and 49 of 50)
        out[name] = prototypes.judge(prototypes.class_probabilities(judge, x), target)
    assert out["natural"]["target_probability_mean"] > out["adversarial"]["target_probability_mean"] + 0.08  # 3.8 sd
    assert out["natural"]["top1_agreement"] >= out["adversarial"]["top1_agreement"] + 0.1  # 5 of 50: 4 sd


def test_several_views_per_step_and_max_mode_work_with_the_natural_recipe(digits) -> None:
    cfg = prototypes.recipe("natural", digits, steps=30, transforms_per_step=3, mode="max")
    ev = prototypes.generate(digits, "blank:gray", "0-4", cfg).evolution
    assert ev.x.shape == (5, 1, 8, 8) and float(ev.x.min()) >= 0 and float(ev.x.max()) <= 1
    # each target's probability rose, or (max mode) the target holds while the gradient norm grows
    assert ev.prob.shape == (5, 31) and ((ev.prob[:, -1] > ev.prob[:, 0]) | (ev.final_top1 == ev.target)).all()
    again = prototypes.generate(digits, "blank:gray", "0-4", cfg).evolution
    assert torch.equal(ev.x, again.x)  # seeded views


@pytest.mark.slow  # two EfficientNet-Lite models end to end: ~60 s on a busy 2-core machine
def test_natural_beats_adversarial_on_efficientnet_lite0_under_another_model() -> None:
    """The issue's small seeded check: a handful of ImageNet classes (the first 4 of a seed-0 permutation),
    from gray, both recipes on lite0 (fewer steps than the presets'), judged by efficientnet-lite1 at its
    own input size: the natural prototypes are named more often and with more probability.

    Four targets make each top-1 count a coin of 0.25. Over 5 runs (target permutations 0-3, and lite0's weights
    x (1 + 1e-6 noise)) the judge named 2-4 natural and 0-1 adversarial prototypes, and gave the natural ones
    0.45-0.74 more target probability; "natural named at least twice" was met with nothing to spare (2 of 4) on
    permutation 2. The claims keep one target of margin over the worst of those runs."""
    from advlab import zoo
    from advlab.data.images import resize_batch

    model, judge = zoo.load("efficientnet-lite0").eval(), zoo.load("efficientnet-lite1").eval()
    targets = torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:4].tolist()
    out = {}
    for name, steps in (("adversarial", 40), ("natural", 96)):
        ev = prototypes.generate(
            model, "blank:gray", targets, prototypes.recipe(name, model, steps=steps), batch_size=4
        ).evolution
        assert (ev.final_top1 == ev.target).all()  # every target is top-1 for lite0 itself
        probs = prototypes.class_probabilities(judge, resize_batch(ev.x, judge.info.input_size))
        out[name] = prototypes.judge(probs, ev.target)
    assert out["natural"]["top1_agreement"] >= out["adversarial"]["top1_agreement"] + 0.25  # measured +0.5 to +0.75
    assert (
        out["natural"]["target_probability_mean"] > out["adversarial"]["target_probability_mean"] + 0.2
    )  # measured +0.45 to +0.74
