"""Class prototypes (research note 000): evolve a blank image, noise or a photo into every class of a frozen model.

    from advlab import prototypes, zoo
    model = zoo.load("digits-cnn")
    run = prototypes.generate(model, "blank:gray", targets="all", config=prototypes.Config(mode="min"))
    run.x                       # (pairs, C, H, W) prototypes, start-major: pair = start * len(targets) + k
    run.summary()               # reached, recognition distances, convergence, resisting classes
    prototypes.recognition_points(run.evolution)

    # what is minimized composes from terms (advlab.prototypes.objectives, priors)
    cfg = prototypes.Config(objective=prototypes.cross_entropy() + 0.5 * prototypes.total_variation())
    # named recipes (advlab.prototypes.recipes): parametrization, random views and priors together
    cfg = prototypes.recipe("natural", model)      # Fourier + decorrelated colour, strong random views, 256 steps

The attack is the generator and the classifier its discriminator; see :mod:`advlab.prototypes.evolve` for the
maths (one step of :mod:`advlab.attacks.step` per iteration). Pairs are batched (:mod:`.generator`), each batch
is one call of :func:`evolve`, and ``work=`` (:class:`advlab.work.Work`) lets a caller save each batch, resume,
shard and show progress.
"""

from __future__ import annotations

from advlab.prototypes.evolve import (
    METHODS,
    MODES,
    Config,
    Evolution,
    evolve,
    gaussian_blur,
)
from advlab.prototypes.generator import (
    MAX_BATCH,
    Prototypes,
    auto_batch_size,
    generate,
    generate_each,
    pairs_per_batch,
    parse_targets,
)
from advlab.prototypes.measures import (
    amplified_difference,
    class_probabilities,
    ensemble,
    inception_score,
    judge,
    reached_top1,
    recognition_points,
    summarize,
    trajectory_rows,
    verdicts,
)
from advlab.prototypes.objectives import (
    Objective,
    Term,
    class_logit,
    cross_entropy,
    l2,
    margin,
    target_logit,
    term,
    total_variation,
)
from advlab.prototypes.parametrize import PARAMS, bind
from advlab.prototypes.priors import blur_prior, bn_loss, bn_statistics, lp
from advlab.prototypes.recipes import RECIPES
from advlab.prototypes.recipes import config as recipe
from advlab.prototypes.starts import Starts, parse_start
from advlab.prototypes.transforms import Transforms

__all__ = [
    "MAX_BATCH",
    "METHODS",
    "MODES",
    "PARAMS",
    "RECIPES",
    "Config",
    "Evolution",
    "Objective",
    "Prototypes",
    "Starts",
    "Term",
    "Transforms",
    "amplified_difference",
    "bind",
    "blur_prior",
    "bn_loss",
    "bn_statistics",
    "ensemble",
    "lp",
    "recipe",
    "auto_batch_size",
    "class_logit",
    "class_probabilities",
    "cross_entropy",
    "evolve",
    "gaussian_blur",
    "generate",
    "generate_each",
    "inception_score",
    "judge",
    "l2",
    "margin",
    "pairs_per_batch",
    "parse_start",
    "parse_targets",
    "recognition_points",
    "reached_top1",
    "summarize",
    "target_logit",
    "term",
    "total_variation",
    "trajectory_rows",
    "verdicts",
]
