"""Pairs of (start, target), batched and evolved: :func:`generate` runs :func:`~advlab.prototypes.evolve.evolve`
over batches of pairs (all targets of a start together, batches sized to memory) and joins them into one
:class:`Prototypes`. Pair ``p`` is start ``p // len(targets)`` towards target ``targets[p % len(targets)]``.

Resume, sharding and progress come through one :class:`advlab.work.Work` over batch indices: batch ``b`` is
seeded by ``b`` alone, so the same config (seed) and batch size give the same prototypes however the batches
are spread over calls and processes. :func:`generate_each` evolves the same pairs under several configs (two
recipes side by side) as the units of one such loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from advlab.device import device_of
from advlab.errors import AdvlabError
from advlab.prototypes.evolve import Config, Evolution, evolve
from advlab.prototypes.measures import summarize
from advlab.prototypes.starts import Starts, parse_start
from advlab.work import Work

#: at most this many pairs per batch, whatever the memory (larger batches gain nothing on a CPU)
MAX_BATCH = 1024


@dataclass
class Prototypes:
    """A finished run: the starts, the target classes, the config and every pair's :class:`Evolution`."""

    starts: Starts
    targets: list[int]
    config: Config
    evolution: Evolution
    class_names: list[str] | None = None

    @property
    def x(self) -> torch.Tensor:
        return self.evolution.x

    def summary(self) -> dict[str, Any]:
        return summarize(self.evolution, self.class_names)


def parse_targets(
    spec: str | Sequence[int] | torch.Tensor, num_classes: int, class_names: Sequence[str] | None = None
) -> list[int]:
    """``"all"``, a range ``"0-9"``, a list ``"3,7"`` (indices or class names, mixed), or a sequence of indices."""
    if isinstance(spec, torch.Tensor):
        spec = spec.flatten().tolist()
    if not isinstance(spec, str):
        out = [int(t) for t in spec]
    elif spec == "all":
        out = list(range(num_classes))
    else:
        names = {n.lower(): i for i, n in enumerate(class_names or [])}
        out = []
        for part in (p.strip() for p in spec.split(",")):
            lo, dash, hi = part.partition("-")
            if dash and lo.isdigit() and hi.isdigit():
                if int(hi) < int(lo):
                    raise AdvlabError(f"target range {part!r} is empty")
                out += range(int(lo), int(hi) + 1)
            elif part.isdigit():
                out.append(int(part))
            elif part.lower() in names:
                out.append(names[part.lower()])
            else:
                raise AdvlabError(f"unknown target {part!r}: give 'all', class indices (0-9, 3,7) or class names")
    if not out:
        raise AdvlabError("no targets given")
    bad = [t for t in out if not 0 <= t < num_classes]
    if bad:
        raise AdvlabError(f"target {bad[0]} is out of range: the model has classes 0..{num_classes - 1}")
    if len(set(out)) != len(out):
        raise AdvlabError("targets repeat a class")
    return out


def _memory_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.5)
    try:
        with open("/proc/meminfo") as f:
            avail = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable"))
    except (OSError, StopIteration):
        avail = 8 << 30
    return int(min(avail * 0.25, 8 << 30))


