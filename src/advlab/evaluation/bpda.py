"""Straight-through gradients (BPDA: Backward Pass Differentiable Approximation, Athalye, Carlini & Wagner 2018)
for the non-differentiable torch ops a model applies to its input, during attacks only.

A model that quantizes its input gives gradient attacks nothing to follow and looks robust. Under
:class:`StraightThrough` (a :class:`torch.overrides.TorchFunctionMode`, so the ops are found inside any module,
functional code or method call without changing the model) these ops, applied to input-dependent tensors (ones
that require grad), get a backward pass of the straight-through kind; the forward values are the model's own, and
the evaluation still confirms every success on the model itself. Writing ``stop(v)`` for ``v.detach()``:

* ``round``, ``floor``, ``ceil``, ``trunc``, ``fix``, ``sign`` (f(x) ~ x, the BPDA choice for quantizers):
      y = f(x) + (x - stop(x))                     (value f(x) exactly, dy/dx = 1)
* ``remainder`` / ``fmod`` (``x - x.remainder(s)`` is a quantizer): remainder(x, s) = x - s floor(x / s) with
  floor straight-through has dy/dx = 1 - 1 = 0, so the result is ``stop(remainder(x, s))`` and the quantizer
  ``x - remainder(x, s)`` gets gradient 1.
* **casts to an integer dtype** (``(x * k).long()``, ``.int()``, ``.byte()``, ``.to(torch.uint8)``): the integer
  result is tracked with a float shadow ``x_int + (x - stop(x))`` (its exact values, the gradient of the identity),
  and when it comes back into float arithmetic (``.float()``, ``/ k``, ``* x``) the shadow stands in for it:
  ``(x * k).long().float() / k`` gets gradient 1.
* **comparisons** ``a > b``, ``a >= b``, ``a < b``, ``a <= b`` (``torch.gt`` / ``ge`` / ``lt`` / ``le``): the step
  H(s) of s = a - b (b - a for < and <=) gets the shadow ``H(s) + (s - stop(s))`` (the straight-through estimator,
  slope 1 per unit of s), used when the mask enters float arithmetic (``mask.float()``, ``mask.to(x.dtype)``,
  ``x * mask``, ``torch.where(mask, a, b)`` = b + mask (a - b), whose shadow term is ``stop(a - b)`` times the
  mask's); ``~``, ``&`` and ``|`` of masks and sums of masks keep their shadows (1 - m, m1 m2, m1 + m2 - m1 m2).
  So ``sum_k (x > t_k).float() / levels`` with thresholds 1/levels apart gets gradient 1, like ``round``.

Comparisons are given shadows only on the input and on elementwise functions of it (preprocessing): not once the
tensor has gone through a layer that mixes inputs (convolution, linear, matmul, einsum, ...), because there a
comparison is a gate (a ReLU written ``h * (h > 0).float()``, a mask) whose own gradient is already right, and a
slope-1 shadow would distort it. An integer or boolean tensor whose shadow would not hold its exact values (an
index, ``argmax``, integer division, an in-place change) gets none: no gradient through it, as without the mode.
The ops that got a straight-through backward on a probe forward are named by :func:`non_differentiable_ops`.

**Custom autograd Functions** (``torch.autograd.Function`` subclasses: their backward is the author's, and may be
zero or lie) are not torch ops, so the mode cannot see them; their nodes in the autograd graph can be. Given the
names of Function classes (``functions``, :func:`function_name`; which ones is decided by finite differences in
:func:`advlab.evaluation.diagnostics.probe`), :class:`StraightThrough` hooks every node of those classes in each
forward's graph so that the gradient it passes to each input of the output's shape is the output's gradient
(``dL/dx := dL/dy``: the straight-through estimator, f treated as the identity); other inputs keep the Function's
own. Given ``differentiated`` names instead, it runs those Functions' own ``forward`` outside ``Function.apply``, so
that autograd differentiates the ops it is written in (with this module's straight-through gradients for its
non-differentiable ones) and the author's backward is never called: the exact gradient where the forward is torch
code. That takes effect where the Function is called as ``Cls.apply(...)`` (the class's ``apply`` is looked up at
the call); a ``f = Cls.apply`` bound before the evaluation keeps the original, so the probe measures whether it
did. The Function classes in a graph are listed by :func:`custom_functions`.

**An input that leaves autograd** (NumPy, OpenCV, PIL, ``torch.no_grad``) and whose pixels come back (an image of its
shape, channels last, flattened, grey without its channel, or one image at a time) is taken across by
:class:`Reattached`: BPDA with the identity for the part outside autograd.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, TypeGuard

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from advlab.attacks.base import frozen_parameters
from advlab.evaluation.views import AttackView

#: the ops whose gradient :class:`StraightThrough` replaces by the identity's
STRAIGHT_THROUGH: dict[Any, str] = {
    f: name
    for name in ("round", "floor", "ceil", "trunc", "fix", "sign")
    for f in (getattr(torch, name), getattr(torch.Tensor, name))
}
#: comparison op names -> (reported name, +1 when the mask is 1 for a > b, -1 when for a < b)
COMPARISONS: dict[str, tuple[str, int]] = {
    alias: (name, sign)
    for name, sign, aliases in (
        ("gt", 1, ("gt", "__gt__", "greater")),
        ("ge", 1, ("ge", "__ge__", "greater_equal")),
        ("lt", -1, ("lt", "__lt__", "less")),
        ("le", -1, ("le", "__le__", "less_equal")),
    )
    for alias in aliases
}
#: op names that cast a tensor to another dtype
CASTS = frozenset({"to", "type", "long", "int", "short", "char", "byte"})
#: op names of the remainder (zero gradient under the mode, see the module docstring)
REMAINDERS = {"remainder": "remainder", "__mod__": "remainder", "fmod": "fmod"}
#: op names that mix their inputs (after one of them a comparison is a gate, not an input quantizer)
MIXING = frozenset(
    {
        "conv1d",
        "conv2d",
        "conv3d",
        "conv_transpose1d",
        "conv_transpose2d",
        "conv_transpose3d",
        "linear",
        "bilinear",
        "matmul",
        "__matmul__",
        "__rmatmul__",
        "mm",
        "bmm",
        "addmm",
        "baddbmm",
        "addbmm",
        "mv",
        "addmv",
        "einsum",
        "tensordot",
        "embedding",
        "scaled_dot_product_attention",
        "multi_head_attention_forward",
    }
)
#: in-place op names besides the ``name_`` methods (a tracked tensor they change loses its shadow)
INPLACE = frozenset(
    {
        "__setitem__",
        "__iadd__",
        "__isub__",
        "__imul__",
        "__itruediv__",
        "__ifloordiv__",
        "__imod__",
        "__iand__",
        "__ior__",
        "__ixor__",
        "__ilshift__",
        "__irshift__",
        "copy_",
    }
)
#: logical ops on masks -> their value on 0/1 floats
LOGIC: dict[str, Callable[..., torch.Tensor]] = {
    **dict.fromkeys(("__invert__", "bitwise_not", "logical_not"), lambda a: 1 - a),
    **dict.fromkeys(("__and__", "__rand__", "bitwise_and", "logical_and"), lambda a, b: a * b),
    **dict.fromkeys(("__or__", "__ror__", "bitwise_or", "logical_or"), lambda a, b: a + b - a * b),
}

_SHADOW, _OPS, _HIDDEN = "_advlab_shadow", "_advlab_ops", "_advlab_mixed"
_RECOVERABLE = (RuntimeError, TypeError, ValueError, IndexError)


def _shadow(v: Any) -> torch.Tensor | None:
    return getattr(v, _SHADOW, None) if isinstance(v, torch.Tensor) else None


def _live(v: Any) -> TypeGuard[torch.Tensor]:
    """An input-dependent float tensor (it requires grad)."""
    return isinstance(v, torch.Tensor) and v.is_floating_point() and v.requires_grad


def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (list, tuple)):
        return [t for v in tree for t in _tensors(v)]
    if isinstance(tree, dict):
        return [t for v in tree.values() for t in _tensors(v)]
    return []


def _swap(tree: Any, dtype: torch.dtype | None = None) -> Any:
    """``tree`` with every tracked tensor replaced by its shadow (cast to ``dtype`` when given)."""
    if (s := _shadow(tree)) is not None:
        return s if dtype is None else s.to(dtype)
    if isinstance(tree, (list, tuple)):
        return type(tree)(_swap(v, dtype) for v in tree)
    if isinstance(tree, dict):
        return {k: _swap(v, dtype) for k, v in tree.items()}
    return tree


def _ops_of(tree: Any) -> frozenset[str]:
    return frozenset().union(*(getattr(t, _OPS, frozenset()) for t in _tensors(tree)))


def _in_place(name: str) -> bool:
    """Whether the op of this name changes its first argument in place (``add_``, ``__iadd__``, ``copy_``, ...)."""
    return name in INPLACE or name.endswith("_") and not name.startswith("_")


def _track(out: torch.Tensor, shadow: torch.Tensor, ops: frozenset[str]) -> torch.Tensor:
    """Attach ``shadow`` (a float tensor holding ``out``'s exact values) to the integer or bool ``out``."""
    if shadow.shape == out.shape and torch.equal(shadow.detach(), out.to(shadow.dtype)):
        setattr(out, _SHADOW, shadow)
        setattr(out, _OPS, ops)
    return out


class _Mode(TorchFunctionMode):
    """The straight-through backward of the module docstring; ``found``: the names of the ops that got one."""

    def __init__(self) -> None:
        super().__init__()
        self.found: set[str] = set()

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if _in_place(name):  # a tracked tensor changed: its shadow is stale
            for t in _tensors(args[:1]):
                if _shadow(t) is not None:
                    delattr(t, _SHADOW)
        if not isinstance(out, torch.Tensor) or not torch.is_grad_enabled():  # no_grad: no backward to replace
            return out
        try:
            new = self._adapted(func, name, args, kwargs, out)
        except _RECOVERABLE:  # the shadow cannot be computed: no straight-through gradient, the forward as it was
            new = out
        if (name in MIXING or any(getattr(t, _HIDDEN, False) for t in _tensors((args, kwargs)))) and all(
            new is not t for t in _tensors((args, kwargs))
        ):
            setattr(new, _HIDDEN, True)
        return new

    def _adapted(
        self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor
    ) -> torch.Tensor:
        x = args[0] if args else None
        if func in STRAIGHT_THROUGH and _live(x) and out.shape == x.shape:
            self.found.add(STRAIGHT_THROUGH[func])
            return out.detach() + (x - x.detach())
        if name in REMAINDERS and _live(x) and out.is_floating_point():
            self.found.add(REMAINDERS[name])
            return out.detach()
        if name in COMPARISONS and out.dtype == torch.bool and len(args) >= 2:
            return self._compared(name, args[0], args[1], out)
        if name in CASTS and not out.is_floating_point() and out.dtype != torch.bool and not out.is_complex():
            src = x if _live(x) else _shadow(x)
            if src is not None:
                ops = _ops_of(x) | {f"{str(out.dtype).removeprefix('torch.')} cast"}
                return _track(out, out.to(src.dtype) + (src - src.detach()), ops)
        if not any(_shadow(t) is not None for t in _tensors((args, kwargs))):
            return out
        return self._from_shadows(func, name, args, kwargs, out)

    def _compared(self, name: str, a: Any, b: Any, out: torch.Tensor) -> torch.Tensor:
        sides = [v for v in (a, b) if isinstance(v, torch.Tensor)]
        live = [v for v in sides if _live(v) or _shadow(v) is not None]
        if not live or any(getattr(v, _HIDDEN, False) for v in live):
            return out
        fa, fb = _swap(a), _swap(b)
        s = (fa - fb) * COMPARISONS[name][1]
        if not isinstance(s, torch.Tensor) or not s.is_floating_point() or s.shape != out.shape:
            return out
        return _track(out, out.to(s.dtype) + (s - s.detach()), _ops_of(sides) | {COMPARISONS[name][0]})

    def _from_shadows(
        self, func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], out: torch.Tensor
    ) -> torch.Tensor:
        """``func`` recomputed on the shadows of its tracked arguments: a float result with ``out``'s exact values
        becomes ``out`` with the shadows' gradient; an integer or bool one keeps a shadow."""
        ops = _ops_of((args, kwargs))
        if name in LOGIC:
            res = LOGIC[name](*_swap(args))
        elif func is torch.where and len(args) == 3 and (m := _shadow(args[0])) is not None and out.is_floating_point():
            a, b = (torch.as_tensor(v, dtype=out.dtype, device=out.device) for v in args[1:])
            res = out + (a - b).detach() * (m - m.detach())
        else:
            res = func(*_swap(args), **_swap(kwargs))
        if not isinstance(res, torch.Tensor) or not res.is_floating_point() or res.shape != out.shape:
            return out
        if not out.is_floating_point():
            return _track(out, res, ops)
        if res.dtype != out.dtype or not torch.equal(res.detach(), out):
            return out
        self.found.update(ops)
        return out.detach() + (res - res.detach())


