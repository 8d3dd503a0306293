"""The layer rule of README.md's "Architecture" table, enforced: every import in bpj/ (module level, inside
functions and under TYPE_CHECKING alike, read with ast) points at its own layer or one below it, every module
belongs to a layer, and no group of modules imports itself round in a cycle."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "bpj"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_table() -> list[tuple[int, str, list[str]]]:
    """``(number, name, [module prefixes])`` for every row of README's layer table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Architecture", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\|\s*(\d+)\s+([^|]+?)\s*\|([^|]+)\|", line)
        if m:
            paths = re.findall(r"`([^`]+)`", m[3])
            prefixes = [p.removesuffix(".py").removesuffix("/").replace("/", ".") for p in paths]
            rows.append((int(m[1]), m[2], [p.removesuffix(".__init__") for p in prefixes]))
    return rows


LAYERS = layer_table()


def layer_of(module: str) -> tuple[int, str] | None:
    """The row whose longest prefix matches ``module``."""
    best: tuple[int, int, str] | None = None
    for number, name, prefixes in LAYERS:
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and (best is None or len(prefix) > best[0]):
                best = (len(prefix), number, name)
    return None if best is None else (best[1], best[2])


def resolve(name: str) -> str | None:
    """The bpj module an imported name lives in (``bpj.jobs.BatchPredictionJob`` -> ``bpj.jobs``)."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def imports(module: str) -> Iterator[tuple[int, str]]:
    """``(line, imported bpj module)`` for every import statement of ``module``, wherever it stands."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, *([node.module] if node.module else [])])
            # ``from bpj import errors`` imports the module bpj.errors, not the package face.
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for name in names:
            if name == "bpj" or name.startswith("bpj."):
                target = resolve(name)
                if target is not None and target != module:
                    yield node.lineno, target


GRAPH = {m: sorted({t for _, t in imports(m)}) for m in MODULES}


def test_the_table_has_the_layers_in_order_and_covers_every_module():
    assert [n for n, _, _ in LAYERS] == list(range(1, len(LAYERS) + 1)), "number the rows 1, 2, 3..."
    for _, _, prefixes in LAYERS:
        for prefix in prefixes:
            assert prefix in MODULES or any(m.startswith(prefix + ".") for m in MODULES), (
                f"README's layer table names {prefix}, which is not in bpj/"
            )
    unplaced = [m for m in MODULES if layer_of(m) is None]
    assert not unplaced, f"add these modules to a row of README's layer table: {unplaced}"


def test_no_import_points_up_the_layers():
    upward = []
    for module in MODULES:
        here = layer_of(module)
        assert here is not None
        for line, target in imports(module):
            there = layer_of(target)
            assert there is not None
            if there[0] < here[0]:
                upward.append(
                    f"{MODULES[module].relative_to(ROOT)}:{line} ({here[1]}) imports {target} ({there[1]})"
                )
    assert not upward, "imports that point up the layer table:\n" + "\n".join(upward)


def cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, []):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_modules_import_each_other_round_in_a_cycle():
    # A package's __init__ re-exporting its own modules is the package's face, not a cycle in the code.
    graph = {
        m: [t for t in targets if not (MODULES[t].name == "__init__.py" and m.startswith(t + "."))]
        for m, targets in GRAPH.items()
    }
    assert cycles(graph) == []


@pytest.mark.parametrize(
    "graph, expected",
    [
        ({"a": ["b"], "b": ["a"], "c": ["a"]}, [["a", "b"]]),
        ({"a": ["b"], "b": ["c"], "c": []}, []),
        ({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["d"]}, [["a", "b", "c"]]),
    ],
)
def test_the_cycle_finder_finds_cycles(graph, expected):
    assert cycles(graph) == expected


def test_the_layer_check_sees_function_level_and_type_checking_imports():
    # bpj.jobs imports bpj.outputs only inside a method; bpj.aio imports generated clients under
    # TYPE_CHECKING: both must be in the graph, or an upward import could hide there.
    assert "bpj.outputs" in GRAPH["bpj.jobs"]
    assert any(t.startswith("bpj._gen") for t in GRAPH["bpj.aio"])
    assert layer_of("bpj.local.servers.serve") == layer_of("bpj.local")
