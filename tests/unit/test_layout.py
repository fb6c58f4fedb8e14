"""The package's structure: no import cycles (imports inside functions included), and the README's map is true."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from cptnb.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "cptnb"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """Module -> the cptnb modules it imports anywhere in its body (``from pkg import submodule`` resolved)."""
    modules = _modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_graph_sees_imports_inside_functions():
    graph = import_graph()
    # cli imports its commands' modules inside the command functions only.
    assert "cptnb.train.run" in graph["cptnb.cli"]
    assert "cptnb.export" in graph["cptnb.cli"]


def test_no_module_imports_itself_back():
    assert cycles(import_graph()) == []


def test_the_readme_layout_names_every_part_of_the_package():
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    layout = readme.split("## Repository layout", 1)[1].split("\n## ", 1)[0]
    section = layout.split("\ncptnb/\n", 1)[1].split("\nnotebooks/", 1)[0]  # the package's own lines
    named = set(re.findall(r"\b([a-z_]+(?:\.py|/))", section))
    top = {p.name + "/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    top |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert top - named == set(), f"README layout does not mention {sorted(top - named)}"
    for package in (p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()):
        modules = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
        missing = {m for m in modules if m.removesuffix(".py") not in section}
        assert not missing, f"README layout does not mention {package.name}/{sorted(missing)}"
    listed_files = set(re.findall(r"\b([a-z_]+\.py)\b", section))
    existing = {p.name for p in PACKAGE.rglob("*.py")}
    assert listed_files - existing == set(), f"README layout names modules that do not exist: {listed_files - existing}"
