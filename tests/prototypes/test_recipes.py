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
    other = DigitsCNN()
    train.fit(other, x, y, train.TrainConfig(epochs=3, seed=1))
    return other.eval()


def test_recipes_and_their_overrides(digits) -> None:
    assert prototypes.recipe("adversarial", digits, steps=50) == Config(steps=50)
    nat = prototypes.recipe("natural", digits)
    assert (nat.param, nat.method, nat.alpha, nat.jitter, nat.scale, nat.rotate, nat.tol) == ("fourier", "mifgsm", 0.05, 1, 0.3, 20.0, 0.0)
    assert nat.objective is None and nat.steps == 256  # cross-entropy alone, the measured step count
    assert prototypes.recipe("natural", None, size=224).jitter == 22  # 10% of the side
    assert prototypes.recipe("natural", digits, steps=None).steps == 256 and prototypes.recipe("natural", digits, steps=9).steps == 9
    over = prototypes.recipe("natural", digits, rotate=0, param="phase", tv=0.1, l2=0.2, transforms_per_step=2)
    assert (over.rotate, over.param, over.transforms_per_step) == (0, "phase", 2)
    assert repr(over.minimized()) == "cross_entropy() + 0.1 * total_variation() + 0.2 * l2()"
    with pytest.raises(ValueError, match="unknown recipe"):
        prototypes.recipe("dreamy", digits)


@pytest.mark.parametrize("start", ["blank:gray", "noise:gaussian"])
def test_natural_prototypes_are_recognized_better_by_an_independent_model(digits, judge, start: str) -> None:
    out = {}
    for name in ("adversarial", "natural"):
        run = prototypes.generate(digits, start, "all", prototypes.recipe(name, digits, steps=100))
        assert (run.evolution.final_top1 == run.evolution.target).all()  # both recipes make every target top-1
        out[name] = prototypes.judge(prototypes.class_probabilities(judge, run.x), run.evolution.target)
    assert out["natural"]["target_probability_mean"] > out["adversarial"]["target_probability_mean"] + 0.08
    assert out["natural"]["top1_agreement"] >= out["adversarial"]["top1_agreement"]


def test_several_views_per_step_and_max_mode_work_with_the_natural_recipe(digits) -> None:
    cfg = prototypes.recipe("natural", digits, steps=30, transforms_per_step=3, mode="max")
    ev = prototypes.generate(digits, "blank:gray", "0-4", cfg).evolution
    assert ev.x.shape == (5, 1, 8, 8) and float(ev.x.min()) >= 0 and float(ev.x.max()) <= 1
    # each target's probability rose, or (max mode) the target holds while the gradient norm grows
    assert ev.prob.shape == (5, 31) and ((ev.prob[:, -1] > ev.prob[:, 0]) | (ev.final_top1 == ev.target)).all()
    again = prototypes.generate(digits, "blank:gray", "0-4", cfg).evolution
    assert torch.equal(ev.x, again.x)  # seeded views


def test_natural_beats_adversarial_on_efficientnet_lite0_under_another_model() -> None:
    """The issue's small seeded check: a handful of ImageNet classes (the first 4 of a seed-0 permutation),
    from gray, both recipes on lite0 (fewer steps than the presets'), judged by efficientnet-lite1 at its
    own input size: the natural prototypes are named more often and with more probability."""
    from advlab import zoo
    from advlab.data.images import resize_batch

    model, judge = zoo.load("efficientnet-lite0").eval(), zoo.load("efficientnet-lite1").eval()
    targets = torch.randperm(1000, generator=torch.Generator().manual_seed(0))[:4].tolist()
    out = {}
    for name, steps in (("adversarial", 40), ("natural", 96)):
        ev = prototypes.generate(model, "blank:gray", targets, prototypes.recipe(name, model, steps=steps), batch_size=4).evolution
        assert (ev.final_top1 == ev.target).all()  # every target is top-1 for lite0 itself
        probs = prototypes.class_probabilities(judge, resize_batch(ev.x, judge.info.input_size))
        out[name] = prototypes.judge(probs, ev.target)
    assert out["natural"]["top1_agreement"] >= 0.5 > out["adversarial"]["top1_agreement"]
    assert out["natural"]["target_probability_mean"] > out["adversarial"]["target_probability_mean"] + 0.2
