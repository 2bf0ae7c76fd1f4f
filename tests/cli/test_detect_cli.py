"""``advlab detect``: a run directory with metrics, ROC curves, detector weights and a report; one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.cli.helpers import run_cli

ARGS = [
    "detect",
    "--model",
    "digits-cnn",
    "--data-train",
    "digits:train",
    "--data",
    "digits:test",
    "--limit-train",
    "500",
    "--limit",
    "200",
    "--eps",
    "0.1",
    "--steps",
    "5",
]


def test_detect_writes_its_run_directory(tmp_path: Path) -> None:
    from safetensors import safe_open

    from advlab import zoo
    from advlab.defenses import Detector

    out = tmp_path / "det"
    rc, stdout, err = run_cli([*ARGS, "--out", str(out), "--json"])
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    assert json.loads(stdout) == m
    assert m["layer"] == "net.classifier.2" and m["calibration_images"] == 100 and m["train_clean"] == 400
    assert m["fpr_target"] == 0.05 and m["fpr_calibration"] <= 0.05 and 0 < m["threshold"] < 1
    labels = list(m["held_out"])
    assert labels == ["pgd@0.1 (training attack)", "pgd@0.05", "pgd@0.2", "fgsm@0.1", "deepfool"]
    for row in m["held_out"].values():
        assert 0 <= row["auc_all"] <= 1 and row["success_not_flagged"] <= row["success_rate"] + 1e-9
    first = m["held_out"][labels[0]]
    assert first["auc"] > 0.8  # a detector trained on 400 images still finds the same attack on the test split
    assert m["non_adaptive"]["success_not_flagged"] == first["success_not_flagged"]
    assert m["adaptive"]["success"] > m["non_adaptive"]["success_not_flagged"]
    assert "GuardedLoss(c=1.0, kappa=1.0)" in m["adaptive"]["attack"]
    assert (out / "roc.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "Held-out attacks" in page and "roc.png" in page and "detector.safetensors" in page
    with safe_open(str(out / "detector.safetensors"), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    assert meta["layer"] == "net.classifier.2" and float(meta["threshold"]) == m["threshold"]
    det = Detector.from_state(zoo.load("digits-cnn"), state, meta)  # the saved detector works again
    assert det.score(torch.rand(4, 1, 8, 8)).shape == (4,)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layer", "nope"], "unknown layer 'nope'"),
        (["--eps", "0"], "eps must be positive"),
        (["--eps=-0.1"], "eps must be positive"),
        (["--fpr", "1.5"], "--fpr must be in (0, 1)"),
        (["--calibration", "1"], "--calibration must be a fraction"),
        (["--held-out", "pgd@x"], "not a number"),
        (["--held-out", "nope"], "unknown attack 'nope'"),
        (["--attack", "deepfool"], "must be eps-bounded"),
        (["--hidden", "-1"], "--hidden must be >= 0"),
    ],
)
def test_detect_bad_input_is_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "bad"
    rc, _, err = run_cli([*ARGS, *extra, "--out", str(out)])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "bad.partial").exists()
