"""What the attacks of an evaluation see: views of the model that change its outputs' form, never its decisions.

An evaluation judges every success on the model as a user calls it (:mod:`advlab.evaluation.cascade`); the attacks
may run on a view of it instead (:class:`advlab.evaluation.diagnostics.Plan` ``.attacked``):

* :class:`LogProbabilities`: ``log p`` for a model that outputs probabilities (the logits up to a constant per
  sample: the same argmax, useful cross-entropy gradients);
* :class:`ExpectedProbabilities`: EOT (Athalye et al. 2018) for a randomized model, the log of the mean softmax
  over K fresh forwards (every gradient an expectation);
* :class:`GaussianSmoothed`: EOT over Gaussian input noise for a deterministic model whose predictions are
  unstable (the remedy of :data:`advlab.evaluation.indicators.UNSTABLE_PREDICTIONS`);
* :class:`FiniteDifferences`: gradients by central differences, one pair of queries per input value, for a model
  with no gradient path at all and a small input (ZOO's coordinate-wise estimate, Chen et al. 2017, on every
  coordinate at once);
* :class:`advlab.evaluation.bpda.StraightThrough`: straight-through gradients through non-differentiable input ops.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: fresh forwards per EOT forward
EOT_DRAWS = 16
#: the step of :class:`FiniteDifferences`, in [0, 1] pixel units: 2.55 grey levels, so that a model that rounds its
#: input to 8 bits (a PIL or uint8 round trip) still has differences to take. On 64 digits, cosine of the central
#: differences with the exact input gradient (median): the digits CNN 1.0000 at 1e-3, 0.9996 at 1e-2; the same CNN
#: behind an 8-bit rounding (against the CNN's gradient) 0.54 at 1e-3, 0.995 at 1e-2.
FD_STEP = 1e-2
#: images evaluated per forward of :class:`FiniteDifferences`' backward
FD_CHUNK = 4096


def log_probabilities(p: torch.Tensor) -> torch.Tensor:
    """``log p`` of probabilities ``p``, each clamped first at the smallest positive normal number of its dtype
    (a probability that underflowed to 0 gives a large finite negative logit, not -inf)."""
    return p.clamp_min(torch.finfo(p.dtype).tiny).log()


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
        return log_probabilities(self.model(x).float())


class ExpectedProbabilities(AttackView):
    """EOT for a randomized model: ``log((1/K) sum_k softmax(model(x)))`` over K = ``draws`` fresh forwards (the
    log of the expected probabilities; K times the cost of a forward)."""

    def __init__(self, model: nn.Module, draws: int = EOT_DRAWS) -> None:
        super().__init__(model)
        self.draws = draws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return log_probabilities(torch.stack([self.model(x).float().softmax(1) for _ in range(self.draws)]).mean(0))


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
        return log_probabilities(p / self.draws)


class _CentralDifferences(torch.autograd.Function):
    """``model(x)`` run without autograd; its backward is ``J^T g`` with the Jacobian J of every output value to every
    input value by central differences ``(f(x + h e_i) - f(x - h e_i)) / (2h)`` (each point clipped to [0, 1], the
    quotient taken over the step that remains)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, model: nn.Module, h: float) -> torch.Tensor:
        with torch.no_grad():
            out = model(x)
        ctx.save_for_backward(x)
        ctx.model, ctx.h = model, h
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        n, d = len(x), x[0].numel()
        flat = x.detach().flatten(1)
        step = ctx.h * torch.eye(d, dtype=x.dtype, device=x.device)
        up, down = (flat[:, None, :] + step).clamp(0, 1), (flat[:, None, :] - step).clamp(0, 1)
        points = torch.cat([up, down], 1).reshape(n * 2 * d, *x.shape[1:])
        with torch.no_grad():
            out = torch.cat([ctx.model(chunk) for chunk in points.split(FD_CHUNK)]).reshape(n, 2, d, -1).double()
        spacing = (up - down).diagonal(dim1=1, dim2=2).double().clamp_min(1e-12)  # (n, d): 2h, less at the box
        jacobian = (out[:, 0] - out[:, 1]) / spacing[..., None]  # (n, d, K)
        g = (jacobian @ grad.reshape(n, -1, 1).double())[..., 0]
        return g.reshape(x.shape).to(x.dtype), None, None


class FiniteDifferences(AttackView):
    """A model with no gradient path at all (its outputs computed outside autograd: NumPy, another framework, a
    remote service) made differentiable by central differences: forward ``model(x)``; backward the vector-Jacobian
    product with the Jacobian estimated per input value, ``(f(x + h e_i) - f(x - h e_i)) / 2h``, h = ``step`` in
    [0, 1] pixel units. Exact up to O(h^2) where the model is smooth at that scale (and exact for a piecewise linear
    one away from its kinks); each backward costs :attr:`queries` forwards per image (2 per input value), so it is
    for small inputs only."""

    def __init__(self, model: nn.Module, step: float = FD_STEP) -> None:
        super().__init__(model)
        self.step = float(step)
        self.queries = 0  # forwards of the model per image and backward, set at the first forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.queries = 2 * x[0].numel()
        return _CentralDifferences.apply(x, self.model, self.step)
