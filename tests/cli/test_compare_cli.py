"""``advlab compare``, ``advlab selftest`` and the distances ``advlab attack`` writes for a minimum-norm attack."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from advlab.experiments import known
from tests.cli.helpers import run_cli


def test_compare_writes_table_plot_and_json(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    rc, stdout, err = run_cli(
        [
            "compare",
            "--model",
            "digits-cnn",
            "--data",
            "digits:test",
            "--attacks",
            "fmn,ddn,deepfool",
            "--norm",
            "l2",
            "--budget",
            "120",
            "--limit",
            "10",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0, err
    assert "| fmn |" in stdout and "optimality" in stdout
    m = json.loads((out / "metrics.json").read_text())
    rows = {r["attack"]: r for r in m["attacks"]}
    assert set(rows) == {"fmn", "ddn", "deepfool"} and m["images"] == 10 and m["budget"] == 120
    assert max(r["optimality"] for r in rows.values()) <= 1 + 1e-9
    assert all(r["forwards"] + r["backwards"] <= 120 for r in rows.values())
    for name in ("optimality.md", "optimality.csv", "curves.png", "report.html"):
        assert (out / name).is_file(), name
    t = load_file(str(out / "distances.safetensors"))
    assert set(t) == {"reference", "fmn", "ddn", "deepfool"} and (t["fmn"] >= t["reference"]).all()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--attacks", "fmn,nope", "--norm", "l2"], "unknown attack 'nope'"),
        (["--attacks", "ddn", "--norm", "linf"], "ddn has no linf version"),
        (["--attacks", "fmn", "--norm", "l2", "--budget", "0"], "--budget: must be >= 1"),
        (["--attacks", "art:fmn", "--norm", "l2"], "art has no 'fmn'"),
    ],
)
def test_compare_bad_arguments_give_one_line_and_exit_2(tmp_path: Path, argv: list[str], message: str) -> None:
    rc, _, err = run_cli(
        [
            "compare",
            "--model",
            "digits-cnn",
            "--data",
            "digits:test",
            "--limit",
            "4",
            "--out",
            str(tmp_path / "x"),
            *argv,
        ]
    )
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "x").exists()


def test_attack_fmn_writes_distances_curve_and_area(tmp_path: Path) -> None:
    out = tmp_path / "fmn"
    rc, _, err = run_cli(
        [
            "attack",
            "--model",
            "digits-cnn",
            "--data",
            "digits:test",
            "--attack",
            "fmn",
            "--norm",
            "l2",
            "--steps",
            "40",
            "--limit",
            "12",
            "--pngs",
            "0",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    with (out / "distances.csv").open() as f:
        rows = list(csv.DictReader(f))
    d = [math.inf if r["distance"] == "inf" else float(r["distance"]) for r in rows]
    assert len(d) == 12 and m["distance_norm"] == "l2"
    assert m["eps_max"] == pytest.approx(max(v for v in d if math.isfinite(v)), rel=1e-5)
    correct = [r["clean_correct"] == "True" for r in rows]
    assert m["robust_accuracy_area"] == pytest.approx(
        sum(min(v, m["eps_max"]) for v, c in zip(d, correct, strict=True) if c) / 12, rel=1e-4
    )
    t = load_file(str(out / "distances.safetensors"))
    assert t["distance"].shape == (12,) and (out / "robust_curve.png").is_file()


def test_attack_with_an_eps_writes_no_distances(tmp_path: Path) -> None:
    out = tmp_path / "pgd"
    rc, _, err = run_cli(
        [
            "attack",
            "--model",
            "digits-cnn",
            "--data",
            "digits:test",
            "--attack",
            "pgd",
            "--eps",
            "0.1",
            "--limit",
            "4",
            "--pngs",
            "0",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0, err
    assert not (out / "distances.csv").exists() and "robust_accuracy_area" not in json.loads(
        (out / "metrics.json").read_text()
    )


def test_selftest_passes_and_fails_on_a_broken_attack(monkeypatch: pytest.MonkeyPatch) -> None:
    rc, out, err = run_cli(["selftest", "--attacks", "fmn,deepfool", "--n", "32"])
    assert rc == 0, out + err
    assert "fmn       linear  l2" in out and "FAIL" not in out
    monkeypatch.setattr(
        "advlab.attacks.fmn.project", lambda delta, eps, norm: delta
    )  # a projection that forgets the ball
    rc, out, _ = run_cli(["selftest", "--attacks", "fmn", "--n", "32"])
    assert rc == 1 and "FAIL" in out and "failed: fmn" in out


def test_selftest_unknown_attack_exits_2() -> None:
    rc, _, err = run_cli(["selftest", "--attacks", "nope"])
    assert rc == 2 and "unknown self-test attack 'nope'" in err and list(known.SUITE)[0] in err
