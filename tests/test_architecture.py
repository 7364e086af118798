"""The module graph of ``pipeline/`` and ``tasks/``: no import circle, no module over 400 lines, and a
library that never imports the tasks or Luigi.

The graph is read from the source with :mod:`ast`, not from ``sys.modules``: it holds *every* import,
those at the top of a module and those inside functions (the lazy imports that keep a config load
free of torch and geometry libraries), because a lazy import that closes a circle still ties two
modules into one. Imports under ``if TYPE_CHECKING:`` are left out: they never run, and mypy alone
reads them. An import names the module it reaches: ``from pipeline.imagery import xyz`` is an edge
to ``pipeline.imagery.xyz`` (a package's ``__init__`` is an edge only when it is named itself).
A module imported by its name as a string (``importlib.import_module``) is not seen: the library
uses that only for third-party packages (their versions in run records), the tasks for the task
module of a stage the stage table names (a task module imports downward, never the library up).
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("pipeline", "tasks")
MAX_LINES = 400


def module_name(path: Path, root: Path = ROOT) -> str:
    """``pipeline/imagery/raster.py`` -> ``pipeline.imagery.raster``; a package's ``__init__.py``
    -> the package's name."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the packages: ``{dotted name: file}``."""
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under ``node``, at any depth, except the body of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def imported_names(name: str, path: Path, modules: Collection[str] = ()) -> set[str]:
    """The dotted names module ``name`` (in file ``path``) imports. ``from a import b`` is ``a.b``
    when that is one of ``modules``, else ``a``."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:  # relative: from the package that holds this module
            pkg = name.split(".") if is_package else name.split(".")[:-1]
            pkg = pkg[:len(pkg) - node.level + 1]
            base = ".".join([*pkg, base] if base else pkg)
        out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names)
    return out


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    """``{module: the project modules it imports}`` over ``pipeline/`` and ``tasks/``."""
    files = source_files(root)
    return {name: {t for t in imported_names(name, path, files) if t in files and t != name}
            for name, path in files.items()}


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import circle as ``[a, b, ..., a]``, or None when the graph has none (depth-first)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_graph_reads_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    """The reader itself: an import inside a function is an edge, one under TYPE_CHECKING is not,
    and a circle closed only by a lazy import is found."""
    pkg = tmp_path / "pipeline"
    pkg.mkdir()
    (tmp_path / "tasks").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from typing import TYPE_CHECKING\nimport pipeline.b\n"
                              "if TYPE_CHECKING:\n    from pipeline import c\n")
    (pkg / "b.py").write_text("def f():\n    from pipeline import c\n    return c\n")
    (pkg / "c.py").write_text("x = 1\n")
    graph = import_graph(tmp_path)
    assert graph["pipeline.a"] == {"pipeline.b"} and graph["pipeline.b"] == {"pipeline.c"}
    assert find_cycle(graph) is None
    (pkg / "c.py").write_text("def g():\n    from .a import x\n    return x\n")
    assert find_cycle(import_graph(tmp_path)) == ["pipeline.a", "pipeline.b", "pipeline.c", "pipeline.a"]


def test_no_import_circle() -> None:
    """No module imports, at the top or inside a function, a module that (through any chain)
    imports it back: the library reads as layers, each importing only those below it."""
    cycle = find_cycle(import_graph())
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_no_module_over_400_lines() -> None:
    long = {name: n for name, path in source_files().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_the_library_never_imports_tasks_or_luigi() -> None:
    """``pipeline/`` is pure functions; the Luigi tasks in ``tasks/`` call it, never the other way."""
    files = source_files()
    bad = {name: sorted(t for t in imported_names(name, path) if t.split(".")[0] in ("tasks", "luigi"))
           for name, path in files.items() if name.split(".")[0] == "pipeline"}
    assert not {k: v for k, v in bad.items() if v}


def test_every_library_module_lives_in_a_stage_folder() -> None:
    """``pipeline/`` is grouped by stage (docs/design.md, "Layout"): only the package's own
    ``__init__`` sits at its top; a new module goes into the folder of the stage it serves."""
    loose = sorted(p.name for p in (ROOT / "pipeline").glob("*.py") if p.name != "__init__.py")
    assert loose == [], f"modules outside a stage folder: {loose}"
