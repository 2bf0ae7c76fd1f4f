"""``advlab study prune`` and ``advlab analyze layers``: run directories with the seed's table and plots,
resume, one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli

DIGITS = ["--model", "digits-cnn", "--data", "digits:test", "--limit", "100"]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(path.open()))


def test_study_defaults_sweep_every_defense(tmp_path: Path) -> None:
    out = tmp_path / "study"
    rc, stdout, err = run_cli(["study", "prune", *DIGITS, "--steps", "5", "--out", str(out)])
    assert rc == 0, err
    assert "| Model | prune ratio |" in stdout
    rows = _rows(out / "study.csv")
    defenses = [r["defense"] for r in rows]
    assert defenses[0] == "none" and all(defenses.count(d) >= 5 for d in ("e", "s", "r", "quant", "clamp"))
    md = (out / "study.md").read_text().strip().splitlines()
    table = [ln for ln in md if ln.startswith("|")]
    assert len(table) == 2 + len(rows) and "95% Wilson interval" in md[-1]
    # each accuracy carries its Wilson interval, the same numbers as study.csv
    base = rows[0]
    cells = [c.strip() for c in table[2].strip("|").split("|")]

    def with_interval(key: str) -> str:
        rate, lo, hi = (float(base[k]) for k in (f"{key}_accuracy", f"{key}_ci_low", f"{key}_ci_high"))
        return f"{rate:.2%} [{100 * lo:.1f}, {100 * hi:.1f}]"

    assert cells[2] == with_interval("clean")
    assert cells[3] == with_interval("robust")
    assert float(base["robust_ci_low"]) < float(base["robust_accuracy"]) < float(base["robust_ci_high"])
    for d in ("e", "s", "r", "quant", "clamp"):
        assert (out / f"accuracy_vs_{d}.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "report.html").read_text()
    assert "Remnant Accuracy" in page and "accuracy_vs_e.png" in page and "batch_" not in page
    assert cells[3] in page and "95% Wilson interval" in page  # the intervals are in the report too
    assert "weights with |w| &lt; E set to zero" in page  # a real caption, not the file stem
    m = json.loads((out / "metrics.json").read_text())
    assert m["n"] == 100 and len(m["rows"]) == len(rows)
    e = [float(r["changed_fraction"]) for r in rows if r["defense"] == "e"]
    assert e == sorted(e) and e[-1] > e[0]


def test_study_resumes_to_the_same_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from advlab.experiments import study

    args = ["study", "prune", *DIGITS, "--steps", "3", "--settings", "e=0.01,0.05;s=3,1", "--defense", "e", "--json"]
    rc, fresh, err = run_cli([*args, "--out", str(tmp_path / "fresh")])
    assert rc == 0, err
    real = study.measure
    calls = {"n": 0}

    def interrupted(*a, **k):  # noqa: ANN002, ANN003
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(study, "measure", interrupted)
    out = tmp_path / "r"
    rc, _, err = run_cli([*args, "--out", str(out)])
    assert rc == 130 and len(list((tmp_path / "r.partial").glob("batch_*.safetensors"))) == 2
    calls["n"] = -100
    rc, resumed, err = run_cli([*args, "--out", str(out), "--resume"])
    assert rc == 0, err
    assert calls["n"] == -100 + 3  # the undefended row and the first setting were not measured again
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(json.loads(resumed)) == strip(json.loads(fresh))


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--defense", "x"], "unknown defense 'x'"),
        (["--settings", "e=a"], "must be numbers"),
        (["--settings", "q=1"], "expected DEFENSE=V1,V2"),
        (["--attack", "nope"], "unknown attack 'nope'"),
        (["--settings", "s=-1", "--defense", "s"], "prune S=-1: needs S > 0"),
        (["--settings", "quant=3.5", "--defense", "quant"], "bits an integer in 2..16"),
    ],
)
def test_study_bad_input_is_one_line(tmp_path: Path, extra: list[str], message: str) -> None:
    out = tmp_path / "bad"
    rc, _, err = run_cli(["study", "prune", *DIGITS, "--steps", "2", *extra, "--out", str(out)])
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "bad.partial").exists()


def test_analyze_layers_finds_where_the_attack_acts(tmp_path: Path) -> None:
    out = tmp_path / "layers"
    rc, stdout, err = run_cli(
        ["analyze", "layers", *DIGITS[:4], "--limit", "32", "--steps", "5", "--clamp", "99", "--out", str(out)]
    )
    assert rc == 0, err
    rows = _rows(out / "layers.csv")
    assert rows[0]["name"] == "input" and len(rows) >= 5
    m = json.loads((out / "metrics.json").read_text())
    peak = max(rows, key=lambda r: float(r["rel_l2"]) if r["name"] != "input" else -1)
    assert m["peak_rel_l2"]["layer"] == peak["name"] and peak["name"] in stdout
    assert (out / "layers_clamped.csv").exists()
    for png in ("change_by_layer.png", "activation_std.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    rc, _, err = run_cli(["analyze", "layers", *DIGITS[:4], "--layers", "nope", "--out", str(tmp_path / "bad")])
    assert rc == 2 and "nope" in err and not (tmp_path / "bad").exists()


def test_layer_plots_name_their_layers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import advlab.report.results as report  # where the commands' figures are drawn

    drawn: dict[str, dict] = {}
    real = report.line_plot

    def spy(series, xlabel, ylabel, title="", **kw):  # noqa: ANN001, ANN003
        drawn[title] = {"xlabel": xlabel, **kw}
        return real(series, xlabel, ylabel, title, **kw)

    monkeypatch.setattr(report, "line_plot", spy)
    out = tmp_path / "layers"
    rc, _, err = run_cli(["analyze", "layers", *DIGITS[:4], "--limit", "16", "--steps", "2", "--out", str(out)])
    assert rc == 0, err
    names = [r["name"] for r in _rows(out / "layers.csv")]
    assert len(drawn) == 2
    for kw in drawn.values():
        assert kw["xticklabels"] == names and kw["xlabel"] == "layer"  # names, not depth indices


def test_study_log_axis_gets_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import advlab.report.results as report  # where the commands' figures are drawn

    drawn: list[dict] = []
    real = report.line_plot

    def spy(series, xlabel, ylabel, title="", **kw):  # noqa: ANN001, ANN003
        fig = real(series, xlabel, ylabel, title, **kw)
        fig.canvas.draw()
        drawn.append({"x": kw["x"], "labels": [t.get_text() for t in fig.axes[0].get_xticklabels() if t.get_text()]})
        return fig

    monkeypatch.setattr(report, "line_plot", spy)
    rc, _, err = run_cli(
        [
            "study",
            "prune",
            *DIGITS[:4],
            "--limit",
            "32",
            "--steps",
            "1",
            "--settings",
            "e=0.002,0.005,0.01,0.02",
            "--defense",
            "e",
            "--out",
            str(tmp_path / "s"),
        ]
    )
    assert rc == 0, err
    assert drawn[0]["labels"] == ["0.002", "0.005", "0.01", "0.02"]  # one decade: matplotlib alone labels one tick
