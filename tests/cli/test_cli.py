"""Tests for the ``advlab`` commands, run in-process through ``advlab.cli.main``.

The expensive runs (EfficientNet-Lite0 on the sample photos, a short training run, the demo) are done
once per module and shared by the tests that check their results.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from advlab import data, zoo
from advlab.defenses.training import accuracy
from tests.cli.helpers import run_cli

CAT_CLASSES = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat"}


def snapshot(d: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(d)): (p.stat().st_mtime_ns, p.read_bytes()) for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's runs/


# ------------------------------------------------------------------------------------------ help
@pytest.mark.parametrize("argv", [["--help"], ["-h"], []])
def test_top_level_help(argv: list[str]) -> None:
    rc, out, err = run_cli(argv)
    assert rc == 0
    assert "examples:" in out
    for cmd in ("models", "data", "classify", "train", "demo"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["models", "data", "classify", "train", "demo"])
def test_subcommand_help(cmd: str) -> None:
    rc, out, _ = run_cli([cmd, "--help"])
    assert rc == 0
    assert "examples:" in out
    assert f"advlab {cmd}" in out


def test_version() -> None:
    from advlab import __version__

    rc, out, _ = run_cli(["--version"])
    assert rc == 0 and __version__ in out


# ------------------------------------------------------------------------------------------ models / data
def test_models_lists_the_zoo() -> None:
    rc, out, _ = run_cli(["models"])
    assert rc == 0
    assert "digits-cnn" in out and "efficientnet-lite0" in out
    for name in zoo.names():
        assert name in out


def test_models_json() -> None:
    rc, out, _ = run_cli(["models", "--json"])
    assert rc == 0
    rows = json.loads(out)
    by_name = {r["name"]: r for r in rows}
    assert [r["name"] for r in rows] == zoo.names()
    d = by_name["digits-cnn"]
    assert (d["input"], d["classes"], d["installed"]) == ("1x8x8", 10, True)
    e = by_name["efficientnet-lite0"]
    assert (e["input"], e["classes"], e["installed"]) == ("3x224x224", 1000, True)


def test_data_lists_specs() -> None:
    rc, out, _ = run_cli(["data"])
    assert rc == 0
    assert "digits" in out and "samples" in out and "tensors:FILE" in out
    rc, out, _ = run_cli(["data", "--json"])
    assert rc == 0
    assert [r["spec"] for r in json.loads(out)] == [s for s, _ in data.spec_names()]


def test_data_describe_digits_test_json() -> None:
    from sklearn.datasets import load_digits

    n_test = len(range(0, len(load_digits().target), 3))
    rc, out, _ = run_cli(["data", "digits:test", "--json"])
    assert rc == 0
    d = json.loads(out)
    assert d["count"] == n_test == 599
    assert (d["channels"], d["size"], d["num_classes"], d["dataset"]) == (1, [8, 8], 10, "digits")
    rc, out, _ = run_cli(["data", "samples"])
    assert rc == 0 and "imagenet" in out


# ------------------------------------------------------------------------------------------ classify (digits)
def test_classify_digits_json_matches_own_computation() -> None:
    rc, out, err = run_cli(["classify", "digits:test", "--model", "digits-cnn", "--limit", "20", "--json"])
    assert rc == 0, err
    assert err == ""  # --json: machine output only
    doc = json.loads(out)
    preds = doc["predictions"]
    assert len(preds) == 20

    model = zoo.load("digits-cnn")
    x, y = data.load("digits:test", limit=20)
    with torch.no_grad():
        probs = model(x).softmax(1)
    expect_top1 = float((probs.argmax(1) == y).float().mean())

    for i, p in enumerate(preds):
        assert p["image"] == f"digits:test[{i}]"
        assert p["label"] == int(y[i]) and p["label_name"] == str(int(y[i]))
        ps = [t["probability"] for t in p["top"]]
        assert len(ps) == 5  # default --top
        assert ps == sorted(ps, reverse=True)
        assert all(0.0 <= q <= 1.0 for q in ps)
        assert p["top"][0]["class"] == int(probs[i].argmax())
        assert p["top"][0]["probability"] == pytest.approx(float(probs[i].max()), abs=1e-5)
        assert len({t["class"] for t in p["top"]}) == len(ps)
    m = doc["metrics"]
    assert m["images"] == 20 and m["labelled"] == 20
    assert m["top1_accuracy"] == pytest.approx(expect_top1, abs=1e-6)  # float32 mean
    expect_top5 = float((probs.topk(5, 1).indices == y[:, None]).any(1).float().mean())
    assert m["top5_accuracy"] == pytest.approx(expect_top5, abs=1e-6)  # float32 mean


def test_classify_top_is_capped_by_num_classes_and_human_output() -> None:
    rc, out, _ = run_cli(["classify", "digits:test", "--model", "digits-cnn", "--limit", "2", "--top", "50", "--json"])
    assert rc == 0
    assert all(len(p["top"]) == 10 for p in json.loads(out)["predictions"])
    rc, out, _ = run_cli(["classify", "digits:test", "--model", "digits-cnn", "--limit", "3", "--top", "2"])
    assert rc == 0
    assert out.count("digits:test[") == 3
    assert "top-1 accuracy" in out


def test_classify_unlabelled_image_file(tmp_path: Path) -> None:
    from PIL import Image

    Image.new("L", (20, 20), 0).save(tmp_path / "blank.png")
    rc, out, err = run_cli(["classify", str(tmp_path / "blank.png"), "--model", "digits-cnn", "--top", "3", "--json"])
    assert rc == 0, err
    doc = json.loads(out)
    assert doc["predictions"][0]["image"] == "blank.png"
    assert doc["predictions"][0]["label"] is None
    assert doc["metrics"]["labelled"] == 0 and "top1_accuracy" not in doc["metrics"]


def test_classify_folder_class_names_are_not_silently_reinterpreted(tmp_path: Path) -> None:
    from PIL import Image

    for cls in ("cats", "dogs"):
        (tmp_path / "pets" / cls).mkdir(parents=True)
        Image.new("L", (8, 8), 40).save(tmp_path / "pets" / cls / "a.png")
    rc, out, err = run_cli(["classify", f"folder:{tmp_path / 'pets'}", "--model", "digits-cnn", "--json"])
    if rc == 2:  # refusing is fine: the folder's classes are not the model's
        assert len(err.strip().splitlines()) == 1
        return
    assert rc == 0, err
    preds = json.loads(out)["predictions"]
    assert [p["label_name"] for p in preds] == ["cats", "dogs"] or all(p["label"] is None for p in preds)


# ------------------------------------------------------------------------------------------ classify (photos)
@pytest.fixture(scope="module")
def samples_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    out = tmp_path_factory.mktemp("classify") / "samples-run"
    rc, stdout, err = run_cli(
        ["classify", "samples", "--model", "efficientnet-lite0", "--top", "3", "--json", "--out", str(out)]
    )
    assert rc == 0, err
    return out, json.loads(stdout), err


def test_classify_samples_top3(samples_run: tuple[Path, dict, str]) -> None:
    _, doc, err = samples_run
    assert err == ""
    preds = {p["image"]: p for p in doc["predictions"]}
    assert list(preds) == ["chelsea", "coffee", "rocket", "motorcycle"]
    for p in preds.values():
        assert len(p["top"]) == 3
        ps = [t["probability"] for t in p["top"]]
        assert ps == sorted(ps, reverse=True) and all(0 <= q <= 1 for q in ps)
    assert CAT_CLASSES & {t["name"] for t in preds["chelsea"]["top"]}
    assert preds["coffee"]["top"][0]["name"] == "espresso"
    assert preds["chelsea"]["label_name"] == "tabby" and preds["coffee"]["label"] == 967


def test_classify_out_writes_run_dir(samples_run: tuple[Path, dict, str]) -> None:
    out, doc, _ = samples_run
    for name in ("predictions.png", "predictions.json", "metrics.json", "report.html", "config.json"):
        assert (out / name).is_file(), name
    assert not out.with_name(out.name + ".partial").exists()
    assert json.loads((out / "predictions.json").read_text()) == doc["predictions"]
    assert json.loads((out / "metrics.json").read_text()) == doc["metrics"]
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"] == "efficientnet-lite0" and cfg["inputs"] == ["samples"] and cfg["top"] == 3
    assert "classify" in cfg["command"]
    assert (out / "predictions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert "predictions.png" in html


def test_classify_out_refuses_to_overwrite_then_force(samples_run: tuple[Path, dict, str]) -> None:
    out, doc, _ = samples_run
    before = snapshot(out)
    argv = ["classify", "samples", "--model", "efficientnet-lite0", "--top", "3", "--json", "--out", str(out)]
    rc, _, err = run_cli(argv)
    assert rc == 2
    assert "exists" in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]

    rc, _, err = run_cli([*argv, "--force"])
    assert rc == 0, err
    after = snapshot(out)
    assert set(after) == set(before)
    assert after["predictions.json"][1] == before["predictions.json"][1]  # same predictions
    assert after["config.json"][0] != before["config.json"][0]  # but a new run
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no .partial / trash left


# ------------------------------------------------------------------------------------------ train
@pytest.fixture(scope="module")
def train_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("train") / "digits-run"
    rc, stdout, err = run_cli(
        [
            "train",
            "--model",
            "digits-cnn",
            "--data",
            "digits:train",
            "--epochs",
            "2",
            "--limit",
            "300",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0, err
    assert err == ""  # --quiet
    assert "weights.safetensors" in stdout
    return out


def test_train_writes_weights_that_reproduce_eval_accuracy(train_run: Path) -> None:
    out = train_run
    for name in ("weights.safetensors", "metrics.json", "config.json", "report.html", "loss.png", "history.json"):
        assert (out / name).is_file(), name
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_samples"] == 300 and metrics["epochs"] == 2
    assert metrics["eval_data"] == "digits:test"
    history = json.loads((out / "history.json").read_text())
    assert len(history["loss"]) == 2 and history["eval_accuracy"][-1] == metrics["eval_accuracy"]

    model = zoo.load("digits-cnn", weights=str(out / "weights.safetensors"))
    x, y = data.load("digits:test")
    assert accuracy(model, x, y) == metrics["eval_accuracy"]
    xt, yt = data.load("digits:train", limit=300)
    assert accuracy(model, xt, yt) == metrics["train_accuracy"]
    # and they are not the shipped weights
    shipped = zoo.load("digits-cnn")
    assert any(
        not torch.equal(a, b) for a, b in zip(model.state_dict().values(), shipped.state_dict().values(), strict=True)
    )


def test_classify_with_trained_weights(train_run: Path) -> None:
    weights = train_run / "weights.safetensors"
    rc, out, err = run_cli(
        ["classify", "digits:test", "--model", "digits-cnn", "--weights", str(weights), "--limit", "30", "--json"]
    )
    assert rc == 0, err
    doc = json.loads(out)
    model = zoo.load("digits-cnn", weights=str(weights))
    x, y = data.load("digits:test", limit=30)
    assert doc["metrics"]["top1_accuracy"] == pytest.approx(accuracy(model, x, y), abs=1e-6)  # float32 mean
    with torch.no_grad():
        pred = model(x).argmax(1).tolist()
    assert [p["top"][0]["class"] for p in doc["predictions"]] == pred


def test_train_refuses_existing_out(train_run: Path) -> None:
    before = snapshot(train_run)
    rc, _, err = run_cli(["train", "--epochs", "1", "--limit", "20", "--out", str(train_run), "--quiet"])
    assert rc == 2 and "exists" in err
    assert snapshot(train_run) == before


# ------------------------------------------------------------------------------------------ attack
def test_a_robustness_curve_prints_every_eps(tmp_path: Path) -> None:
    args = [
        "attack",
        "--model",
        "digits-cnn",
        "--data",
        "digits:test",
        "--attack",
        "pgd",
        "--eps",
        "0.2,0.05,0.1",
        "--steps",
        "3",
        "--limit",
        "32",
        "--pngs",
        "0",
    ]
    rc, stdout, err = run_cli([*args, "--out", str(tmp_path / "c")])
    assert rc == 0, err
    curve = json.loads((tmp_path / "c" / "metrics.json").read_text())["curve"]
    lines = [ln.strip() for ln in stdout.splitlines() if ln.strip().startswith("eps ")]
    assert [ln.split(", median")[0] for ln in lines] == [
        f"eps {c['eps']:g}: robust accuracy {c['robust_accuracy']:.2%}, success {c['success_rate']:.2%}" for c in curve
    ]
    assert [c["eps"] for c in curve] == [0.05, 0.1, 0.2] and len(set(lines)) == 3


# ------------------------------------------------------------------------------------------ demo
def test_demo(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    threads = torch.get_num_threads()
    rc, stdout, err = run_cli(["demo", "--out", str(out)])
    assert rc == 0, err
    assert torch.get_num_threads() == threads  # the demo's thread count is its own
    assert json.loads((out / "config.json").read_text())["threads"] >= 1
    assert (out / "report.html").is_file() and (out / "config.json").is_file()
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["digits-cnn digits:test accuracy"] >= 0.97
    assert metrics["digits:test images"] == 599
    assert metrics["efficientnet-lite0 wombat attack success rate (linf 2/255, 8-bit)"] == 1.0  # research note 002
    assert metrics["efficientnet-lite0 wombat probability (min over photos)"] > 0.9
    assert (
        0 < metrics["digits-cnn robust accuracy (fast preset, linf 0.1)"] < metrics["digits-cnn digits:test accuracy"]
    )
    assert metrics["digits-cnn prototypes from blank:gray reaching p >= 0.99"] == 10  # research note 000
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert len(pngs) == 5 and "prototypes_digits-cnn.png" in pngs
    for p in pngs:
        assert (out / p).read_bytes()[:4] == b"\x89PNG"
        assert p in (out / "report.html").read_text()
    assert set(metrics["samples"]) == {"chelsea", "coffee", "rocket", "motorcycle"}
    page = (out / "report.html").read_text()
    assert "&quot;" not in page and "<td>chelsea</td><td>tabby</td>" in page  # samples: a sub-table, not cut JSON
    assert "<figcaption>Research note 002: every photo turned into a wombat" in page
    assert "<figcaption>wombat_" not in page
    assert "report.html" in stdout
    assert not (tmp_path / "demo.partial").exists()


def test_classify_mixes_photos_and_small_tensors_by_resizing(tmp_path: Path) -> None:
    """Photos come out at the model's 224; a 32x32 tensors file beside them is resized to match."""
    import numpy as np

    np.savez(tmp_path / "rgb32.npz", x=np.full((2, 3, 32, 32), 0.5, dtype=np.float32), y=np.array([1, 2]))
    rc, out, err = run_cli(
        ["classify", "samples", f"tensors:{tmp_path / 'rgb32.npz'}", "--model", "efficientnet-lite0", "--json"]
    )
    assert rc == 0, err
    preds = json.loads(out)["predictions"]
    assert len(preds) == 4 + 2
    assert [p["label"] for p in preds[-2:]] == [1, 2]
