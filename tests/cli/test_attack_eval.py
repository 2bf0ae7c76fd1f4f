"""``advlab attack`` and ``advlab eval``: run directories that hold what they claim, one-line errors, resume."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from advlab import zoo
from advlab.threat import distance
from tests.cli.helpers import run_cli

DIGITS = ["--model", "digits-cnn", "--data", "digits:test", "--limit", "48"]


def test_attack_writes_a_run_directory_whose_files_agree(tmp_path: Path) -> None:
    out = tmp_path / "pgd"
    rc, stdout, err = run_cli(
        [
            "attack",
            *DIGITS,
            "--attack",
            "pgd",
            "--eps",
            "26/255",
            "--steps",
            "10",
            "--quantize",
            "--batch-size",
            "20",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0, err
    metrics = json.loads(stdout)
    assert metrics == json.loads((out / "metrics.json").read_text())
    assert {"config.json", "metrics.json", "samples.csv", "adversarials.safetensors", "grid.png", "report.html"} <= {
        p.name for p in out.iterdir()
    }
    assert not list(out.glob("batch_*"))  # state is gone once the results are written
    t = load_file(str(out / "adversarials.safetensors"))
    x, x_adv, y = t["x"], t["x_adv"], t["y"]
    assert len(x) == 48 and (distance(x_adv - x, "linf") <= 26 / 255 + 1e-6).all()
    model = zoo.load("digits-cnn")
    with torch.no_grad():
        pred, clean = model(x_adv).argmax(1), model(x).argmax(1)
    correct = clean == y
    assert metrics["success_rate"] == pytest.approx(float((pred[correct] != y[correct]).float().mean()))
    assert 0.3 < metrics["success_rate"] and metrics["robust_accuracy"] < metrics["clean_accuracy"]
    rows = list(csv.DictReader((out / "samples.csv").open()))
    assert len(rows) == 48 and [int(r["adv_pred"]) for r in rows] == pred.tolist()
    # the PNGs are 8-bit files that stay adversarial when read back (--quantize)
    pngs = sorted((out / "adversarials").glob("*.png"))
    assert len(pngs) == 48
    back = torch.stack([torch.from_numpy(__import__("numpy").array(Image.open(p))).float()[None] / 255 for p in pngs])
    assert torch.equal(back, x_adv)
    with torch.no_grad():
        assert torch.equal(model(back).argmax(1), pred)


def test_targeted_attack_and_a_robustness_curve(tmp_path: Path) -> None:
    rc, stdout, err = run_cli(
        [
            "attack",
            *DIGITS,
            "--attack",
            "pgd",
            "--eps",
            "0.3",
            "--steps",
            "20",
            "--target",
            "3",
            "--out",
            str(tmp_path / "t"),
            "--json",
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    assert m["targeted"] and m["success_rate"] > 0.8 and m["target_probability_mean"] > 0.5
    rc, stdout, err = run_cli(
        [
            "attack",
            *DIGITS,
            "--attack",
            "pgd",
            "--eps",
            "0.05,0.1,0.2",
            "--steps",
            "10",
            "--out",
            str(tmp_path / "c"),
            "--json",
        ]
    )
    assert rc == 0, err
    curve = json.loads(stdout)["curve"]
    assert [c["eps"] for c in curve] == [0.05, 0.1, 0.2]
    acc = [c["robust_accuracy"] for c in curve]
    assert acc[0] >= acc[1] >= acc[2] and acc[0] > acc[2]
    assert (tmp_path / "c" / "curve.png").exists()


def test_eval_prints_metrics_and_writes_the_run(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    rc, stdout, err = run_cli(["eval", *DIGITS, "--attack", "fgsm,pgd", "--eps", "0.1", "--out", str(out), "--json"])
    assert rc == 0, err
    m = json.loads(stdout)
    assert 0 < m["robust_accuracy"] < m["clean_accuracy"] and [a["attack"] for a in m["per_attack"]][:2] == [
        "fgsm",
        "pgd",
    ]
    assert json.loads((out / "metrics.json").read_text())["robust_accuracy"] == m["robust_accuracy"]
    rows = list(csv.DictReader((out / "samples.csv").open()))
    broken = [r for r in rows if r["broken_by"]]
    assert len(broken) == round((m["clean_accuracy"] - m["robust_accuracy"]) * 48)
    rc, text, _ = run_cli(["eval", *DIGITS, "--attack", "pgd", "--eps", "0.1", "--out", str(tmp_path / "ev2")])
    assert rc == 0 and "robust accuracy" in text and "gradient evaluations" in text


def test_eval_resumes_an_interrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advlab.evaluation import cascade

    out = tmp_path / "r"
    args = ["eval", *DIGITS, "--attack", "pgd", "--eps", "0.1", "--batch-size", "16", "--active-test", "0"]
    args += ["--out", str(out), "--json"]  # (the active test runs the cascade too: no call of its own to count)
    real = cascade.run_batch
    calls = {"n": 0}

    def interrupted(*a, **k):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(cascade, "run_batch", interrupted)
    rc, _, err = run_cli(args)
    assert rc == 130 and "--resume" in err
    partial = tmp_path / "r.partial"
    assert (partial / "batch_00000.safetensors").exists() and (partial / "batch_00001.safetensors").exists()
    calls["n"] = -100
    rc, stdout, err = run_cli([*args, "--resume"])
    assert rc == 0, err
    monkeypatch.setattr(cascade, "run_batch", real)
    rc, fresh, _ = run_cli([*args[:-3], "--out", str(tmp_path / "fresh"), "--json"])
    assert json.loads(stdout)["robust_accuracy"] == json.loads(fresh)["robust_accuracy"]
    assert calls["n"] == -100 + 1  # only the third batch was evaluated again


def test_attack_resumes_an_interrupted_run_to_the_same_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advlab import attacks

    args = ["attack", *DIGITS, "--attack", "pgd", "--eps", "0.1", "--steps", "5", "--batch-size", "16", "--json"]
    rc, fresh, err = run_cli([*args, "--out", str(tmp_path / "fresh")])
    assert rc == 0, err
    real = attacks.PGD.__call__
    calls = {"n": 0}

    def interrupted(self, *a, **k):  # noqa: ANN001, ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(attacks.PGD, "__call__", interrupted)
    out = tmp_path / "r"
    rc, _, err = run_cli([*args, "--out", str(out)])
    assert rc == 130 and "--resume" in err and not out.exists()
    assert sorted(p.name for p in (tmp_path / "r.partial").glob("batch_*.safetensors")) == [
        "batch_00000.safetensors",
        "batch_00001.safetensors",
    ]
    calls["n"] = -100
    rc, resumed, err = run_cli([*args, "--out", str(out), "--resume"])
    assert rc == 0, err
    assert calls["n"] == -100 + 1  # only the third batch was attacked again
    a, b = json.loads(resumed), json.loads(fresh)
    assert {k: v for k, v in a.items() if k != "seconds"} == {k: v for k, v in b.items() if k != "seconds"}
    ta, tb = (
        load_file(str(out / "adversarials.safetensors")),
        load_file(str(tmp_path / "fresh" / "adversarials.safetensors")),
    )
    assert torch.equal(ta["x_adv"], tb["x_adv"])
    assert not list(out.glob("batch_*"))


@pytest.mark.slow  # bfloat16 is emulated on CPUs without AVX512-BF16/AMX: ~100 s on a busy 2-core AVX2 machine
def test_eval_with_amp_channels_last_and_a_memory_sized_batch(tmp_path: Path) -> None:
    base = ["eval", *DIGITS, "--attack", "pgd", "--eps", "0.1", "--steps", "10", "--json"]
    rc, plain, err = run_cli([*base, "--out", str(tmp_path / "plain")])
    assert rc == 0, err
    out = tmp_path / "fast"
    rc, fast, err = run_cli([*base, "--amp", "--channels-last", "--batch-size", "auto", "--out", str(out)])
    assert rc == 0, err
    m, p = json.loads(fast), json.loads(plain)
    assert "bfloat16" in json.loads((out / "metrics.json").read_text())["amp"]
    assert isinstance(json.loads((out / "config.json").read_text())["batch_size"], int)
    assert (
        abs(m["robust_accuracy"] - p["robust_accuracy"]) <= 0.15
    )  # the strength effect is measured in benchmarks/amp_strength.py
    t = load_file(str(out / "adversarials.safetensors"))
    model = zoo.load("digits-cnn")
    with torch.no_grad():
        pred = model(t["x_adv"]).argmax(1)  # float32: every success --amp counts is real
    broken = t["broken_by"] >= 0
    assert broken.any() and (pred[broken] != t["clean_pred"][broken]).all()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["attack", *DIGITS, "--attack", "pgd", "--eps", "-0.1"], "eps must be positive"),
        (["attack", *DIGITS, "--attack", "pgd", "--steps", "0"], "must be >= 1"),
        (["attack", *DIGITS, "--attack", "nope"], "unknown attack 'nope'"),
        (["attack", *DIGITS, "--attack", "pgd", "--target", "10"], "out of range"),
        (["attack", *DIGITS, "--attack", "fgsm", "--kappa", "2"], "fgsm takes no kappa"),
        (["attack", *DIGITS, "--attack", "pgd", "--eps", "1.5"], "L-inf eps above 1"),
        (["eval", *DIGITS], "--eps is required"),
        (["eval", *DIGITS, "--eps", "0.1", "--steps", "3"], "preset fixes its own settings"),
        (["eval", *DIGITS, "--eps", "8/0"], "not a number"),
        (["eval", *DIGITS, "--eps", "0.5/255", "--amp"], "below 1/255"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    out = tmp_path / "never"
    rc, stdout, err = run_cli([*argv, "--out", str(out)])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists() and not (tmp_path / "never.partial").exists()
