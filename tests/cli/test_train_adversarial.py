"""``advlab train --adversarial ...``: the run directory, the per-epoch log, Ctrl-C + --resume to the same bits, bad
input.

One short adversarial run (PGD-2, 3 epochs, 300 digits) is shared by the tests that read its files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import advlab.cli.train as train_cmd
from advlab import data, zoo
from advlab.cli import parser
from advlab.defenses.training import accuracy
from tests.cli.helpers import run_cli

ARGS = [
    "train",
    "--adversarial",
    "pgd",
    "--adv-steps",
    "2",
    "--epochs",
    "3",
    "--limit",
    "300",
    "--robust-limit",
    "100",
    "--quiet",
]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may land in the repository's runs/


@pytest.fixture(scope="module")
def adv_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("advtrain") / "run"
    rc, stdout, err = run_cli([*ARGS, "--out", str(out)])
    assert rc == 0, err
    assert err == ""  # --quiet
    assert "robust accuracy" in stdout and "weights.safetensors" in stdout
    return out


def test_adversarial_run_writes_everything(adv_run: Path) -> None:
    out = adv_run
    for name in (
        "weights.safetensors",
        "metrics.json",
        "config.json",
        "history.json",
        "metrics.csv",
        "loss.png",
        "eval_accuracy.png",
        "report.html",
    ):
        assert (out / name).is_file(), name
    assert (
        not list(out.glob("checkpoint*")) and not (out / "INTERRUPTED.json").exists()
    )  # a finished run holds results, not state
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 3 and m["train_samples"] == 300 and m["seconds"] > 0
    assert m["adversarial"] == {
        "method": "pgd",
        "eps": 0.1,
        "norm": "linf",
        "steps": 2,
        "alpha": pytest.approx(0.125),
        "clean_weight": 0.0,
        "gamma": 1.0,
        "logit_pairing": 0.0,
        "attack_mode": "eval",
    }
    assert 0 <= m["robust_accuracy"] <= m["robust_eval"]["clean_accuracy"] <= 1
    assert m["robust_eval"]["preset"] == "fast" and m["robust_eval"]["images"] == 100 and m["robust_eval"]["eps"] == 0.1
    # the saved weights reproduce the clean accuracy
    model = zoo.load("digits-cnn", weights=str(out / "weights.safetensors"))
    x, y = data.load("digits:test")
    assert accuracy(model, x, y) == m["clean_accuracy"] == m["eval_accuracy"]
    assert accuracy(model, x[:100], y[:100]) == m["robust_eval"]["clean_accuracy"]
    # the per-epoch log: history.json and metrics.csv agree
    h = json.loads((out / "history.json").read_text())
    assert len(h["loss"]) == len(h["eval_accuracy"]) == len(h["robust_accuracy_pgd10"]) == len(h["seconds"]) == 3
    rows = list(csv.DictReader((out / "metrics.csv").read_text().splitlines()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert set(rows[0]) == {"epoch", "loss", "eval_accuracy", "robust_accuracy_pgd10", "seconds"}
    assert [float(r["loss"]) for r in rows] == h["loss"]
    assert [float(r["robust_accuracy_pgd10"]) for r in rows] == h["robust_accuracy_pgd10"]
    assert h["eval_accuracy"][-1] == m["clean_accuracy"]
    assert "robust_accuracy" in (out / "report.html").read_text()


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, epoch: int) -> None:
    """Make ``advlab train`` stop with Ctrl-C right after epoch ``epoch`` (0-based) was checkpointed."""
    real_fit = train_cmd.fit

    def fit(*a: Any, on_epoch: Any, **k: Any) -> Any:
        def cb(e: int, state: Any) -> None:
            on_epoch(e, state)
            if e == epoch:
                raise KeyboardInterrupt

        return real_fit(*a, on_epoch=cb, **k)

    monkeypatch.setattr(train_cmd, "fit", fit)


def test_ctrl_c_keeps_a_checkpoint_and_resume_gives_the_same_bits(
    adv_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    partial = tmp_path / "run.partial"
    with monkeypatch.context() as mp:
        _interrupt_after(mp, 1)
        rc, _, err = run_cli([*ARGS, "--out", str(out)])
    assert rc == 130 and "resume" in err
    assert not out.exists() and (partial / "INTERRUPTED.json").is_file()
    assert (partial / "checkpoint_epoch0002.safetensors").is_file() and (
        partial / "checkpoint_epoch0002.json"
    ).is_file()
    assert not (partial / "checkpoint_epoch0001.json").exists()  # only the newest is kept
    assert len(json.loads((partial / "history.json").read_text())["loss"]) == 2  # the log so far
    assert "interrupted after 2 of 3 epochs" in (partial / "report.html").read_text()
    # without --resume the partial run is refused; with it, training continues from epoch 3
    rc, _, err = run_cli([*ARGS, "--out", str(out)])
    assert rc == 2 and "--resume" in err
    rc, stdout, err = run_cli([*ARGS, "--out", str(out), "--resume"])
    assert rc == 0, err
    assert "resuming" in stdout and "after epoch 2 of 3" in stdout
    assert not partial.exists() and not list(out.glob("checkpoint*"))
    a, b = load_file(str(adv_run / "weights.safetensors")), load_file(str(out / "weights.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit for bit
    ha, hb = (json.loads((d / "history.json").read_text()) for d in (adv_run, out))
    assert {k: v for k, v in ha.items() if k != "seconds"} == {k: v for k, v in hb.items() if k != "seconds"}
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (adv_run, out))
    assert mb["resumed_after_epoch"] == 2 and mb["robust_accuracy"] == ma["robust_accuracy"]
    # a finished run is left alone by --resume
    rc, stdout, _ = run_cli([*ARGS, "--out", str(out), "--resume"])
    assert rc == 0 and "complete already" in stdout


def test_resume_with_other_settings_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    with monkeypatch.context() as mp:
        _interrupt_after(mp, 0)
        rc, _, _ = run_cli([*ARGS, "--out", str(out)])
    assert rc == 130
    rc, _, err = run_cli([*ARGS, "--out", str(out), "--resume", "--eps", "0.2"])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "other settings" in err
    assert (tmp_path / "run.partial" / "checkpoint_epoch0001.json").is_file()  # the checkpoint survives the refusal


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--adversarial", "pgd", "--eps", "0"], "--eps must be in (0, 1]"),
        (["--adversarial", "pgd", "--eps=-8/255"], "--eps must be in (0, 1]"),
        (["--adversarial", "pgd", "--eps", "1.5"], "--eps must be in (0, 1]"),
        (["--adversarial", "cw"], "invalid choice"),
        (["--logit-pairing", "0.5"], "--logit-pairing needs --adversarial"),
        (["--adversarial", "pgd", "--gamma", "-1"], "gamma must be"),
        (["--adversarial", "pgd", "--adv-alpha", "0"], "--adv-alpha must be positive"),
        (["--adversarial", "pgd", "--adv-steps", "0"], "must be >= 1"),
        (["--adversarial", "pgd", "--eps", "x"], "not a number"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "bad"
    rc, stdout, err = run_cli(["train", "--epochs", "1", "--limit", "20", "--out", str(out), *extra])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err and stdout == ""
    assert not out.exists() and not (tmp_path / "bad.partial").exists()


def test_eps_takes_fractions_and_defaults_to_0_1_on_digits() -> None:
    args = parser().parse_args(["train", "--adversarial", "fgsm-rs", "--eps", "8/255"])
    assert args.eps == 8 / 255 and args.adversarial == "fgsm-rs"
    assert train_cmd._EPS_FOR["digits"] == 0.1 and parser().parse_args(["train"]).eps is None


def test_logit_pairing_run_records_its_objective(tmp_path: Path) -> None:
    out = tmp_path / "alp"
    rc, _, err = run_cli(
        [
            "train",
            "--adversarial",
            "fgsm-rs",
            "--logit-pairing",
            "0.5",
            "--gamma",
            "0.5",
            "--eps",
            "8/255",
            "--epochs",
            "1",
            "--limit",
            "64",
            "--robust-eval",
            "none",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["adversarial"]["clean_weight"] == 1.0
        and m["adversarial"]["gamma"] == 0.5
        and m["adversarial"]["logit_pairing"] == 0.5
    )
    assert m["adversarial"]["eps"] == 8 / 255 and m["adversarial"]["alpha"] == pytest.approx(1.25 * 8 / 255)
    assert "robust_accuracy" not in m  # --robust-eval none
    assert json.loads((out / "config.json").read_text())["train_config"]["logit_pairing"] == 0.5


def test_default_run_name_says_what_was_trained(tmp_path: Path) -> None:
    rc, stdout, err = run_cli(
        [
            "train",
            "--adversarial",
            "pgd",
            "--adv-steps",
            "1",
            "--epochs",
            "1",
            "--limit",
            "32",
            "--robust-eval",
            "none",
            "--quiet",
        ]
    )
    assert rc == 0, err
    assert (tmp_path / "runs" / "train_digits-cnn_digits_seed0_pgd1_e1e-1" / "weights.safetensors").is_file()
