"""generate: every digit class is reached from blank, noise and real digits; batching, resume and shards
through one Work; targets, batch sizes and bad settings."""

from __future__ import annotations

import pytest
import torch

from advlab import prototypes, zoo
from advlab.errors import AdvlabError
from advlab.prototypes import Config, recognition_points
from advlab.work import Work


@pytest.mark.parametrize("start, n_starts", [("blank:gray", 1), ("noise:gaussian", 1), ("digits:test", 3)])
def test_min_mode_reaches_every_digit_and_records_recognition_points(digits, start: str, n_starts: int) -> None:
    run = prototypes.generate(digits, start, "all", Config(mode="min", steps=200), limit=3)
    ev = run.evolution
    assert len(ev.target) == 10 * n_starts and ev.target.tolist() == list(range(10)) * n_starts
    assert ev.start.tolist() == [s for s in range(n_starts) for _ in range(10)]
    # every target reached with p >= 0.99, and the prototype really is classified so
    assert (ev.final_prob >= 0.99).all()
    with torch.no_grad():
        p = digits(ev.x).softmax(1)
    assert (p.argmax(1) == ev.target).all() and (p.gather(1, ev.target[:, None]).squeeze(1) >= 0.99).all()
    assert torch.allclose(p.gather(1, ev.target[:, None]).squeeze(1), ev.final_prob, atol=1e-5)
    # converged: the gradient fell below the tolerance, and the pair stopped there
    assert ev.converged.all() and (ev.final_grad_norm < 1e-4).all() and (ev.stopped < 200).all()
    rp = recognition_points(ev)
    assert (rp["top1_step"] >= 0).all() and (rp["p99_step"] >= 0).all()
    assert (rp["p50_step"] <= rp["p90_step"]).all() and (rp["p90_step"] <= rp["p99_step"]).all()
    # the recorded step is the first one: before it the target was not top-1
    for i in range(len(ev.target)):
        s = int(rp["top1_step"][i])
        assert ev.top1[i, s] == ev.target[i] and (ev.top1[i, :s] != ev.target[i]).all()
        assert rp["top1_l2"][i] == ev.l2[i, s]
    # starts already of the target class are recognized at step 0, at distance 0; the others later and further
    fresh = rp["top1_step"] > 0
    assert fresh.sum() >= 9 * n_starts and (rp["top1_l2"][fresh] > 0).all()
    # distances are measured from the start image, and the images stay in [0, 1]
    x0 = run.starts.x[ev.start]
    assert torch.allclose(ev.l2[torch.arange(len(ev.target)), ev.final], (ev.x - x0).flatten(1).norm(dim=1), atol=1e-4)
    assert float(ev.x.min()) >= 0 and float(ev.x.max()) <= 1


def test_batches_do_not_change_results_and_converged_pairs_stop(digits) -> None:
    cfg = Config(steps=150)
    whole = prototypes.generate(digits, "digits:test", "all", cfg, limit=2, batch_size=20).evolution
    split = prototypes.generate(digits, "digits:test", "all", cfg, limit=2, batch_size=7).evolution  # -> 7-pair batches
    assert torch.allclose(whole.x, split.x, atol=1e-6) and torch.equal(whole.stopped, split.stopped)
    # after a pair stops, its recorded values stay put
    i = int(whole.stopped.argmin())
    s = int(whole.stopped[i])
    assert (whole.prob[i, s:] == whole.prob[i, s]).all() and (whole.l2[i, s:] == whole.l2[i, s]).all()


@pytest.mark.parametrize("recipe", ["adversarial", "natural", "natural-phase"])
def test_shards_of_batches_merge_to_the_whole_run(digits, recipe: str) -> None:
    cfg = {
        "adversarial": Config(steps=40, jitter=1),
        "natural": prototypes.recipe("natural", digits, steps=40),
        "natural-phase": prototypes.recipe("natural", digits, steps=40, param="phase", transforms_per_step=2),
    }[recipe]
    whole = prototypes.generate(digits, "digits:test", "all", cfg, limit=3, batch_size=10)
    shards: dict[int, prototypes.Evolution] = {}
    for rank in (1, 0):  # each "rank" evolves its own batches, in any order; jitter is seeded by the batch index
        work = Work(in_shard=lambda b, r=rank: b % 2 == r, on_done=lambda b, ev: shards.__setitem__(b, ev))
        part = prototypes.generate(digits, "digits:test", "all", cfg, limit=3, batch_size=10, work=work)
        assert len(part.evolution.target) == 10 * (2 - rank)
    seen: list[list[int]] = []
    progress = lambda units: seen.append(list(units)) or seen[-1]  # noqa: E731
    merged = prototypes.generate(
        digits,
        "digits:test",
        "all",
        cfg,
        limit=3,
        batch_size=10,
        work=Work(done={b: shards[b] for b in (2, 1, 0)}, progress=progress),
    )
    assert seen == [[]]  # every batch was given: nothing computed again
    a, b = merged.evolution.tensors(), whole.evolution.tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # resuming from batch 0 computes only batches 1 and 2 (through the progress wrapper), same result
    seen.clear()
    resumed = prototypes.generate(
        digits, "digits:test", "all", cfg, limit=3, batch_size=10, work=Work(done=[shards[0]], progress=progress)
    )
    assert seen == [[1, 2]] and torch.equal(resumed.x, whole.x)
    with pytest.raises(AdvlabError, match="resume with the same --batch-size"):
        prototypes.generate(digits, "digits:test", "all", cfg, limit=3, batch_size=20, work=Work(done={0: shards[0]}))
    assert prototypes.pairs_per_batch(25, 10) == 20 and prototypes.pairs_per_batch(7, 10) == 7


