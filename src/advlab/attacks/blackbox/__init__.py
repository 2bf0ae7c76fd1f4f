"""Score-based black-box attacks: they query the model's outputs (logits) and never its gradients.

    NES(eps, norm, max_queries, samples, sigma, alpha)   PGD on an antithetic Gaussian estimate of the gradient
    SPSA(eps, norm, max_queries, samples, delta, lr)      Adam on a Rademacher (SPSA) estimate of the gradient
    Square(eps, norm, max_queries, p_init)                random search with square-shaped updates

All have ``white_box = False``: ``Attack._run`` hands them the model wrapped in :class:`QueryOnly`, which
raises if a gradient is asked for. ``AttackResult.forwards`` counts the queries per sample (never above
``max_queries``), ``backwards`` is 0. Each sample stops at its first success. eps is in [0, 1] pixel units.
"""

from __future__ import annotations

from advlab.attacks.blackbox.nes import NES
from advlab.attacks.blackbox.query_only import QueryOnly
from advlab.attacks.blackbox.spsa import SPSA
from advlab.attacks.blackbox.square import Square

__all__ = ["NES", "SPSA", "QueryOnly", "Square"]
