"""What the attacks of an evaluation see: views of the model that change its outputs' form, never its decisions.

An evaluation judges every success on the model as a user calls it (:mod:`advlab.evaluation.cascade`); the attacks
may run on a view of it instead (:class:`advlab.evaluation.diagnostics.Plan` ``.attacked``):

* :class:`LogProbabilities`: ``log p`` for a model that outputs probabilities (the logits up to a constant per
  sample: the same argmax, useful cross-entropy gradients);
* :class:`ExpectedProbabilities`: EOT (Athalye et al. 2018) for a randomized model, the log of the mean softmax
  over K fresh forwards (every gradient an expectation);
* :class:`GaussianSmoothed`: EOT over Gaussian input noise for a deterministic model whose predictions are
  unstable (the remedy of :data:`advlab.evaluation.indicators.UNSTABLE_PREDICTIONS`);
* :class:`advlab.evaluation.bpda.StraightThrough`: straight-through gradients through non-differentiable input ops.
"""

from __future__ import annotations

import torch
from torch import nn

#: fresh forwards per EOT forward
EOT_DRAWS = 16


class AttackView(nn.Module):
    """A view of ``model`` that attacks run on (an evaluation's ``attack_model``), never the model judged: it keeps
    the model's ``info`` and train/eval mode; subclasses change what the attacks see."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.info = getattr(model, "info", None)
        self.training = model.training  # not train(): that would change the wrapped model's modules


class LogProbabilities(AttackView):
    """``log(model(x))`` for a model that outputs probabilities: logits up to a per-sample constant (the same
    argmax, useful cross-entropy gradients)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.model(x).float()
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()


class ExpectedProbabilities(AttackView):
    """EOT for a randomized model: ``log((1/K) sum_k softmax(model(x)))`` over K = ``draws`` fresh forwards (the
    log of the expected probabilities; K times the cost of a forward)."""

    def __init__(self, model: nn.Module, draws: int = EOT_DRAWS) -> None:
        super().__init__(model)
        self.draws = draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([self.model(x).float().softmax(1) for _ in range(self.draws)]).mean(0)
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()


class GaussianSmoothed(AttackView):
    """The model smoothed by Gaussian input noise, for a deterministic model whose predictions are unstable (a steep
    or discontinuous function, whose gradient at x says little about the loss a step away):

        log((1/K) sum_k softmax(model(clip_[0,1](x + sigma n_k)))),   n_k ~ N(0, I),  K = ``draws``,

    ``sigma`` per pixel in [0, 1] pixel units. Its gradient is the mean of the model's over the K noisy copies,
    which follows where the loss rises on average within about sigma. The draws come from a generator seeded with
    ``seed`` at every forward (common random numbers: the view is a deterministic function, so APGD's step-size rule
    sees a loss that does not jitter); K times the cost of a forward."""

    def __init__(self, model: nn.Module, sigma: float, draws: int = EOT_DRAWS, seed: int = 0) -> None:
        super().__init__(model)
        self.sigma, self.draws, self.seed = float(sigma), int(draws), int(seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gen = torch.Generator(device=x.device).manual_seed(self.seed)
        p = None
        for _ in range(self.draws):
            n = torch.randn(x.shape, generator=gen, device=x.device, dtype=x.dtype)
            q = self.model((x + self.sigma * n).clamp(0, 1)).float().softmax(1)
            p = q if p is None else p + q
        assert p is not None
        p = p / self.draws
        return p.clamp_min(torch.finfo(p.dtype).tiny).log()
