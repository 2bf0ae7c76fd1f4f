"""``advlab transfer``: the run directory (matrix, CSV, heat map, report), --json, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from safetensors.torch import save_file

from tests.cli.helpers import run_cli
from tests.experiments.test_transfer import digits_halves


@pytest.fixture(scope="module")
def half_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The weights of the digits model trained on the odd half of digits:train (a bare DigitsCNN state dict)."""
    path = tmp_path_factory.mktemp("weights") / "half_b.safetensors"
    save_file(digits_halves()[1].state_dict(), str(path))
    return path


def test_transfer_writes_the_run_directory_and_json(tmp_path: Path, half_weights: Path) -> None:
    out = tmp_path / "t"
    rc, stdout, err = run_cli(
        [
            "transfer",
            "--from",
            f"digits-cnn,digits-cnn={half_weights}",
            "--data",
            "digits:test",
            "--limit",
            "150",
            "--eps",
            "0.2",
            "--steps",
            "5",
            "--ensemble",
            "--out",
            str(out),
            "--json",
        ]
    )
    assert rc == 0, err
    m = json.loads(stdout)
    names = ["digits-cnn", "digits-cnn=half_b"]
    assert m["sources"] == [*names, "ensemble(digits-cnn+digits-cnn=half_b)"] and m["targets"] == names
    assert m["n"] == 150 and m["eps"] == 0.2 and len(m["success"]) == 3 and all(len(r) == 2 for r in m["success"])
    assert m["success"][0][0] == m["white_box"]["digits-cnn"] > 0.9
    assert m["success"][0][1] > m["noise_baseline"]["digits-cnn=half_b"]
    for name in ("metrics.json", "transfer.csv", "transfer.md", "heatmap.png", "report.html", "config.json"):
        assert (out / name).is_file(), name
    assert (out / "heatmap.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = list(csv.DictReader((out / "transfer.csv").open()))
    assert len(rows) == 6 and {r["kind"] for r in rows} == {"white-box", "transfer", "member"}
    md = (out / "transfer.md").read_text()
    assert (
        md.startswith("| source \\ target | digits-cnn | digits-cnn=half_b | white box")
        and "chance: random noise" in md
    )
    page = (out / "report.html").read_text()
    assert "Transfer matrix" in page and "heatmap.png" in page
    assert json.loads((out / "metrics.json").read_text())["fooled"] == m["fooled"]


def test_transfer_prints_the_table(tmp_path: Path, half_weights: Path) -> None:
    out = tmp_path / "t"
    rc, stdout, err = run_cli(
        [
            "transfer",
            "--from",
            "digits-cnn",
            "--to",
            f"digits-cnn={half_weights}",
            "--data",
            "digits:test",
            "--limit",
            "40",
            "--steps",
            "2",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, err
    assert "| digits-cnn |" in stdout and f"wrote {out}" in stdout
    assert json.loads((out / "metrics.json").read_text())["eps"] == 0.1  # the digits default


@pytest.mark.parametrize(
    "models, extra, message",
    [
        (["--from", "nope"], [], "unknown model 'nope'"),
        (["--from", "digits-cnn", "--to", "FIVE"], [], "has 5 classes but digits-cnn has 10"),
        (["--from", "digits-cnn=missing.safetensors"], [], "no such weights file"),
        (["--from", "digits-cnn"], ["--ensemble"], "--ensemble needs at least two"),
        (["--from", "digits-cnn"], ["--eps", "0.1,0.2"], "one eps"),
        (["--from", "digits-cnn"], ["--attack", "nope"], "unknown attack 'nope'"),
        (["--from", "digits-cnn"], ["--kappa", "1"], "pgd takes no kappa option"),
    ],
)
def test_transfer_bad_input_is_one_line(tmp_path: Path, models: list[str], extra: list[str], message: str) -> None:
    five = tmp_path / "five.py"
    five.write_text(
        "from advlab.zoo.digits import DigitsCNN\n\n\n"
        "def net():\n    m = DigitsCNN(num_classes=5)\n    m.input_size, m.in_channels = 8, 1\n    return m\n"
    )
    models = [a.replace("FIVE", f"{five}:net") for a in models]
    out = tmp_path / "bad"
    rc, stdout, err = run_cli(["transfer", *models, "--data", "digits:test", "--limit", "8", *extra, "--out", str(out)])
    assert rc == 2 and stdout == ""
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert not out.exists() and not Path(f"{out}.partial").exists()
