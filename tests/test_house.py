"""The house rules of issue 22 that no formatter checks, read from the source with ``ast``.

``ruff format --check``, ``ruff check`` and ``mypy`` run in the README's test command (and so in CI); this file
holds what they cannot see: the count of ``# fmt: skip`` escapes, thin commands (no accuracy, label mapping, HTML
or figures written inside ``advlab/cli``), one metrics module (no rate counted by hand outside
``evaluation/metrics.py``), and an ARCHITECTURE.md that names every module of src. The 60-line function rule
lives in tests/test_architecture.py.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "advlab"
CLI = PACKAGE / "cli"
METRICS = PACKAGE / "evaluation" / "metrics.py"
ARCHITECTURE = SRC.parent / "ARCHITECTURE.md"

#: at most this many ``# fmt: skip`` in src (a table whose columns the formatter would scatter may keep one)
MAX_FMT_SKIP = 5
#: the formatter's line length (pyproject.toml [tool.ruff]); a string or comment it cannot split counts too
MAX_LINE = 120
#: words that, in a function name under cli/, mean domain or rendering logic that belongs to a lower layer
DOMAIN_WORDS = ("accuracy", "labels_for", "map_labels", "html", "figure", "roc", "success_rate", "change_rate")


def sources(root: Path = PACKAGE) -> Iterator[tuple[Path, str]]:
    for path in sorted(root.rglob("*.py")):
        yield path, path.read_text(encoding="utf-8")


def rel(path: Path) -> str:
    return str(path.relative_to(SRC))


#: a comparison that involves one of these names compares predictions with labels (a rate, when counted)
PREDICTION_WORDS = re.compile(r"\b(y\w*|labels?|targets?|pred\w*|argmax|top\w*|\w+_top1|\w+_pred)\b")


def counted_rates(tree: ast.AST) -> list[int]:
    """Lines where an accuracy or a success or change rate is counted by hand: ``(pred == y).float().mean()``,
    ``(model(x).argmax(1) == y).sum()``, ``(top == y[:, None]).any(1).mean()``...

    A call of ``mean`` or ``sum`` whose receiver chain (through ``.float()``, ``.any(1)``, ``[mask]``...) starts
    at an ``==`` / ``!=`` comparison that names predictions, labels or targets (:data:`PREDICTION_WORDS`);
    other counts (weights a quantizer changed, labels shared by neighbours) are not rates of a classifier.
    """
    lines = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr not in ("mean", "sum"):
            continue
        inner: ast.AST = node.func.value
        while isinstance(inner, (ast.Call, ast.Attribute, ast.Subscript)):
            inner = inner.func if isinstance(inner, ast.Call) else inner.value
        if isinstance(inner, ast.Compare) and any(isinstance(op, (ast.Eq, ast.NotEq)) for op in inner.ops):
            if PREDICTION_WORDS.search(ast.unparse(inner)):
                lines.append(node.lineno)
    return lines


def test_at_most_five_fmt_skip_in_src() -> None:
    found = [
        f"{rel(p)}:{i}" for p, text in sources() for i, line in enumerate(text.splitlines(), 1) if "fmt: skip" in line
    ]
    assert len(found) <= MAX_FMT_SKIP, f"{len(found)} '# fmt: skip' in src (at most {MAX_FMT_SKIP}):\n" + "\n".join(
        found
    )


def test_no_line_over_120_characters_in_src() -> None:
    found = [
        f"{rel(p)}:{i} ({len(line)})"
        for p, text in sources()
        for i, line in enumerate(text.splitlines(), 1)
        if len(line) > MAX_LINE
    ]
    assert not found, f"lines over {MAX_LINE} characters:\n" + "\n".join(found)


def test_commands_define_no_domain_or_rendering_logic() -> None:
    """cli/ parses, calls the library, prints and writes: no metric, label mapping, HTML table or figure there."""
    found = []
    for path, text in sources(CLI):
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("add_"):
                word = next((w for w in DOMAIN_WORDS if w in node.name.lower()), None)
                if word:
                    found.append(f"{rel(path)}:{node.lineno} defines {node.name} ({word})")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
                found += [f"{rel(path)}:{node.lineno} imports {n}" for n in names if n.startswith("matplotlib")]
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                if re.search(r"<(table|tr|td|th|ul|ol|li|p|div|h[1-6]|svg|img)\b", node.value):
                    found.append(f"{rel(path)}:{node.lineno} writes HTML")
        found += [f"{rel(path)}:{line} counts a rate by hand" for line in counted_rates(tree)]
    assert not found, "logic that belongs below the command layer:\n" + "\n".join(found)


def test_rates_are_counted_only_in_the_metrics_module() -> None:
    found = [f"{rel(p)}:{line}" for p, text in sources() if p != METRICS for line in counted_rates(ast.parse(text))]
    assert not found, "a rate counted by hand (use advlab.evaluation.metrics):\n" + "\n".join(found)


def test_the_rate_finder_finds_the_usual_spellings() -> None:
    """The checker above is not vacuous: it flags each hand-written form and passes a metrics call."""
    flagged = [
        "a = float((pred == y).float().mean())",
        "a = int((model(x).argmax(1) == y).sum())",
        "a = (top == y[:, None]).any(1).float().mean()",
        "a = (pred[m] != y[m]).sum()",
    ]
    for line in flagged:
        assert counted_rates(ast.parse(line)) == [1], line
    kept = "a = metrics.clean_accuracy(y, pred); b = x.sum(); c = (x > 0).sum(); d = int((wq != w).sum())"
    assert counted_rates(ast.parse(kept)) == []


def test_architecture_md_names_every_module() -> None:
    """Every module and package of src/advlab is named in ARCHITECTURE.md (as ``name.py`` or ``name/``)."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py":
            name = path.parent.name + "/"
            if path.parent == PACKAGE:
                continue
        else:
            name = path.name
        if name not in text:
            missing.append(rel(path))
    assert not missing, "modules ARCHITECTURE.md does not name:\n" + "\n".join(missing)