def test_targets() -> None:
    names = [f"c{i}" for i in range(10)]
    assert prototypes.parse_targets("all", 10) == list(range(10))
    assert prototypes.parse_targets("2-4,7", 10) == [2, 3, 4, 7]
    assert prototypes.parse_targets("c3,1", 10, names) == [3, 1]
    assert prototypes.parse_targets(torch.tensor([5, 6]), 10) == [5, 6]
    for bad, msg in (("10", "out of range"), ("5-3", "empty"), ("x", "unknown target"), ("1,1", "repeat")):
        with pytest.raises(AdvlabError, match=msg):
            prototypes.parse_targets(bad, 10, names)


def test_auto_batch_size_scales_with_the_budget(digits) -> None:
    x = torch.rand(1, 1, 8, 8)
    small = prototypes.auto_batch_size(digits, x, budget=1 << 20)
    big = prototypes.auto_batch_size(digits, x, budget=1 << 22)
    assert 1 <= small < big <= prototypes.MAX_BATCH and big >= 3 * small
    assert prototypes.auto_batch_size(digits, x, "max", budget=1 << 22) < big


def test_bad_settings(digits) -> None:
    for cfg, msg in (
        (Config(mode="mid"), "mode"),
        (Config(method="fgsm"), "method"),
        (Config(eps=0), "eps"),
        (Config(steps=0), "steps"),
        (Config(tv=1.0, objective=prototypes.cross_entropy()), "tv applies to the default objective"),
    ):
        with pytest.raises(AdvlabError, match=msg):
            prototypes.generate(digits, "blank:gray", "all", cfg)
    with pytest.raises(AdvlabError, match="in \\[0, 1\\]"):
        prototypes.generate(digits, torch.full((1, 1, 8, 8), 2.0), "all")
    with pytest.raises(AdvlabError, match="needs a zoo model"):
        prototypes.generate(torch.nn.Flatten(), "blank:gray", "all")


def test_start_tensors_on_a_model_without_parameters() -> None:
    """A parameter-free model (the 4 pixels are its logits) works: its device comes from device_of, and
    minimizing CE towards class k raises pixel k."""
    run = prototypes.generate(
        torch.nn.Flatten(), torch.full((1, 1, 2, 2), 0.5), "all", Config(steps=30, alpha=0.02), batch_size=4
    )
    ev = run.evolution
    assert ev.target.tolist() == [0, 1, 2, 3] and run.starts.kind == "tensor"
    assert (ev.x.flatten(1).argmax(1) == ev.target).all() and (ev.final_top1 == ev.target).all()


@pytest.mark.slow  # efficientnet-lite0 end to end: ~35 s on a busy 2-core machine
def test_efficientnet_lite0_reaches_ten_classes_from_gray() -> None:
    model = zoo.load("efficientnet-lite0")
    ev = prototypes.generate(model, "blank:gray", "0-9", Config(steps=35, alpha=2 / 255), batch_size=10).evolution
    with torch.no_grad():
        p = model(ev.x).softmax(1)
    assert (p.argmax(1) == ev.target).all()
    assert (ev.final_prob >= 0.99).all()


def test_svhn_images_start_towards_another_model_s_classes(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Seed 000's log-name example (resnet18_imagenet-min-svhn): official-format SVHN images are fitted to the
    model (size, channels) and alienated towards its classes, whatever their own labels."""
    import numpy as np

    from tests.data.test_official import write_svhn

    rng = np.random.default_rng(0)
    write_svhn(tmp_path / "svhn" / "test_32x32.mat", rng.integers(0, 256, (2, 3, 32, 32), dtype=np.uint8), [3, 10])
    monkeypatch.setenv("ADVLAB_DATA", str(tmp_path))
    starts = prototypes.parse_start("svhn:test", 3, 224)
    assert starts.x.shape == (2, 3, 224, 224) and starts.kind == "svhn" and starts.labels.tolist() == [3, 0]
    gray = prototypes.parse_start("svhn:test", 1, 8)  # into the 8x8 grey digits model
    run = prototypes.generate(zoo.load("digits-cnn"), gray, "0-9", Config(steps=150))
    assert run.evolution.start.tolist() == [0] * 10 + [1] * 10 and (run.evolution.final_prob >= 0.99).all()


def test_generate_each_evolves_the_same_pairs_per_config_as_units_of_one_loop(digits) -> None:
    """Two configs over 2 batches each: units 0-1 are the first config's, 2-3 the second's; each config's
    prototypes equal its own generate, and a Work that computes only the second config's units leaves the first
    None."""
    first, second = Config(steps=10), Config(steps=10, method="pgdl2")
    seen: dict[int, prototypes.Evolution] = {}
    work = Work(on_done=lambda u, ev: seen.__setitem__(u, ev))
    both = prototypes.generate_each(digits, "blank:gray", "0-3", [first, second], batch_size=2, work=work)
    assert sorted(seen) == [0, 1, 2, 3]
    for got, config in zip(both, (first, second), strict=True):
        alone = prototypes.generate(digits, "blank:gray", "0-3", config, batch_size=2)
        assert got is not None and got.config == config and torch.equal(got.x, alone.x)
    shard = Work(in_shard=lambda u: u >= 2)
    part = prototypes.generate_each(digits, "blank:gray", "0-3", [first, second], batch_size=2, work=shard)
    assert part[0] is None and part[1] is not None and torch.equal(part[1].x, both[1].x)
