"""One robust accuracy: ``advlab eval``, ``advlab attack`` and ``advlab study prune`` report the same number for
the same model, data, attack and seed (all three compute it with :func:`advlab.evaluation.metrics.robust_accuracy`:
correct on the clean AND on the adversarial input, over the labelled samples; PGD's random starts depend only on
the image, the seed and the restart, so every command's batches get the same starts)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from advlab import zoo
from tests.cli.helpers import run_cli

SAME = [
    "--model",
    "digits-cnn",
    "--data",
    "digits:test",
    "--limit",
    "200",
    "--attack",
    "pgd",
    "--eps",
    "0.1",
    "--steps",
    "10",
    "--seed",
    "0",
    "--json",
    "-q",
]


def _run(argv: list[str]) -> dict | list:
    rc, stdout, err = run_cli(argv)
    assert rc == 0, err
    return json.loads(stdout)


def test_eval_attack_and_study_report_the_same_robust_accuracy(tmp_path: Path) -> None:
    # three batch sizes: the cascade attacks the clean-correct subset of batches of 200, the attack batches of
    # 64, the study all 200 at once; the same image gets the same start in every one
    ev = _run(["eval", *SAME, "--batch-size", "200", "--out", str(tmp_path / "eval")])
    atk = _run(["attack", *SAME, "--batch-size", "64", "--out", str(tmp_path / "attack")])
    rows = _run(
        [
            "study",
            "prune",
            *SAME,
            "--batch-size",
            "256",
            "--defense",
            "e",
            "--settings",
            "e=1e-4",
            "--out",
            str(tmp_path / "study"),
        ]
    )
    assert isinstance(ev, dict) and isinstance(atk, dict) and isinstance(rows, list)
    base = rows[0]
    assert base["defense"] == "none"
    pgd = next(a for a in ev["per_attack"] if a["attack"] == "pgd")
    assert ev["clean_accuracy"] == atk["clean_accuracy"] == base["clean_accuracy"]
    assert pgd["robust_accuracy_after"] == atk["robust_accuracy"] == base["robust_accuracy"]
    # what the evaluation's checks and remedies (noise check, longer runs, gradient-free stage) broke beyond PGD
    extra = sum(a["broken"] for a in ev["per_attack"] if a["attack"] != "pgd")
    assert ev["robust_accuracy"] == pytest.approx(atk["robust_accuracy"] - extra / 200, abs=1e-12)
    assert 0.1 < atk["robust_accuracy"] < atk["clean_accuracy"] - 0.2  # the attack did something, not everything
    # the number is what the adversarial examples really do to the model
    t = load_file(str(tmp_path / "attack" / "adversarials.safetensors"))
    x, x_adv, y = t["x"], t["x_adv"], t["y"]
    assert float((x_adv - x).abs().amax()) <= 0.1 + 1e-6
    model = zoo.load("digits-cnn")
    with torch.no_grad():
        robust = (model(x).argmax(1) == y) & (model(x_adv).argmax(1) == y)
    assert atk["robust_accuracy"] == float(robust.sum()) / len(y)
