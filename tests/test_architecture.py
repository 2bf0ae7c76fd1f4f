"""The layers of ARCHITECTURE.md, enforced: every import in src/advlab points down (or sideways where allowed).

The checker reads each module with ``ast`` (module-level and function-level imports, ``import advlab.x``,
``from advlab import x``, ``from advlab.x.y import z`` and relative imports) and maps each imported advlab
module to its top-level package, and that to a layer in :data:`LAYERS`. An import is forbidden when it points
to a higher layer, or is one of the sideways arrows in :data:`FORBIDDEN`. A module whose top-level name is
not in :data:`LAYERS` fails the test until it is placed there. The same file holds the other structural
rules of issue 12: no function in src/ longer than 60 lines, ``evaluate`` with at most 6 parameters.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = SRC / "advlab"

#: the layers, lowest first (ARCHITECTURE.md): a module may import its own layer and those below it
LAYER_NAMES = (
    "core",
    "attacks / zoo / data",
    "evaluation / prototypes / defenses",
    "experiments",
    "runs / report / distributed",
    "cli",
)
#: top-level name under advlab (a module or a package) -> its layer, an index into LAYER_NAMES. A new
#: top-level module or package must be placed here.
LAYERS: dict[str, int] = {
    "types": 0,
    "threat": 0,
    "losses": 0,
    "errors": 0,
    "device": 0,
    "work": 0,
    "hooks": 0,
    "attacks": 1,
    "zoo": 1,
    "data": 1,
    "evaluation": 2,
    "prototypes": 2,
    "defenses": 2,
    "experiments": 3,
    "runs": 4,
    "report": 4,
    "distributed": 4,
    "cli": 5,
    "__main__": 5,
}
#: sideways arrows that must never exist, with the reason
FORBIDDEN: dict[tuple[str, str], str] = {
    ("zoo", "attacks"): "models know no attacks",
    ("data", "attacks"): "data sets know no attacks",
    ("data", "zoo"): "data sets know no models",
    ("attacks", "zoo"): "attacks take any model; they know no zoo",
    ("attacks", "data"): "attacks take tensors; they know no data sets",
}
#: names defined by advlab/__init__.py itself (not re-exported from a submodule): package metadata, importable anywhere
ROOT_METADATA = ("__version__",)


@dataclass(frozen=True)
class Arrow:
    """One import inside advlab: ``importer`` (a top-level name) -> ``target`` (a top-level name, or "advlab"
    for the package root's public API), at ``file:line``, importing the module ``what``."""

    file: str
    line: int
    importer: str
    target: str
    what: str


# ------------------------------------------------------------------------------------------------ the checker
def module_name(path: Path) -> str:
    """``src/advlab/defenses/training.py`` -> ``advlab.defenses.training``; a package's __init__ -> the package."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(dotted: str) -> bool:
    """Whether ``advlab.x.y`` is a module or package under src/."""
    base = SRC.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def root_exports() -> dict[str, str]:
    """{name: module} for every name advlab/__init__.py imports from a submodule
    (``evaluate`` -> advlab.evaluation...)."""
    out: dict[str, str] = {}
    for node in ast.walk(ast.parse((PACKAGE / "__init__.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("advlab"):
            for alias in node.names:
                out[alias.asname or alias.name] = (
                    f"{node.module}.{alias.name}" if node.module == "advlab" else node.module
                )
    return out


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a (possibly relative) ``from X import ...`` reads from."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[int, str]]:
    """``(line, absolute advlab module)`` for every advlab import in ``source`` (module- and function-level).

    ``from advlab import name``: the submodule ``advlab.name`` when there is one, else the module the root
    re-exports ``name`` from, else the root itself ("advlab"); root metadata (``__version__``) is skipped.
    """
    exports = root_exports()
    out: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name == "advlab" or a.name.startswith("advlab.")]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            if base != "advlab" and not base.startswith("advlab."):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                if base != "advlab":
                    out.append((node.lineno, sub if is_module(sub) else base))
                elif alias.name in ROOT_METADATA:
                    continue
                else:
                    out.append((node.lineno, sub if is_module(sub) else exports.get(alias.name, "advlab")))
    return out


def top(dotted: str) -> str:
    """``advlab.defenses.training`` -> ``defenses``; the root ``advlab`` -> ``advlab``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "advlab"


def arrows(source: str, file: str, module: str, is_package: bool = False) -> list[Arrow]:
    """Every import of another top-level advlab part in ``source`` (a module named ``module``)."""
    me = top(module)
    return [
        Arrow(file, line, me, top(what), what)
        for line, what in imported_modules(source, module, is_package)
        if top(what) != me
    ]


def problems(arrow: Arrow) -> list[str]:
    """Why ``arrow`` must not exist (empty when it may)."""
    where = f"{arrow.file}:{arrow.line}: {arrow.importer} -> {arrow.target} ({arrow.what})"
    if arrow.importer not in LAYERS:
        return [f"{where}: advlab.{arrow.importer} is in no layer; place it in LAYERS in tests/test_architecture.py"]
    if arrow.target == "advlab":
        return [f"{where}: imports a name from the package root; import it from the module that defines it"]
    if arrow.target not in LAYERS:
        return [f"{where}: advlab.{arrow.target} is in no layer; place it in LAYERS in tests/test_architecture.py"]
    mine, theirs = LAYERS[arrow.importer], LAYERS[arrow.target]
    if theirs > mine:
        return [
            f"{where}: {arrow.importer} ({LAYER_NAMES[mine]}) must not import the higher layer {arrow.target} "
            f"({LAYER_NAMES[theirs]}): nothing imports a higher layer"
        ]
    if (arrow.importer, arrow.target) in FORBIDDEN:
        return [
            f"{where}: forbidden arrow {arrow.importer} -> {arrow.target}: {FORBIDDEN[arrow.importer, arrow.target]}"
        ]
    return []


def source_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def all_arrows() -> list[Arrow]:
    out: list[Arrow] = []
    for path in source_files():
        module = module_name(path)
        if module == "advlab":  # the public API re-exports every layer; nothing inside imports it (checked above)
            continue
        out += arrows(path.read_text(), str(path.relative_to(SRC.parent)), module, path.name == "__init__.py")
    return out


# ------------------------------------------------------------------------------------------------ the tests
def test_every_module_is_placed_in_a_layer() -> None:
    unplaced = sorted(
        {module_name(p) for p in source_files() if module_name(p) != "advlab" and top(module_name(p)) not in LAYERS}
    )
    assert not unplaced, (
        "modules in no layer (place each top-level name in LAYERS in tests/test_architecture.py): "
        + ", ".join(unplaced)
    )


def test_no_forbidden_import_arrows() -> None:
    found = [msg for arrow in all_arrows() for msg in problems(arrow)]
    assert not found, "forbidden imports:\n" + "\n".join(found)


def test_the_checker_catches_forbidden_imports() -> None:
    """A synthetic zoo module with every kind of import: the checker names each bad arrow with its line."""
    source = (
        "from advlab.attacks import PGD\n"  # 1: zoo -> attacks, sideways but forbidden
        "import advlab.errors\n"  # 2: zoo -> core: fine
        "from . import normalize\n"  # 3: inside zoo: not an arrow
        "def f():\n"
        "    from ..cli import main\n"  # 5: relative, function-level: zoo -> cli (higher)
        "    import advlab.report.html\n"  # 6: zoo -> report (higher)
        "    from advlab import evaluate, data, __version__\n"  # 7: evaluate -> evaluation (higher); data: fine
        "from advlab.threat import project\n"  # 8: core: fine
    )
    found = [msg for a in arrows(source, "zoo/fake.py", "advlab.zoo.fake") for msg in problems(a)]
    assert len(found) == 4, found
    assert found[0].startswith("zoo/fake.py:1: zoo -> attacks") and "forbidden arrow" in found[0]
    assert found[1].startswith("zoo/fake.py:5: zoo -> cli (advlab.cli)") and "higher layer" in found[1]
    assert found[2].startswith("zoo/fake.py:6: zoo -> report (advlab.report.html)")
    via = "evaluation" if root_exports().get("evaluate", "").startswith("advlab.evaluation") else "advlab"
    assert found[3].startswith(f"zoo/fake.py:7: zoo -> {via}")  # a root re-export counts as its defining module
    # relative imports resolve from the package: `from .. import x` in advlab/defenses/__init__.py is advlab.x
    pkg = arrows(
        "from ..experiments import study\nfrom .weights import perturb\n",
        "defenses/__init__.py",
        "advlab.defenses",
        True,
    )
    assert [(a.line, a.target) for a in pkg] == [(1, "experiments")] and problems(pkg[0])
    # a module in no layer says where to place it
    (unknown,) = problems(Arrow("new.py", 1, "newthing", "errors", "advlab.errors"))
    assert "place it in LAYERS" in unknown
    assert problems(Arrow("cli/x.py", 3, "cli", "advlab", "advlab")) and not problems(
        Arrow("cli/x.py", 3, "cli", "zoo", "advlab.zoo")
    )


def long_functions(limit: int = 60) -> list[str]:
    """``file:line name (n lines)`` for every function in src/ longer than ``limit`` lines (def line to last line)."""
    out = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = (node.end_lineno or node.lineno) - node.lineno + 1
                if n > limit:
                    out.append(f"{path.relative_to(SRC.parent)}:{node.lineno} {node.name} ({n} lines)")
    return out


def test_no_function_is_longer_than_60_lines() -> None:
    found = long_functions()
    assert not found, "functions longer than 60 lines (split them):\n" + "\n".join(found)


def test_evaluate_takes_at_most_6_parameters() -> None:
    import advlab.evaluation as evaluation

    if not hasattr(evaluation, "__path__"):
        pytest.skip("advlab.evaluation is still a single module, not yet the package of issue 12")
    params = inspect.signature(evaluation.evaluate).parameters
    assert len(params) <= 6, f"evaluate has {len(params)} parameters: {', '.join(params)}"


def documented_imports() -> dict[str, set[str]]:
    """ARCHITECTURE.md's import listing: ``part -> other parts it imports``, read from the fenced block that
    follows the heading "## Imports between the parts"."""
    text = (SRC.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    block = text.split("## Imports between the parts", 1)[1].split("```", 2)[1]
    out: dict[str, set[str]] = {}
    for line in block.strip().splitlines():
        part, _, targets = line.partition("->")
        out[part.strip()] = {t.strip() for t in targets.split(",") if t.strip()}
    return out


def test_architecture_md_lists_the_imports_the_source_has() -> None:
    real: dict[str, set[str]] = {}
    for arrow in all_arrows():
        real.setdefault(arrow.importer, set()).add(arrow.target)
    documented = documented_imports()
    diff = {
        part: (
            sorted(real.get(part, set()) - documented.get(part, set())),
            sorted(documented.get(part, set()) - real.get(part, set())),
        )
        for part in sorted(set(real) | set(documented))
        if real.get(part, set()) != documented.get(part, set())
    }
    assert not diff, "ARCHITECTURE.md's import listing is out of date (part: (missing, no longer true)): " + str(diff)