def auto_batch_size(model: nn.Module, sample: torch.Tensor, mode: str = "min", budget: int | None = None) -> int:
    """Pairs per batch that fit in ``budget`` bytes (default: half the free GPU memory, or a quarter of the
    available RAM up to 8 GiB): the activations of one forward on ``sample`` (1, C, H, W), counted with hooks,
    times 3 for the backward (times 6 for max mode's double backprop), capped at :data:`MAX_BATCH`."""
    total = [0]

    def hook(_m: nn.Module, _i: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor):
            total[0] += out.numel() * out.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for h in handles:
            h.remove()
    per_pair = max(1, total[0] + sample.numel() * sample.element_size()) * (6 if mode == "max" else 3)
    return int(max(1, min(MAX_BATCH, (budget if budget is not None else _memory_budget(sample.device)) // per_pair)))


def _config(config: Config | None) -> Config:
    config = config or Config()
    try:
        config.validate()
    except ValueError as e:
        raise AdvlabError(str(e)) from None
    return config


def _starts(model: nn.Module, start: str | torch.Tensor | Starts, config: Config, limit: int | None) -> Starts:
    """The start images, from :class:`Starts`, a tensor, or a start spec sized for a zoo model."""
    if isinstance(start, Starts):
        starts = start
    elif isinstance(start, torch.Tensor):
        starts = Starts(
            start.detach().float().cpu(),
            torch.full((len(start),), -1),
            [f"start {i}" for i in range(len(start))],
            "tensor",
        )
    else:
        info = getattr(model, "info", None)
        if info is None:
            raise AdvlabError(
                "a start spec needs a zoo model (it tells the input size); pass start images as a tensor instead"
            )
        starts = parse_start(start, info.channels, info.input_size, seed=config.seed, limit=limit)
    if float(starts.x.min()) < 0 or float(starts.x.max()) > 1:
        raise AdvlabError("start images must be in [0, 1]")
    return starts


def _check_saved(saved: dict[int, Evolution], bs: int, n_pairs: int) -> None:
    for b, p in saved.items():
        want = min(bs, n_pairs - b * bs)
        if len(p.target) != want:
            raise AdvlabError(
                f"saved batch {b} holds {len(p.target)} pairs, not the {max(want, 0)} of batch size {bs}: "
                "resume with the same --batch-size"
            )


def _batch(
    model: nn.Module, starts: Starts, targets: torch.Tensor, config: Config, b: int, bs: int, strip: set[int]
) -> Evolution:
    """Evolve batch ``b`` (pairs b * bs ...), seeded by ``b``; its records come back to the CPU."""
    n_t = len(targets)
    pairs = torch.arange(b * bs, min((b + 1) * bs, len(starts.x) * n_t))
    s_idx, t_idx = pairs // n_t, pairs % n_t
    snap = torch.tensor([i for i, p in enumerate(pairs.tolist()) if p in strip], dtype=torch.long)
    x0 = starts.x[s_idx].to(device_of(model))
    ev = evolve(model, x0, targets[t_idx], config, start=s_idx, snapshot_pairs=snap, batch_seed=b)
    return Evolution.from_tensors(ev.tensors())  # on the CPU: a run's records never pile up on the device


def generate(
    model: nn.Module,
    start: str | torch.Tensor | Starts = "blank:gray",
    targets: str | Sequence[int] | torch.Tensor = "all",
    config: Config | None = None,
    *,
    batch_size: int | None = None,
    strip_pairs: Sequence[int] | None = None,
    limit: int | None = None,
    work: Work[Evolution] | None = None,
) -> Prototypes:
    """Evolve every (start, target) pair on the model's device; see the module docstring.

    ``start``: a start spec (:mod:`advlab.prototypes.starts`), a tensor of start images, or :class:`Starts`.
    ``targets``: see :func:`parse_targets`. ``batch_size``: pairs per batch (default :func:`auto_batch_size`;
    rounded down to whole starts when it holds at least one). ``strip_pairs``: pairs whose snapshots are kept
    (default: the first start's first 10 targets). ``limit``: at most this many images of a data-set start.
    ``work`` (units = batch indices): ``done`` batches finished earlier (resume; every call must use the same
    batch size), ``on_done(b, evolution)`` after each new batch, ``in_shard(b)`` for one shard of a distributed run,
    ``progress`` around the batches computed; the result holds the batches evolved or given in ``done``.
    """
    configs = [config or Config()]
    result = generate_each(
        model, start, targets, configs, batch_size=batch_size, strip_pairs=strip_pairs, limit=limit, work=work
    )[0]
    if result is None:
        raise AdvlabError("nothing to evolve")
    return result


def generate_each(
    model: nn.Module,
    start: str | torch.Tensor | Starts,
    targets: str | Sequence[int] | torch.Tensor,
    configs: Sequence[Config],
    *,
    batch_size: int | None = None,
    strip_pairs: Sequence[int] | None = None,
    limit: int | None = None,
    work: Work[Evolution] | None = None,
) -> list[Prototypes | None]:
    """The same (start, target) pairs evolved by each of ``configs`` (e.g. a recipe and the one it is compared
    with), one :class:`Prototypes` per config, as the units of one loop: with ``n`` batches per config, unit
    ``k * n + b`` is batch ``b`` of ``configs[k]``, seeded by ``b`` alone. So each config's prototypes equal its own
    :func:`generate` with the same batch size, and a single config numbers its units as :func:`generate` does.
    The starts (and a noise start's seed) come from ``configs[0]``, and so do the snapshots of ``strip_pairs``;
    the other configs keep none. ``work``, ``batch_size`` and ``limit``: as in :func:`generate` (the automatic
    batch size is that of max mode when any config uses it). A config with no batch evolved or given in
    ``done`` (a shard that computed none of its units) gives None.
    """
    configs, work = [_config(c) for c in configs], work or Work()
    if not configs:
        raise AdvlabError("no config to evolve")
    starts = _starts(model, start, configs[0], limit)
    info = getattr(model, "info", None)
    class_names = list(info.class_names) if info is not None else None
    dev = device_of(model)
    with torch.no_grad():
        num_classes = info.num_classes if info is not None else int(model(starts.x[:1].to(dev)).shape[1])
    target_list = parse_targets(targets, num_classes, class_names)
    n_t, n_pairs = len(target_list), len(starts.x) * len(target_list)
    mode = "max" if any(c.mode == "max" for c in configs) else "min"
    bs = pairs_per_batch(batch_size or auto_batch_size(model, starts.x[:1].to(dev), mode), n_t)
    n = (n_pairs + bs - 1) // bs
    strips = [set(strip_pairs) if strip_pairs is not None else set(range(min(10, n_t)))] + [set()] * len(configs)
    parts = work.finished()
    for k in range(len(configs)):
        _check_saved({u - k * n: p for u, p in parts.items() if k * n <= u < (k + 1) * n}, bs, n_pairs)
    for u in work.todo(range(len(configs) * n)):
        k, b = divmod(u, n)
        parts[u] = _batch(model, starts, torch.tensor(target_list), configs[k], b, bs, strips[k])
        work.record(u, parts[u])
    out: list[Prototypes | None] = []
    for k, config in enumerate(configs):
        mine = [parts[u] for u in sorted(parts) if k * n <= u < (k + 1) * n]
        out.append(Prototypes(starts, target_list, config, Evolution.cat(mine), class_names) if mine else None)
    return out


def pairs_per_batch(batch_size: int, n_targets: int) -> int:
    """The batch size :func:`generate` uses for ``batch_size`` pairs: rounded down to whole starts (all
    targets of a start together) when it holds at least one start."""
    return batch_size // n_targets * n_targets if batch_size >= n_targets else batch_size
