"""``advlab analyze units`` and ``advlab analyze linearity``: run directories with their files, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli

DIGITS = ["--model", "digits-cnn", "--data", "digits:test"]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_analyze_units_writes_purities_grid_and_table(tmp_path: Path) -> None:
    out = tmp_path / "units"
    rc, stdout, err = run_cli(
        [
            "analyze",
            "units",
            *DIGITS,
            "--limit",
            "300",
            "--top-units",
            "4",
            "--directions",
            "3",
            "--k",
            "5",
            "--seed",
            "7",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, err
    assert "random directions" in stdout and "chance" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert (
        m["layer"] == "net.classifier.3:input"
        and m["units_in_layer"] == 128
        and m["images"] == 300
        and m["labels"] == "true"
    )
    assert len(m["unit_purity"]) == 4 and list(m["direction_purity"]) == ["0", "1", "2"]
    values = [*m["unit_purity"].values(), *m["direction_purity"].values()]
    assert all(0.2 <= v <= 1 for v in values)  # 1/k .. 1
    assert m["unit_purity_mean"] == pytest.approx(sum(m["unit_purity"].values()) / 4)
    assert 0.2 < m["chance_purity"] < 0.45 and m["all_units_purity_mean"] > m["chance_purity"] + 0.2
    rows = _rows(out / "units.csv")
    assert len(rows) == (4 + 3) * 5 and [r["rank"] for r in rows[:5]] == ["1", "2", "3", "4", "5"]
    assert [r["kind"] for r in rows].count("direction") == 15
    first = [float(r["value"]) for r in rows[:5]]
    assert first == sorted(first, reverse=True)
    assert float(rows[0]["purity"]) == m["unit_purity"][rows[0]["probe"]]
    assert (out / "units.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "units.png" in page and "random directions" in page
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 7 and cfg["units"] == [int(u) for u in m["unit_purity"]]

    # explicit units and a pooled conv layer
    rc, stdout, err = run_cli(
        [
            "analyze",
            "units",
            *DIGITS,
            "--limit",
            "100",
            "--layer",
            "net.features.5",
            "--pool",
            "--units",
            "0,5",
            "--directions",
            "2",
            "--k",
            "4",
            "--json",
            "--out",
            str(tmp_path / "conv"),
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    assert m["layer"] == "net.features.5" and m["units_in_layer"] == 128 and list(m["unit_purity"]) == ["0", "5"]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layer", "nope"], "unknown layer name"),
        (["--units", "1,128"], "unit index 128 out of range"),
        (["--units", "a"], "not a comma list of integers"),
        (["--units", "1", "--top-units", "2"], "not allowed with argument"),
        (["--k", "101"], "k must be in 1..100"),
    ],
)
def test_analyze_units_bad_input_is_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "bad"
    rc, _, err = run_cli(["analyze", "units", *DIGITS, "--limit", "100", *extra, "--out", str(out)])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "bad.partial").exists()


def test_analyze_linearity_writes_both_curves(tmp_path: Path) -> None:
    out = tmp_path / "lin"
    rc, stdout, err = run_cli(
        ["analyze", "linearity", "--data", "digits:test", "--eps", "0.2,0,0.1", "--out", str(out)]
    )
    assert rc == 0, err
    assert "digits-cnn: eps 0:" in stdout and "linear: eps 0:" in stdout and "nearest decision boundary" in stdout
    m = json.loads((out / "metrics.json").read_text())
    assert m["eps"] == [0.0, 0.1, 0.2] and m["images"] == 599 and set(m["models"]) == {"digits-cnn", "linear"}
    cnn, lin = m["models"]["digits-cnn"]["accuracy"], m["models"]["linear"]["accuracy"]
    assert cnn["0.0"] > 0.97 and lin["0.0"] > 0.93
    assert lin["0.2"] < 0.05 and lin["0.2"] <= cnn["0.2"] and lin["0.1"] <= cnn["0.1"]
    assert 0.04 < m["models"]["linear"]["median_flip_eps"] < 0.1
    rows = _rows(out / "curves.csv")
    assert [(r["model"], float(r["eps"])) for r in rows] == [
        (mo, e) for mo in ("digits-cnn", "linear") for e in (0.0, 0.1, 0.2)
    ]
    assert float(rows[-1]["accuracy"]) == lin["0.2"]
    assert (out / "linearity.png").read_bytes()[:4] == b"\x89PNG"
    assert "linearity.png" in (out / "report.html").read_text()


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--eps", "0,-0.1"], "eps must be in [0, 1]"),
        (["--eps", "2"], "eps must be in [0, 1]"),
        (["--eps", "x"], "not a number"),
        (["--models", "nope"], "nope"),
        (["--models", "linear", "--data", "samples"], "unlabelled images"),
        (["--loss", "dlr"], "invalid choice"),
    ],
)
def test_analyze_linearity_bad_input_is_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "bad"
    rc, _, err = run_cli(["analyze", "linearity", "--data", "digits:test", "--limit", "50", *extra, "--out", str(out)])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "bad.partial").exists()
