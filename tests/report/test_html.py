"""report.html: metrics in a meaningful order, nested values as tables or lists (whole, never cut), real captions."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest

from advlab.report.captions import caption_for
from advlab.report.html import (
    MAX_ROWS,
    html_lines,
    metric_rank,
    ordered,
    render_value,
    write_report,
)


class _Text(HTMLParser):
    """The page's text and its tags, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.captions: list[str] = []
        self._in_caption = False
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.tags.append(tag)
        self._in_caption = self._in_caption or tag == "figcaption"
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag == "figcaption":
            self._in_caption = False
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style:
            return
        self.text.append(data)
        if self._in_caption and data.strip():
            self.captions.append(data.strip())


def _page(run_dir: Path) -> _Text:
    t = _Text()
    t.feed((run_dir / "report.html").read_text())
    return t


def _run_dir(
    tmp_path: Path, metrics: dict, command: str = "advlab attack --model digits-cnn", pngs: tuple[str, ...] = ()
) -> Path:
    (tmp_path / "config.json").write_text(json.dumps({"command": command}))
    (tmp_path / "metrics.json").write_text(json.dumps(metrics))
    for name in pngs:
        (tmp_path / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    return tmp_path


def test_metrics_come_in_a_meaningful_order() -> None:
    scrambled = {
        "seconds": 1.5,
        "l2_median": 0.6,
        "gradient_evaluations": 300,
        "robust_accuracy": 0.4,
        "curve": [{"eps": 0.1}],
        "success_rate": 0.6,
        "clean_confidence_mean": 0.9,
        "clean_accuracy": 1.0,
        "images": 64,
        "model": "digits-cnn",
        "linf_median": 0.1,
        "attack": "pgd",
    }
    keys = [k for k, _ in ordered(scrambled)]
    assert keys == [
        "model",
        "attack",
        "clean_accuracy",
        "robust_accuracy",
        "success_rate",
        "l2_median",
        "linf_median",
        "clean_confidence_mean",
        "gradient_evaluations",
        "images",
        "seconds",
        "curve",
    ]


@pytest.mark.parametrize(
    "key, rank",
    [
        ("digits-cnn digits:test accuracy", 1),
        ("efficientnet-lite0 samples top-3 accuracy", 1),
        ("digits-cnn robust accuracy (fast preset, linf 0.1)", 2),
        ("transfer_robust_accuracy", 2),
        ("efficientnet-lite0 wombat attack success rate (linf 2/255, 8-bit)", 3),
        ("prediction_change_rate", 3),
        ("l0_mean", 4),
        ("adversarial_confidence_mean", 5),
        ("forward_evaluations", 6),
        ("seconds", 7),
    ],
)
def test_a_qualifier_in_parentheses_does_not_place_a_metric(key: str, rank: int) -> None:
    assert metric_rank(key, 0.5) == rank


def test_nested_values_are_tables_and_lists_never_cut(tmp_path: Path) -> None:
    long_name = "a class name " * 40  # 520 characters: the old page cut JSON at 300
    samples = {f"photo{i}": {"label": "tabby", "top3": ["tiger cat", "Egyptian cat", long_name]} for i in range(4)}
    run = _run_dir(tmp_path, {"samples": samples, "eps": [0.05, 0.1, 0.2], "note": long_name})
    write_report(run, "t")
    page = _page(run)
    html = (run / "report.html").read_text()
    assert "{" not in "".join(page.text) and "&quot;" not in html  # no JSON dump
    assert (
        "photo3" in page.text and "label" in page.text and "top3" in page.text
    )  # a sub-table: a row per photo, a column per field
    assert page.tags.count("table") == 2
    assert sum(t.count(long_name.strip()) for t in page.text) == 5  # every copy whole
    assert "0.05, 0.1, 0.2" in page.text


def test_a_long_list_shows_its_first_rows_and_says_how_many_more() -> None:
    out = render_value([{"i": i, "v": i / 3} for i in range(MAX_ROWS + 7)])
    assert out.count("<tr>") == MAX_ROWS + 1 and "7 more in metrics.json" in out
    assert f"<td>{MAX_ROWS - 1}</td>" in out and f"<td>{MAX_ROWS}</td>" not in out


def test_records_with_many_fields_fold_into_lines() -> None:
    rows = [{f"field{j}": j for j in range(12)} | {"ci": [0.25, 0.5], "details": {"a": 1}} for _ in range(3)]
    out = render_value(rows, "rows")
    assert out.startswith("<details><summary>3 rows of 14 fields</summary>") and out.count("<li>") == 3
    assert "<b>ci</b> 0.25, 0.5" in out and "<b>details</b> a 1" in out and "<table>" not in out


def test_rates_read_as_percentages_other_numbers_as_numbers() -> None:
    assert render_value(0.98664, "clean_accuracy") == "98.66%"
    assert render_value(0.6587, "l2_median") == "0.6587"
    assert render_value(599, "images") == "599"


def test_pictures_get_captions_not_file_stems(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, {"clean_accuracy": 1.0}, pngs=("grid.png", "curve.png", "zz_extra_plot.png"))
    write_report(run, "t", captions={"curve.png": "My curve."})
    texts = _page(run).captions
    caps = [c for c in texts if not c.startswith("(")]  # each caption ends with its file name in brackets
    assert caps[0] == "My curve."  # a given caption comes first and wins
    assert caps[1].startswith("Attacked images, successes first") and "(grid.png)" in texts
    assert "Zz extra plot." in caps  # no standard caption: the name in words
    assert "grid" not in caps and "curve" not in caps


def test_a_caption_depends_on_the_command() -> None:
    assert caption_for("advlab attack --model m", "grid.png") != caption_for("advlab prototypes --model m", "grid.png")
    assert "prune" not in caption_for("advlab study prune --model m", "accuracy_vs_e.png")
    assert caption_for("advlab study prune --model m", "accuracy_vs_e.png").startswith("Clean and remnant")


def test_the_summary_and_its_picture_come_before_the_metrics_and_the_picture_is_not_repeated(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, {"clean_accuracy": 1.0}, pngs=("grid.png", "curve.png"))
    summary = [("Summary", html_lines(["robust accuracy 40.00% <b>", "trust: high"])), ("Per class", "<p>k</p>")]
    write_report(run, "t", [("Warnings", "<p>w</p>")], summary=summary, lead="curve.png")
    page = (run / "report.html").read_text()
    order = [page.index(s) for s in ("<h2>Summary", "<h2>Per class", "curve.png", "<h2>Metrics", "<h2>Warnings")]
    assert order == sorted(order)
    assert page.count("src='curve.png'") == 1 and page.index("src='grid.png'") > page.index("<h2>Pictures")
    assert "40.00% &lt;b&gt;<br>trust: high" in page  # the lines escaped, one per line
    assert _page(run).captions[0].startswith("Robustness curve")  # the lead picture keeps its standard caption


def test_a_lead_picture_that_is_not_there_is_left_out(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, {"clean_accuracy": 1.0})
    (tmp_path / "elsewhere.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (tmp_path / "grid.png").symlink_to(tmp_path / "elsewhere.png")  # a link is not the run's own file
    write_report(run, "t", lead="grid.png")
    assert "src='grid.png'" not in (run / "report.html").read_text()
