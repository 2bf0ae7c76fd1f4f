"""A self-contained ``report.html`` for a run directory: its metrics, tables and pictures.

Metrics are shown in a fixed order (what was run; clean, robust, success; norms; confidences; counts; time;
then the nested tables), nested values as sub-tables or lists, every value whole (never cut mid-word), and
every picture with a caption that says what it shows. The page fits its width: long cells wrap, wide pictures
shrink.
"""

from __future__ import annotations

import html
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from advlab.report.captions import caption_for

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;padding:0 1em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;max-width:100%}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;
vertical-align:top;overflow-wrap:break-word}th{background:#f3f3f3}td table{margin:0}td td,td th{padding:2px 5px}
img{max-width:100%;height:auto;box-sizing:border-box;border:1px solid #ddd;margin:.5em 0}figure{margin:1.5em 0}
figcaption{color:#444;font-size:.95em;max-width:80ch}
code{background:#f5f5f5;padding:1px 4px;overflow-wrap:anywhere}.more{color:#666;font-size:.9em}
summary{cursor:pointer;color:#036}li{margin:.3em 0}
@media (max-width:900px){table{font-size:.85rem}td,th{padding:3px 4px}}"""

#: most rows a nested list or table shows; the rest are in metrics.json (the page says how many)
MAX_ROWS = 60
#: records with more fields than this are a folded list (click to open), one "field value; ..." line each, not a
#: table
WIDE = 8

# (rank, pattern on the metric's name, "_" read as " " and without its parentheses), tried in this order: the first
# that matches places it
_ORDER = [
    (5, r"confidence|probabilit|\bp\b|margin|loss|purity"),
    (7, r"seconds|\btime\b|duration"),
    (2, r"robust|remnant"),
    (3, r"success|change|fooled|flipped|broken|\bauc\b|\btpr\b|\bfpr\b|detect"),
    (4, r"\bl(inf|2|1|0)\b|norm|distance|\beps\b"),
    (6, r"images|evaluations|queries|forwards|backwards|passes|count|layers|\bn\b|steps|epochs|pairs"),
    (1, r"clean|accuracy|top-\d"),
]
_WHAT = {
    "model",
    "models",
    "data",
    "attack",
    "attacks",
    "config",
    "preset",
    "recipe",
    "norm",
    "target",
    "targeted",
    "defense",
    "layer",
    "source",
    "sources",
    "targets",
    "start",
    "mode",
    "method",
    "judge",
    "judges",
    "kind",
    "seed",
}


def metric_rank(key: str, value: Any) -> int:
    """Where ``key`` goes in the metrics table: 0 what was run (model, data, attack, any text), 1 clean accuracy,
    2 robust accuracy, 3 success and change rates, 4 norms and eps, 5 confidences and losses, 6 counts, 7 time,
    8 other numbers, 9 nested values (dicts and lists)."""
    if key in _WHAT or isinstance(value, str) or value is None:
        return 0
    if isinstance(value, (dict, list)):
        return 9
    name = re.sub(r"\(.*?\)", "", key.lower().replace("_", " "))  # "(linf 2/255, 8-bit)" qualifies, it does not place
    return next((rank for rank, pattern in _ORDER if re.search(pattern, name)), 8)


def ordered(metrics: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """``metrics``' items in :func:`metric_rank` order; the command's own order within a rank."""
    items = list(metrics.items())
    return sorted(items, key=lambda kv: metric_rank(kv[0], kv[1]))  # sorted() is stable


def _scalar(key: str, v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return html.escape(str(v))
    if isinstance(v, float):
        if 0.0 <= v <= 1.0 and re.search(r"accuracy|rate|fraction|share", key):
            return f"{v:.2%}"
        return f"{v:.4g}"
    if isinstance(v, int):
        return str(v)
    text = str(v)
    return f"<code>{html.escape(text)}</code>" if len(text) > 40 or "(" in text else html.escape(text)


def _name(key: Any) -> str:
    """A nested table's field name, free to wrap after its underscores (final_<wbr>probability_<wbr>mean)."""
    return html.escape(str(key)).replace("_", "_<wbr>")


def _more(n: int) -> str:
    return f"<p class='more'>{n} more in metrics.json</p>" if n > 0 else ""


def render_value(v: Any, key: str = "") -> str:
    """A metric's value as HTML: a number (rates as percentages), a list as comma-separated text, a list of
    records or a dict of records as a table with a column per field, a dict of a few numbers as one row under
    their names, any other dict as a key/value table.
    Nothing is cut inside a value; a list longer than :data:`MAX_ROWS` shows its first rows and says how many
    more metrics.json holds."""
    if isinstance(v, dict):
        records = list(v.values())
        if records and all(isinstance(r, dict) for r in records):
            return _records([{"": k, **r} for k, r in v.items()], key)
        if 0 < len(v) <= WIDE and all(not isinstance(r, (dict, list)) for r in records):
            return _records([v], key)  # a few numbers (mean, median, min, max): one row under their names
        rows = "".join(
            f"<tr><th>{_name(k)}</th><td>{render_value(x, str(k))}</td></tr>" for k, x in list(v.items())[:MAX_ROWS]
        )
        return f"<table>{rows}</table>{_more(len(v) - MAX_ROWS)}"
    if isinstance(v, list):
        if not v:
            return "(none)"
        if all(isinstance(r, dict) for r in v):
            return _records(v, key)
        if all(not isinstance(r, (dict, list)) for r in v):
            return html.escape(", ".join(_plain(key, r) for r in v[:MAX_ROWS])) + _more(len(v) - MAX_ROWS)
        return (
            "<ol>"
            + "".join(f"<li>{render_value(r, key)}</li>" for r in v[:MAX_ROWS])
            + "</ol>"
            + _more(len(v) - MAX_ROWS)
        )
    return _scalar(key, v)


def _plain(key: str, v: Any) -> str:
    return html.unescape(re.sub(r"</?code>", "", _scalar(key, v)))


def _records(records: list[dict[str, Any]], key: str) -> str:
    """Dicts as one table: a column per field (in first-seen order), a row per record."""
    columns = list(dict.fromkeys(c for r in records for c in r))
    head = "".join(f"<th>{_name(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{render_value(r.get(c, ''), str(c) or key)}</td>" for c in columns) + "</tr>"
        for r in records[:MAX_ROWS]
    )
    if len(columns) <= WIDE:
        return f"<table><tr>{head}</tr>{body}</table>{_more(len(records) - MAX_ROWS)}"
    items = "".join(
        "<li>"
        + "; ".join(f"<b>{html.escape(str(c))}</b> {_inline(r[c], str(c) or key)}" for c in columns if c in r)
        + "</li>"
        for r in records[:MAX_ROWS]
    )
    summary = f"<summary>{len(records)} rows of {len(columns)} fields</summary>"
    return f"<details>{summary}<ol>{items}</ol></details>{_more(len(records) - MAX_ROWS)}"


def _inline(v: Any, key: str) -> str:
    """A value on one line of text: a nested dict as "k v, k v", a list comma-separated."""
    if isinstance(v, dict):
        return html.escape(", ".join(f"{k} {_plain(str(k), x)}" for k, x in v.items())) or "(none)"
    if isinstance(v, list):
        return html.escape(", ".join(_plain(key, x) for x in v)) or "(none)"
    return _scalar(key, v)


def metrics_table(metrics: Mapping[str, Any]) -> str:
    """``metrics`` as an HTML table in :func:`ordered` order."""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{render_value(v, str(k))}</td></tr>" for k, v in ordered(metrics)
    )
    return f"<table>{rows}</table>"


def html_lines(lines: Sequence[str]) -> str:
    """``lines`` as one paragraph, a line break after each, every line escaped (a headline as the terminal shows
    it)."""
    return "<p>" + "<br>".join(html.escape(line) for line in lines) + "</p>"


def html_figure(name: str, caption: str) -> str:
    """The picture ``name`` (a file next to the page) with its caption, which also names the file."""
    return (
        f"<figure><img src='{html.escape(name)}' alt='{html.escape(caption)}'><figcaption>{html.escape(caption)}"
        f" <span class='more'>({html.escape(name)})</span></figcaption></figure>"
    )


def html_list(items: Sequence[str]) -> str:
    """``items`` as an HTML bullet list, every item escaped (e.g. an evaluation's warnings)."""
    return "<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in items) + "</ul>"


def html_table(md: str) -> str:
    """A Markdown table (header, separator, rows) as an HTML table; the lines that are not table rows (a note
    under the table) follow it as paragraphs. Every cell is escaped."""
    lines = md.strip().splitlines()
    cells = [[c.strip() for c in ln.strip().strip("|").split("|")] for ln in lines if ln.startswith("|")]
    head, body = cells[0], cells[2:]
    out = "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in head) + "</tr>"
    out += "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body)
    notes = [ln for ln in lines if ln.strip() and not ln.startswith("|")]
    return out + "</table>" + "".join(f"<p>{html.escape(n)}</p>" for n in notes)


def write_report(
    run_dir: str | Path,
    title: str,
    sections: list[tuple[str, str]] | None = None,
    captions: Mapping[str, str] | None = None,
    summary: Sequence[tuple[str, str]] = (),
    lead: str | None = None,
) -> Path:
    """Write ``report.html`` in ``run_dir``: a title, the command, the summary, ``metrics.json`` as a table, every
    PNG.

    ``summary`` are (heading, HTML) pairs read first, right under the command (what a newcomer reads in 10
    seconds); ``lead`` names the PNG shown with them (the most telling picture, not repeated among the pictures).
    ``sections`` are extra (heading, HTML) pairs placed after the metrics, before the pictures. ``captions`` maps a
    PNG's file name to its caption (the pictures it names come first, in its order); a picture without one gets the
    standard caption of its command and name (:func:`advlab.report.captions.caption_for`). Paths are relative, so the
    directory can be moved or zipped and still open in a browser.
    """
    from advlab.runs import atomic_write

    run_dir = Path(run_dir)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
    ]
    command = ""
    config_path = run_dir / "config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        command = str(config.get("command", ""))
        if command:
            parts.append(f"<p><code>{html.escape(command)}</code></p>")
    for heading, body in summary:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    if lead is not None and _is_own_file(run_dir / lead):
        parts.append(html_figure(lead, (captions or {}).get(lead) or caption_for(command, lead)))
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        parts.append(f"<h2>Metrics</h2>{metrics_table(json.loads(metrics_path.read_text()))}")
    for heading, body in sections or []:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    parts.append(_pictures(run_dir, command, captions or {}, lead))
    skip = ("report.html", "LOCK")
    files = sorted(p.name for p in run_dir.iterdir() if _is_own_file(p) and p.suffix != ".png" and p.name not in skip)
    parts.append(
        "<h2>Files</h2><ul>"
        + "".join(f"<li><a href='{html.escape(f)}'>{html.escape(f)}</a></li>" for f in files)
        + "</ul>"
    )
    parts.append("</body></html>")
    out = run_dir / "report.html"
    atomic_write(out, "\n".join(parts))
    return out


def _pictures(run_dir: Path, command: str, captions: Mapping[str, str], lead: str | None) -> str:
    """Every PNG of ``run_dir`` but ``lead`` under one heading, those ``captions`` names first, in its order."""
    order = list(captions)
    pngs = sorted(
        (p for p in run_dir.glob("*.png") if p.name != lead),
        key=lambda p: (order.index(p.name) if p.name in order else len(order), p.name),
    )
    figures = "".join(html_figure(p.name, captions.get(p.name) or caption_for(command, p.name)) for p in pngs)
    return f"<h2>Pictures</h2>{figures}" if pngs else ""


def _is_own_file(path: Path) -> bool:
    """Whether ``path`` is a regular file itself (a link placed in the run directory is not listed or followed)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
