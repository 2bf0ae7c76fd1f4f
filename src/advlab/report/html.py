"""A self-contained ``report.html`` for a run directory: its metrics, tables and pictures."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #ddd;margin:.5em 0}code{background:#f5f5f5;padding:1px 4px}"""


def _value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (dict, list)):
        return f"<code>{html.escape(json.dumps(v)[:300])}</code>"
    return html.escape(str(v))


def write_report(run_dir: str | Path, title: str, sections: list[tuple[str, str]] | None = None) -> Path:
    """Write ``report.html`` in ``run_dir``: a title, the command, ``metrics.json`` as a table, every PNG.

    ``sections`` are extra (heading, HTML) pairs placed before the pictures. Paths are relative, so the
    directory can be moved or zipped and still open in a browser.
    """
    from advlab.runs import atomic_write

    run_dir = Path(run_dir)
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>"]  # fmt: skip
    config_path = run_dir / "config.json"
    if config_path.exists():
        config = json.loads(config_path.read_text())
        if "command" in config:
            parts.append(f"<p><code>{html.escape(str(config['command']))}</code></p>")
    metrics_path = run_dir / "metrics.json"
    if metrics_path.exists():
        metrics = json.loads(metrics_path.read_text())
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_value(v)}</td></tr>" for k, v in metrics.items())
        parts.append(f"<h2>Metrics</h2><table>{rows}</table>")
    for heading, body in sections or []:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    pngs = sorted(run_dir.glob("*.png"))
    if pngs:
        parts.append("<h2>Pictures</h2>")
        parts += [f"<figure><img src='{html.escape(p.name)}' alt='{html.escape(p.stem)}'><figcaption>{html.escape(p.stem)}</figcaption></figure>" for p in pngs]
    files = sorted(p.name for p in run_dir.iterdir() if p.is_file() and p.suffix not in (".png",) and p.name != "report.html")
    parts.append("<h2>Files</h2><ul>" + "".join(f"<li><a href='{html.escape(f)}'>{html.escape(f)}</a></li>" for f in files) + "</ul>")
    parts.append("</body></html>")
    out = run_dir / "report.html"
    atomic_write(out, "\n".join(parts))
    return out
