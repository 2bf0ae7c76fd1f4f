"""The reports in a real browser: headless Chromium renders the demo's, an attack's, a prototypes run's and a
study's ``report.html`` and checks that every picture loaded (naturalWidth > 0) and that nothing is wider than
the page (the document, the body, every table, figure and picture fit the window).

A copy of each report with a small script appended is opened with ``chromium --headless --dump-dom``: on the
load event the script opens every folded table, measures, and writes its findings into the DOM as JSON, which
the dumped DOM carries back. Skipped where no Chromium (or Chrome) is found; ``.ci/run`` installs it.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import run_cli

WIDTHS = (1280, 800)  # a desktop window and a narrow one

_CHECK = """<script>
window.addEventListener("load", () => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  const root = document.documentElement, body = document.body;
  const right = body.getBoundingClientRect().right + 1;
  const images = [...document.images].map(
    i => ({src: i.getAttribute("src"), loaded: i.complete && i.naturalWidth > 0}));
  const overflow = [];
  if (root.scrollWidth > root.clientWidth) overflow.push(`document ${root.scrollWidth} > ${root.clientWidth}`);
  if (body.scrollWidth > body.clientWidth) overflow.push(`body ${body.scrollWidth} > ${body.clientWidth}`);
  document.querySelectorAll("table, figure, img, pre, code, h1, h2, p, ul").forEach((el, k) => {
    const r = el.getBoundingClientRect();
    const what = `${el.tagName.toLowerCase()} #${k} (${(el.getAttribute("src") || el.textContent).slice(0, 60)})`;
    if (r.right > right) overflow.push(`${what}: right edge ${Math.round(r.right)} > ${Math.round(right)}`);
    if (["TABLE", "FIGURE"].includes(el.tagName) && el.scrollWidth > el.clientWidth + 1)
      overflow.push(`${what}: ${el.scrollWidth} > ${el.clientWidth}`);
  });
  const out = document.createElement("pre");
  out.id = "advlab-browser-check";
  out.textContent = JSON.stringify({width: root.clientWidth, images, overflow});
  body.appendChild(out);
});
</script>"""


def _chromium() -> str | None:
    for name in (
        os.environ.get("ADVLAB_CHROMIUM", ""),
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


CHROMIUM = _chromium()
_MISSING = (
    "no headless browser: chromium (or chromium-browser, google-chrome, $ADVLAB_CHROMIUM) is not on PATH; "
    "`apt-get install -y chromium`"
)
# CI (.ci/run) sets ADVLAB_REQUIRE_BROWSER=1 after installing Chromium: there a missing browser fails, not skips
pytestmark = pytest.mark.skipif(CHROMIUM is None and os.environ.get("ADVLAB_REQUIRE_BROWSER") != "1", reason=_MISSING)


@pytest.fixture(scope="module", autouse=True)
def _browser_required() -> None:
    assert CHROMIUM is not None, _MISSING + " (ADVLAB_REQUIRE_BROWSER=1)"


def render(report: Path, width: int, profile: Path) -> dict:
    """Open a copy of ``report`` with :data:`_CHECK` appended in headless Chromium ``width`` px wide.

    Returns the check's findings.
    """
    page = report.with_name("_browser_check.html")
    page.write_text(report.read_text().replace("</body>", _CHECK + "</body>"))
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        f"--window-size={width},900",
        "--dump-dom",
        page.as_uri(),
    ]
    try:
        dom = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    finally:
        page.unlink()
    m = re.search(r'<pre id="advlab-browser-check">(.*?)</pre>', dom, re.S)
    assert m, f"the check did not run in {report}; chromium printed: {dom[-500:]!r}"
    return json.loads(html.unescape(m.group(1)))


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four small runs (the demo as it ships; the others with few images and steps)."""
    root = tmp_path_factory.mktemp("browser")
    digits = ["--model", "digits-cnn", "--data", "digits:test"]
    runs = {
        "demo": ["demo"],
        "attack": [
            "attack",
            *digits,
            "--attack",
            "pgd",
            "--eps",
            "0.05,0.1",
            "--steps",
            "3",
            "--limit",
            "16",
            "--pngs",
            "4",
        ],
        "prototypes": ["prototypes", "--model", "digits-cnn", "--start", "blank:gray", "--steps", "30"],
        "study": ["study", "prune", *digits, "--limit", "48", "--steps", "2", "--defense", "e,s,quant"],
    }
    out = {}
    for name, argv in runs.items():
        rc, _, err = run_cli([*argv, "--out", str(root / name), "--quiet"])
        assert rc == 0, f"advlab {' '.join(argv)}: {err}"
        out[name] = root / name / "report.html"
    return out


@pytest.mark.parametrize("run", ["demo", "attack", "prototypes", "study"])
def test_report_renders_in_a_browser(reports: dict[str, Path], run: str, tmp_path: Path) -> None:
    report = reports[run]
    expected = sorted(p.name for p in report.parent.glob("*.png"))
    assert expected, f"{run} drew no pictures"
    for width in WIDTHS:
        found = render(report, width, tmp_path / "profile")
        assert found["width"] > 0.8 * width, found["width"]  # the window really was that wide
        assert sorted(i["src"] for i in found["images"]) == expected  # every picture is on the page ...
        assert [i["src"] for i in found["images"] if not i["loaded"]] == []  # ... and loaded
        assert found["overflow"] == [], f"{run} at {width} px: {found['overflow']}"


def test_the_check_sees_a_broken_picture_and_an_overflow(tmp_path: Path) -> None:
    """The check itself can fail: a missing picture and a table wider than the window are reported."""
    page = tmp_path / "report.html"
    page.write_text(
        "<!doctype html><html><body><img src='missing.png'><table><tr><td>"
        + "x" * 400
        + "</td></tr></table></body></html>"
    )
    found = render(page, 800, tmp_path / "profile")
    assert found["images"] == [{"src": "missing.png", "loaded": False}]
    assert any(o.startswith("table") for o in found["overflow"]) and any(
        o.startswith("body") or o.startswith("document") for o in found["overflow"]
    )
