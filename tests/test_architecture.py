"""The package's structure: no import circles among nmcm_deploy's modules, and the layout that
docs/architecture.md describes is the tree's."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "nmcm_deploy"


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, at the top or inside a function alike (a lazy
    import that closes a circle is a circle all the same)."""
    modules = {module_name(p, package.parent): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        here = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = here.split(".")[: len(here.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import mod, mod2` depends on those modules; `from mod import name`, on
                # the module. (A package's __init__ that imports its own modules is not a circle
                # with each of them.)
                targets = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                targets = targets or [base]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
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


def test_the_walk_finds_a_circle_when_there_is_one(tmp_path: Path) -> None:
    """The check itself: planted circles (through a lazy, relative import; through the second name
    of an import) are found."""
    pkg = tmp_path / "nmcm_deploy"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from nmcm_deploy.sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "sub" / "c.py").write_text("from .a import something\n")
    (pkg / "sub" / "d.py").write_text("from nmcm_deploy.sub.a import x\n")
    # The second module of one `from ... import` counts as much as the first.
    (pkg / "sub" / "e.py").write_text("from nmcm_deploy.sub import d, f\n")
    (pkg / "sub" / "f.py").write_text("import nmcm_deploy.sub.e\n")
    assert circles(import_graph(pkg)) == [
        ["nmcm_deploy.sub.a", "nmcm_deploy.sub.b", "nmcm_deploy.sub.c"],
        ["nmcm_deploy.sub.e", "nmcm_deploy.sub.f"],
    ]


def test_no_import_circles() -> None:
    graph = import_graph(PACKAGE)
    assert len(graph) > 50  # the walk saw the package
    assert circles(graph) == []


def test_architecture_doc_names_only_paths_that_exist() -> None:
    """Every `nmcm_deploy/...` and `firmware/...` path docs/architecture.md names is in the tree,
    and every subpackage of nmcm_deploy is named there (itself or a module of it)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    named = {
        m.rstrip(".") for m in re.findall(r"(?<![\w/])((?:nmcm_deploy|firmware)/[\w./-]*)", text)
    }
    assert len(named) > 10, "the document names hardly any paths"
    assert sorted(n for n in named if not (ROOT / n).exists()) == []
    packages = {
        f"nmcm_deploy/{p.parent.relative_to(PACKAGE).as_posix()}/"
        for p in PACKAGE.glob("*/__init__.py")
    }
    assert sorted(p for p in packages if not any(n.startswith(p) for n in named)) == []
