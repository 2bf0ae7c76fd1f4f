"""``advlab eval --robustbench FILE``: a RobustBench-style model_info entry, consistent with metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import run_cli

ARGS = ["eval", "--model", "digits-cnn", "--data", "digits:test", "--limit", "64", "--preset", "fast", "--eps", "8/255", "-q"]


def test_robustbench_entry_matches_the_run(tmp_path: Path) -> None:
    rc, out, err = run_cli([*ARGS, "--out", str(tmp_path / "run"), "--robustbench", str(tmp_path / "entry.json")])
    assert rc == 0, err
    assert "(trust: high)" in out and "per image" in out
    entry = json.loads((tmp_path / "entry.json").read_text())
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert entry["name"] == "digits-cnn" and entry["dataset"] == "digits" and entry["threat_model"] == "Linf"
    assert entry["eps"] == "8/255" and entry["number_forward_passes"] == 1 and entry["n_examples"] == 64
    assert entry["clean_acc"] == f"{100 * metrics['clean_accuracy']:.2f}"
    assert entry["robust_acc"] == f"{100 * metrics['robust_accuracy']:.2f}"
    assert "autoattack_acc" not in entry  # advlab's number is not AutoAttack's
    assert entry["trust"] == metrics["trust"] == "high"
    assert entry["attack_backward_passes_per_image"] == metrics["backwards_per_image"] > 1  # the attacks took gradients
    assert len(entry["attacks"]) == 3 and entry["attacks"][0].startswith("APGD(") and "loss='dlr'" in entry["attacks"][1]
    assert entry["diagnostics"] == {"flags": [], "adaptations": []}


def test_robustbench_into_a_missing_directory_is_refused_before_any_work(tmp_path: Path) -> None:
    rc, _, err = run_cli([*ARGS, "--out", str(tmp_path / "run"), "--robustbench", str(tmp_path / "nope" / "entry.json")])
    assert rc == 2 and err.count("\n") == 1 and "--robustbench" in err
    assert not list(tmp_path.glob("run*"))
