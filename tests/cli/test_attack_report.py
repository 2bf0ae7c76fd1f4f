"""What ``advlab attack`` prints and report.html shows first: for a robustness curve one line per eps with that
eps's numbers only (robust accuracy, success, the median norms of that eps's successes); the summary and the
most telling picture before the metrics."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from tests.cli.helpers import run_cli


def _lower_median(values: list[float]) -> float:
    """The lower median, as :func:`advlab.evaluation.metrics.norm_stats` takes it."""
    return sorted(values)[(len(values) - 1) // 2]


def test_a_curve_prints_one_line_per_eps_with_its_own_norms(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--model", "digits-cnn", "--data", "digits:test", "--attack", "pgd", "--limit", "48"]
    rc, stdout, err = run_cli([*argv, "--steps", "5", "--eps", "0.05,0.1,0.2", "--out", str(out), "-q"])
    assert rc == 0, err
    m = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader((out / "samples.csv").open()))
    lines = [line for line in stdout.splitlines() if line.startswith("  eps ")]
    assert (
        m["clean_accuracy"] == 1.0 and len(lines) == 3 and "median L-inf" not in stdout.splitlines()[0]
    )  # no norm beside the largest eps's rates
    for line, point in zip(lines, m["curve"], strict=True):
        # PGD's L-inf perturbation of an image is the smallest listed eps that broke it: its successes at this eps
        # are those with L-inf <= eps, and the line's norms are theirs
        mine = [r for r in rows if r["success"] == "True" and float(r["linf"]) <= point["eps"] + 1e-6]
        assert len(mine) == round(point["success_rate"] * 48)  # success is over the 48 clean-correct images
        linf = _lower_median([float(r["linf"]) for r in mine])
        l2 = _lower_median([float(r["l2"]) for r in mine])
        assert point["linf_median"] == round(linf, 6) and point["l2_median"] == round(l2, 6)
        eps = re.escape(str(point["eps"]))
        assert re.fullmatch(
            rf"  eps {eps}: robust accuracy {point['robust_accuracy']:.2%}, success {point['success_rate']:.2%}, "
            rf"median L-inf {linf:.4g}, median L2 {l2:.4g}",
            line,
        ), line
    # the smallest eps breaks fewer than the largest, and each eps's own median is at most that eps
    assert m["curve"][0]["success_rate"] < m["curve"][2]["success_rate"]
    assert all(p["linf_median"] <= p["eps"] + 1e-6 for p in m["curve"])
    page = (out / "report.html").read_text()
    order = [page.index(s) for s in ("<h2>Summary", "eps 0.05: robust accuracy", "src='curve.png'", "<h2>Metrics")]
    assert order == sorted(order) and page.count("src='curve.png'") == 1


def test_one_eps_leads_the_report_with_the_grid(tmp_path: Path) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--model", "digits-cnn", "--data", "digits:test", "--attack", "fgsm", "--limit", "16"]
    rc, stdout, err = run_cli([*argv, "--eps", "0.1", "--out", str(out), "-q"])
    assert rc == 0, err
    assert stdout.startswith("fgsm on 16 images: success ") and "median L-inf" in stdout.splitlines()[0]
    page = (out / "report.html").read_text()
    assert page.index("<h2>Summary") < page.index("src='grid.png'") < page.index("<h2>Metrics")
