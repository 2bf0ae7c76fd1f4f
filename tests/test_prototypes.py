"""Prototypes (seed 000): every digit class is reached from blank, noise and real digits; recognition points,
max vs min mode, regularizers, starts and targets, and the library's bookkeeping."""

from __future__ import annotations

import pytest
import torch

from advlab import prototypes, zoo
from advlab.errors import AdvlabError
from advlab.prototypes import Config, recognition_points


@pytest.fixture(scope="module")
def digits() -> torch.nn.Module:
    return zoo.load("digits-cnn")


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


def test_max_mode_ends_with_a_larger_gradient_than_min_mode(digits) -> None:
    for start in ("blank:gray", "digits:test"):
        lo = prototypes.generate(digits, start, "all", Config(mode="min", steps=100), limit=1).evolution
        hi = prototypes.generate(digits, start, "all", Config(mode="max", steps=100), limit=1).evolution
        assert (hi.final_grad_norm > lo.final_grad_norm).all()
        assert (hi.final_grad_norm > 100 * lo.final_grad_norm).float().mean() >= 0.9
        # the max-mode result is still the target (it is the best iterate classified as the target)
        with torch.no_grad():
            pred = digits(hi.x).argmax(1)
        assert (pred == hi.target).all()
        assert (hi.final_top1 == hi.target).all()


def test_l2_and_momentum_methods_and_the_eps_ball(digits) -> None:
    for method, norm in (("pgdl2", "l2"), ("mifgsm", "linf")):
        cfg = Config(method=method, eps=1.5 if norm == "l2" else 0.2, alpha=0.1 if norm == "l2" else 0.01, steps=60)
        ev = prototypes.generate(digits, "blank:gray", "0-4", cfg).evolution
        dist = ev.l2 if norm == "l2" else ev.linf
        assert (dist <= cfg.eps + 1e-4).all()
        assert (ev.final_top1 == ev.target).float().mean() >= 0.8


def test_same_seed_same_prototypes_and_regularizers_act(digits) -> None:
    cfg = Config(steps=40, jitter=1, seed=3)
    a = prototypes.generate(digits, "noise:uniform", "all", cfg).x
    b = prototypes.generate(digits, "noise:uniform", "all", cfg).x
    c = prototypes.generate(digits, "noise:uniform", "all", Config(steps=40, jitter=1, seed=4)).x
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = prototypes.generate(digits, "noise:uniform", "all", Config(steps=60)).x
    smooth = prototypes.generate(digits, "noise:uniform", "all", Config(steps=60, tv=2.0)).x
    blurred = prototypes.generate(digits, "noise:uniform", "all", Config(steps=60, blur=0.8)).x
    tv = prototypes.total_variation
    assert tv(smooth).mean() < 0.8 * tv(plain).mean()
    assert tv(blurred).mean() < 0.8 * tv(plain).mean()


def test_batches_do_not_change_results_and_converged_pairs_stop(digits) -> None:
    cfg = Config(steps=150)
    whole = prototypes.generate(digits, "digits:test", "all", cfg, limit=2, batch_size=20).evolution
    split = prototypes.generate(digits, "digits:test", "all", cfg, limit=2, batch_size=7).evolution  # -> 7-pair batches
    assert torch.allclose(whole.x, split.x, atol=1e-6) and torch.equal(whole.stopped, split.stopped)
    # after a pair stops, its recorded values stay put
    i = int(whole.stopped.argmin())
    s = int(whole.stopped[i])
    assert (whole.prob[i, s:] == whole.prob[i, s]).all() and (whole.l2[i, s:] == whole.l2[i, s]).all()


def test_shards_of_batches_merge_to_the_whole_run(digits) -> None:
    cfg = Config(steps=40, jitter=1)
    whole = prototypes.generate(digits, "digits:test", "all", cfg, limit=3, batch_size=10)
    shards: dict[int, prototypes.Evolution] = {}
    for rank in (1, 0):  # each "rank" evolves its own batches, in any order; jitter is seeded by the batch index
        part = prototypes.generate(digits, "digits:test", "all", cfg, limit=3, batch_size=10, units=lambda b, r=rank: b % 2 == r,
                                   on_batch=lambda b, ev: shards.__setitem__(b, ev))  # fmt: skip
        assert len(part.evolution.target) == 10 * (2 - rank)
    merged = prototypes.generate(digits, "digits:test", "all", cfg, limit=3, batch_size=10, done={b: shards[b] for b in (2, 1, 0)})
    a, b = merged.evolution.tensors(), whole.evolution.tensors()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(AdvlabError, match="resume with the same --batch-size"):
        prototypes.generate(digits, "digits:test", "all", cfg, limit=3, batch_size=20, done={0: shards[0]})
    assert prototypes.pairs_per_batch(25, 10) == 20 and prototypes.pairs_per_batch(7, 10) == 7


