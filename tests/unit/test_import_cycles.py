"""The package layout keeps one dependency direction: no cycle among medseg's subpackages and top-level modules
(module-level imports; an import inside a function is lazy and may point back), and library code never imports a
command module."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "medseg"


def unit(module: str) -> str | None:
    """`medseg.data.io` -> `data`, `medseg.runtime` -> `runtime`; None outside medseg or for `medseg` itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "medseg" and len(parts) > 1 else None


def module_level_imports(path: Path) -> list[str]:
    """Absolute names of the modules a file imports at module level (relative imports resolved)."""
    name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = name.split(".")[:-1]  # a module's package; `medseg.data.__init__` -> medseg.data
    names = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names += [module] + [f"{module}.{a.name}" for a in node.names]
    return names


def unit_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        if rel.parts == ("medseg", "__init__"):
            continue
        src = unit(".".join(rel.parts))
        for name in module_level_imports(path):
            dst = unit(name)
            if dst and dst != src:
                edges.setdefault(src, set()).add(dst)
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan): each holds at least one cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in edges.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_checker_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_package_level_import_cycle():
    edges = unit_graph()
    assert {"data", "inference", "models", "training", "evaluation"} <= set(edges)  # the graph was read
    assert cycles(edges) == []


def test_em_holds_algorithms_only():
    assert not unit_graph().get("em", set()) & {"inference", "training", "data", "models"}


def test_library_code_does_not_import_the_bench_command():
    for path in (PACKAGE / "search").rglob("*.py"):
        assert "medseg.bench.run" not in module_level_imports(path), path
