"""What an evaluation runs: :class:`EvalConfig`, and the attacks it resolves to."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from advlab.attacks.base import Attack
from advlab.errors import AdvlabError
from advlab.evaluation.presets import PRESET_SEED, PRESETS, default_eps, preset_attacks
from advlab.threat import NORMS


@dataclass(frozen=True)
class EvalConfig:
    """One evaluation's settings (frozen; ``dataclasses.replace`` makes variants).

    ``attacks``: the ensemble, run in order as a cascade; or ``preset``: a named ensemble (:data:`PRESETS`;
    the default, when neither is given, is "reliable"). A preset needs ``eps``.
    ``eps``/``norm``: the threat model a success must lie in, eps in [0, 1] pixel units, norm one of
    :data:`advlab.threat.NORMS` (None: each attack's own ball; norm None with an eps: the first attack's norm).
    ``early_stop``: applied to every attack that has it; None leaves each attack as given. The default True
    stops each sample at its first success (the goal here is "any success": much cheaper, same robust accuracy).
    ``seed``: set on every attack that has one; None keeps each attack's seed (presets use 0).
    ``attack_misclassified``: also attack the samples the model gets wrong (away from their clean prediction).
    ``sanity``: run the checks of :mod:`advlab.evaluation.checks`. ``keep_adversarials``: return the worst-case
    inputs in ``EvalReport.x_adv``. ``batch_size``: samples per cascade batch (one unit of ``work``).
    ``limit``: evaluate only the first ``limit`` samples. ``draws``: for a randomized model, the fresh forwards per
    sample that its expected accuracy averages over; the worst case (robust in every one of these k draws) is
    reported beside it. ``active_test``: samples of the first batch the active test runs on
    (:mod:`advlab.evaluation.active`: planted adversarial examples the attacks must find; 0: none).
    The per-attack ``config`` in the report is each attack as it really ran (after early_stop and seed).
    """

    attacks: tuple[Attack, ...] | None = None
    preset: str | None = None
    eps: float | None = None
    norm: str | None = None
    early_stop: bool | None = True
    attack_misclassified: bool = False
    sanity: bool = True
    keep_adversarials: bool = False
    batch_size: int = 256
    limit: int | None = None
    seed: int | None = None
    draws: int = 16
    active_test: int = 8

    def __post_init__(self) -> None:
        if self.attacks is not None and not isinstance(self.attacks, tuple):  # a list given: store it immutable
            object.__setattr__(self, "attacks", tuple(self.attacks))
        if self.attacks is not None and self.preset is not None:
            raise AdvlabError("give attacks= or preset=, not both")
        if self.preset is not None and self.preset not in PRESETS:
            raise AdvlabError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.norm is not None and self.norm not in NORMS:
            raise AdvlabError(f"norm must be one of {', '.join(NORMS)}, got {self.norm!r}")
        if self.eps is not None and not (self.eps > 0 and math.isfinite(self.eps)):
            raise AdvlabError(f"eps must be positive, got {self.eps}")
        if self.batch_size < 1:
            raise AdvlabError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.active_test < 0:
            raise AdvlabError(f"active_test must be >= 0 samples, got {self.active_test}")
        if self.draws < 1:
            raise AdvlabError(f"draws must be >= 1, got {self.draws}")
        if self.limit is not None and self.limit < 1:
            raise AdvlabError(f"limit must be >= 1, got {self.limit}")

    @classmethod
    def of(cls, config: EvalConfig | str | None, model: Any = None) -> EvalConfig:
        """``config`` as an EvalConfig: a preset name (None: "reliable") runs at the model's default eps
        (:func:`~advlab.evaluation.presets.default_eps` of ``model.info``: 0.1 on digits, 8/255 on photos)."""
        if isinstance(config, EvalConfig):
            return config
        if config is not None and not isinstance(config, str):
            raise AdvlabError(f"config must be an EvalConfig or a preset name, got {type(config).__name__}")
        return cls(preset=config or "reliable", eps=default_eps(getattr(model, "info", None)))

    def threat_norm(self, attacks: Sequence[Attack]) -> str | None:
        """The norm successes are measured in: the config's, else (with an eps) the first attack's."""
        return self.norm if self.norm is not None or self.eps is None else attacks[0].threat_norm

    def resolved_attacks(self) -> list[Attack]:
        """The attacks exactly as they run: the preset's or the given ones, with ``early_stop`` and ``seed``
        applied where the attack has the field, each validated (AdvlabError naming the attack)."""
        if self.attacks is None:
            name = self.preset or "reliable"
            if self.eps is None:
                raise AdvlabError(f"preset {name!r} needs eps (and norm)")
            attacks = preset_attacks(
                name, self.eps, self.norm or "linf", PRESET_SEED if self.seed is None else self.seed
            )
        else:
            attacks = list(self.attacks)
        if not attacks:
            raise AdvlabError("attacks is empty")
        return [self._prepared(a) for a in attacks]

    def _prepared(self, a: Attack) -> Attack:
        if not isinstance(a, Attack):
            raise AdvlabError(f"not an advlab attack: {a!r}")
        names = {f.name for f in dataclasses.fields(a)}
        changes: dict[str, Any] = {}
        if self.early_stop is not None and "early_stop" in names:
            changes["early_stop"] = self.early_stop
        if self.seed is not None and "seed" in names:
            changes["seed"] = self.seed
        a = dataclasses.replace(a, **changes) if changes else a
        try:
            a.validate()
        except ValueError as e:
            raise AdvlabError(f"{a.name}: {e}") from None
        return a