def test_snapshots_show_the_trajectory(digits) -> None:
    run = prototypes.generate(digits, "blank:gray", "all", Config(steps=30, snapshots=(0, 10, 30)), strip_pairs=[2, 5])
    ev = run.evolution
    assert ev.snapshot_steps == [0, 10, 30] and ev.snapshot_pairs.tolist() == [2, 5]
    assert ev.snapshots.shape == (2, 3, 1, 8, 8)
    assert torch.equal(ev.snapshots[:, 0], run.starts.x.expand(2, -1, -1, -1))
    assert torch.allclose(ev.snapshots[:, 2], ev.x[[2, 5]])
    d10 = (ev.snapshots[:, 1] - ev.snapshots[:, 0]).flatten(1).norm(dim=1)
    assert torch.allclose(d10, ev.l2[[2, 5], 10], atol=1e-5)


def test_starts() -> None:
    gray = prototypes.parse_start("blank:gray", 3, 16).x
    assert gray.shape == (1, 3, 16, 16) and torch.all(gray == 0.5)
    red = prototypes.parse_start("blank:255,0,0", 3, 4).x
    assert red[0, :, 0, 0].tolist() == [1.0, 0.0, 0.0]
    assert torch.all(prototypes.parse_start("blank:0.25", 1, 4).x == 0.25)
    g = prototypes.parse_start("noise:gaussian:0.5,0.1@4", 1, 32, seed=1).x
    assert g.shape == (4, 1, 32, 32) and abs(float(g.mean()) - 0.5) < 0.02 and abs(float(g.std()) - 0.1) < 0.02
    assert torch.equal(g, prototypes.parse_start("noise:gaussian:0.5,0.1@4", 1, 32, seed=1).x)
    u = prototypes.parse_start("noise:uniform:0.2,0.4", 3, 32).x
    assert float(u.min()) >= 0.2 and float(u.max()) <= 0.4
    photos = prototypes.parse_start("samples", 3, 32)
    assert photos.x.shape[1:] == (3, 32, 32) and photos.kind == "imagenet" and "coffee" in photos.names
    digits3 = prototypes.parse_start("digits:test", 3, 32, limit=2)  # fitted to the model: 8x8 grey -> 32x32 RGB
    assert digits3.x.shape == (2, 3, 32, 32) and digits3.kind == "digits"
    for bad in ("blank:", "blank:purple", "blank:2,3", "noise:pink", "noise:gaussian:1", "noise:uniform@0", "noise:uniform:0.5,0.1"):
        with pytest.raises(AdvlabError):
            prototypes.parse_start(bad, 3, 8)


def test_targets() -> None:
    names = [f"c{i}" for i in range(10)]
    assert prototypes.parse_targets("all", 10) == list(range(10))
    assert prototypes.parse_targets("2-4,7", 10) == [2, 3, 4, 7]
    assert prototypes.parse_targets("c3,1", 10, names) == [3, 1]
    assert prototypes.parse_targets(torch.tensor([5, 6]), 10) == [5, 6]
    for bad, msg in (("10", "out of range"), ("5-3", "empty"), ("x", "unknown target"), ("1,1", "repeat")):
        with pytest.raises(AdvlabError, match=msg):
            prototypes.parse_targets(bad, 10, names)


def test_inception_score_and_judges() -> None:
    eye = torch.eye(10)
    assert prototypes.inception_score(eye) == pytest.approx(10, rel=1e-6)
    assert prototypes.inception_score(eye[[3] * 10]) == pytest.approx(1, rel=1e-6)
    assert prototypes.inception_score(torch.full((5, 10), 0.1)) == pytest.approx(1, rel=1e-6)
    v = prototypes.judge(eye[[0, 1, 2, 2]], torch.tensor([0, 1, 2, 3]))
    assert v["top1_agreement"] == 0.75 and v["target_probability_mean"] == 0.75


def test_auto_batch_size_scales_with_the_budget(digits) -> None:
    x = torch.rand(1, 1, 8, 8)
    small = prototypes.auto_batch_size(digits, x, budget=1 << 20)
    big = prototypes.auto_batch_size(digits, x, budget=1 << 22)
    assert 1 <= small < big <= prototypes.MAX_BATCH and big >= 3 * small
    assert prototypes.auto_batch_size(digits, x, "max", budget=1 << 22) < big


def test_bad_settings(digits) -> None:
    for cfg, msg in ((Config(mode="mid"), "mode"), (Config(method="fgsm"), "method"), (Config(eps=0), "eps"), (Config(steps=0), "steps")):
        with pytest.raises(AdvlabError, match=msg):
            prototypes.generate(digits, "blank:gray", "all", cfg)
    with pytest.raises(AdvlabError, match="in \\[0, 1\\]"):
        prototypes.generate(digits, torch.full((1, 1, 8, 8), 2.0), "all")


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