def non_differentiable_ops(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The ops that :class:`StraightThrough` gives a straight-through backward when ``model`` runs on ``x`` (one
    forward with ``x`` requiring grad and the parameters frozen), sorted by name; [] for a model without them."""
    mode = _Mode()
    xs = x.detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad(), mode:
        model(xs)
    return sorted(mode.found)


def _laid_out(x: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """The images ``x`` (N, C, H, W) in the layout of a tensor of ``shape`` that holds their pixels as a NumPy, PIL or
    OpenCV round trip hands them back: the same shape; channels last (N, H, W, C); grey images without their channel
    (N, H, W); one row per image (N, C*H*W); all in one vector. None for any other shape."""
    if shape == x.shape:
        return x
    if x.ndim == 4 and tuple(shape) == (x.shape[0], *x.shape[2:], x.shape[1]):
        return x.permute(0, 2, 3, 1)
    if tuple(shape) in ((x.shape[0], x[0].numel()), (x.numel(),)) or (
        x.ndim == 4 and x.shape[1] == 1 and tuple(shape) == (x.shape[0], *x.shape[2:])
    ):
        return x.reshape(shape)
    return None


class _ReattachMode(TorchFunctionMode):
    """Reattaches an input that left autograd: the first grad-enabled op (not in place) that takes a float tensor
    holding the input's pixels which does not require grad and came from outside autograd (not made by a torch op
    under this mode, or made under ``torch.no_grad``; not the input itself, not one of ``model``'s parameters or
    buffers), and returns a float tensor, runs again with ``t + (x - stop(x))`` in its place, the difference laid
    out as ``t`` (:func:`_laid_out`): the value ``t``, the gradient of the identity to ``x``. "Holding the pixels":
    laid out like the input and correlated with it (:func:`_like`). The pixels may come back as the batch, or one
    image at a time (a loop over the batch, e.g. through PIL, then ``torch.stack``, in any order): each single image
    is matched to the input image it correlates with most (each input image taken once; the mode ends when every
    input image is taken)."""

    def __init__(self, x: torch.Tensor, model: nn.Module) -> None:
        super().__init__()
        self.x, self.done = x, False
        self.made: dict[int, torch.Tensor] = {}  # tensors made under the mode with grad on (kept alive: ids unique)
        self.own = {id(t) for t in (*model.parameters(), *model.buffers())}
        self.taken = torch.zeros(len(x), dtype=torch.bool)  # the input images reattached one at a time

    def _outside(self, t: Any) -> bool:
        """``t`` is a float tensor from outside autograd, not the model's own."""
        return (
            isinstance(t, torch.Tensor)
            and t is not self.x
            and t.is_floating_point()
            and not t.requires_grad
            and id(t) not in self.made
            and id(t) not in self.own
        )

    def _image_of(self, t: torch.Tensor) -> int | None:
        """The input image a single image ``t`` from outside autograd holds: of those not taken yet, the one it
        correlates with most, if that is at least :data:`LIKE_CORRELATION`; None otherwise."""
        if not self._outside(t) or _one_image(self.x[:1], t.shape) is None or bool(self.taken.all()):
            return None
        images = torch.stack([_some(_one_image(self.x[i : i + 1], t.shape)).flatten() for i in range(len(self.x))])
        corr = _correlations(t, images)
        corr[self.taken.to(corr.device) | corr.isnan()] = -math.inf
        i = int(corr.argmax())
        return i if float(corr[i]) >= LIKE_CORRELATION else None

    def _holds(self, tree: Any) -> bool:
        if isinstance(tree, (list, tuple)):
            return any(self._holds(v) for v in tree)
        if isinstance(tree, dict):
            return any(self._holds(v) for v in tree.values())
        if self._outside(tree) and _like(tree, _laid_out(self.x, tree.shape)):
            return True
        return isinstance(tree, torch.Tensor) and self._image_of(tree) is not None

    def __torch_function__(
        self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if (
            not self.done
            and torch.is_grad_enabled()
            and not _in_place(name)  # (run twice, an in-place op would apply twice)
            and any(t.is_floating_point() for t in _tensors(out))  # (not an attribute read: a float tensor comes out)
            and self._holds((args, kwargs))
        ):
            change = self.x - self.x.detach()
            out = func(*self._reattached(args, change), **self._reattached(kwargs, change))
            self.done = self.done or bool(self.taken.all())
        if torch.is_grad_enabled():
            for t in _tensors(out):
                self.made[id(t)] = t
        return out

    def _reattached(self, tree: Any, change: torch.Tensor) -> Any:
        if isinstance(tree, (list, tuple)):
            return type(tree)(self._reattached(v, change) for v in tree)
        if isinstance(tree, dict):
            return {k: self._reattached(v, change) for k, v in tree.items()}
        if self._outside(tree) and _like(tree, _laid_out(self.x, tree.shape)):
            self.done = True
            return tree + _laid_out(change, tree.shape)
        if isinstance(tree, torch.Tensor) and (i := self._image_of(tree)) is not None:
            self.taken[i] = True
            return tree + _some(_one_image(change[i : i + 1], tree.shape))
        return tree


def _some(t: torch.Tensor | None) -> torch.Tensor:
    """``t``, which a check before has found to exist."""
    assert t is not None
    return t


#: the least correlation of a tensor from outside autograd with the input's pixels for it to count as holding them
LIKE_CORRELATION = 0.5


def _like(t: torch.Tensor, pixels: torch.Tensor | None) -> bool:
    """``t`` holds ``pixels`` (the input laid out as ``t``; None: no such layout): their Pearson correlation is at
    least :data:`LIKE_CORRELATION` (a monotone curve, a normalization, a purifier keep it near 1; a weight matrix of
    the same shape does not), or one of them is constant."""
    if pixels is None:
        return False
    corr = _correlations(t, pixels.flatten()[None])[0]
    return bool(corr.isnan()) or bool(corr >= LIKE_CORRELATION)


def _correlations(t: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """(M,) float64: the Pearson correlation of ``t``'s values (flattened) with each row of ``rows`` (M, t.numel());
    NaN where ``t`` or the row is constant."""
    a = t.detach().flatten().double()
    b = rows.detach().double().to(a.device)
    a, b = a - a.mean(), b - b.mean(1, keepdim=True)
    norms = b.norm(dim=1) * a.norm()
    return torch.where(norms > 1e-12, (b @ a) / norms.clamp_min(1e-12), torch.full_like(norms, math.nan))


def _one_image(x: torch.Tensor, shape: torch.Size) -> torch.Tensor | None:
    """One image ``x`` (1, C, H, W) laid out (:func:`_laid_out`) as a tensor of ``shape``, with or without the batch
    dimension; None for any other shape."""
    laid = _laid_out(x, shape)
    if laid is None and (laid := _laid_out(x, torch.Size((1, *shape)))) is None:
        return None
    return laid.reshape(shape)


class Reattached(AttackView):
    """BPDA with the identity (Athalye, Carlini & Wagner 2018) across a part of ``model`` outside autograd: the
    input leaves autograd (NumPy, OpenCV, PIL, ``torch.no_grad``, ``detach``) and its pixels come back (in one of
    the layouts of :func:`_laid_out`, as the batch or one image at a time); that tensor is taken as a function of
    the input whose gradient is the identity, ``t + (x - stop(x))`` (the forward values the model's own). The
    approximation is exact for preprocessing that returns its input unchanged and the BPDA choice for one that
    returns an image close to it (purification, a gamma curve, a blur, an 8-bit round trip)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _ReattachMode(x, self.model):
            return self.model(x)


def function_name(cls: type) -> str:
    """The name a custom autograd Function class goes by here: ``module.QualifiedName``."""
    return f"{cls.__module__}.{cls.__qualname__}"


def _function_nodes(out: Any) -> dict[str, list[Any]]:
    """The nodes of custom autograd Functions in the graph behind the tensors of ``out``, by :func:`function_name`."""
    nodes: dict[str, list[Any]] = {}
    stack: list[Any] = [t.grad_fn for t in _tensors(out) if t.grad_fn is not None]
    seen: dict[int, Any] = {}  # the nodes kept alive, so that no id is reused during the walk
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen[id(node)] = node
        cls = getattr(node, "_forward_cls", None)
        if isinstance(node, torch.autograd.function.BackwardCFunction) and isinstance(cls, type):
            nodes.setdefault(function_name(cls), []).append(node)
        stack.extend(nxt for nxt, _ in node.next_functions)
    return nodes


def custom_functions(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The custom autograd Function classes (:func:`function_name`) in the graph of ``model`` run on ``x`` (one
    forward with ``x`` requiring grad, the parameters frozen), sorted; [] for a model built of torch ops only."""
    xs = x.detach().clone().requires_grad_(True)
    with frozen_parameters(model), torch.enable_grad():
        return sorted(_function_nodes(model(xs)))


def _pass_output_gradient(grad_inputs: tuple[Any, ...], grad_outputs: tuple[Any, ...]) -> tuple[Any, ...]:
    """A node hook: each input gradient of the output's shape becomes the output's gradient (straight-through)."""
    go = grad_outputs[0] if grad_outputs else None
    if go is None:
        return grad_inputs
    return tuple(go if gi is not None and gi.shape == go.shape else gi for gi in grad_inputs)


class _Context:
    """A stand-in for the ``ctx`` of a custom Function's forward run outside ``Function.apply``: it takes what the
    forward stores and ignores the bookkeeping calls (autograd differentiates the forward itself)."""

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.needs_input_grad = tuple(isinstance(a, torch.Tensor) and a.requires_grad for a in args)
        self.saved_tensors: tuple[Any, ...] = ()

    def save_for_backward(self, *tensors: Any) -> None:
        self.saved_tensors = tensors

    def save_for_forward(self, *tensors: Any) -> None:
        pass

    def mark_dirty(self, *tensors: Any) -> None:
        pass

    def mark_non_differentiable(self, *tensors: Any) -> None:
        pass

    def set_materialize_grads(self, value: bool) -> None:
        pass


@contextlib.contextmanager
def _differentiating(names: tuple[str, ...], mode: bool) -> Any:
    """While open, ``Cls.apply(*args)`` of a Function named in ``names`` runs ``Cls.forward`` as plain autograd code
    (under a :class:`_Mode` of its own unless ``mode``: one is open already); a forward that fails that way runs
    as the Function (its backward then used)."""
    original = torch.autograd.Function.__dict__["apply"]

    def apply(cls: Any, *args: Any, **kwargs: Any) -> Any:
        if function_name(cls) in names and torch.is_grad_enabled():
            try:
                with contextlib.nullcontext() if mode else _Mode():
                    if cls.setup_context is torch.autograd.Function.setup_context:
                        return cls.forward(_Context(args), *args, **kwargs)
                    return cls.forward(*args, **kwargs)
            except _RECOVERABLE:
                pass
        return original.__func__(cls, *args, **kwargs)

    torch.autograd.Function.apply = classmethod(apply)  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        torch.autograd.Function.apply = original  # type: ignore[method-assign]


class StraightThrough(AttackView):
    """``model`` with straight-through gradients (see the module docstring); the forward values are the model's own.

    ``ops``: through the non-differentiable torch ops it applies to its input (the mode); ``functions``: through
    the custom autograd Functions of these names (:func:`function_name`), wherever they are in the graph;
    ``differentiated``: the custom Functions of these names differentiated through their own forward."""

    def __init__(
        self, model: nn.Module, ops: bool = True, functions: tuple[str, ...] = (), differentiated: tuple[str, ...] = ()
    ) -> None:
        super().__init__(model)
        self.ops, self.functions, self.differentiated = ops, functions, differentiated

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with contextlib.ExitStack() as stack:
            if self.ops:
                stack.enter_context(_Mode())
            if self.differentiated:
                stack.enter_context(_differentiating(self.differentiated, self.ops))
            out = self.model(x)
        if self.functions and torch.is_grad_enabled():
            for name, nodes in _function_nodes(out).items():
                if name in self.functions:
                    for node in nodes:
                        node.register_hook(_pass_output_gradient)
        return out
