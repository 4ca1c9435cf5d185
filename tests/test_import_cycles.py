"""No import cycles among the modules of ``src/ayar``: none at load time, and none through imports inside
functions except the known, listed ones.

The graph has an edge A -> B when A imports B anywhere: at module level, inside
an ``if`` or ``try``, or inside a function (deferred imports keep heavy
dependencies off the start-up path, but a deferred import that closes a circle
still means two modules that cannot be understood, tested or moved apart).
Importing ``a.b.c`` also loads the packages ``a`` and ``a.b``, so those are edges
too. Only ``if TYPE_CHECKING:`` blocks, which never run, are left out.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ayar

ROOT = Path(ayar.__file__).parent


def _modules() -> dict[str, Path]:
    mods = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods[".".join(parts)] = path
    return mods


def _is_type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"))


def imported_names(tree: ast.Module, package: str, *, in_functions: bool = True) -> list[str]:
    """Dotted names imported anywhere in the module (or, without ``in_functions``, outside function bodies),
    except under ``if TYPE_CHECKING:``."""
    names: list[str] = []

    def visit(node: ast.AST) -> None:
        if not in_functions and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return
        if _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names.append(base)
            names.extend(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return names


def import_graph(*, in_functions: bool = True) -> dict[str, set[str]]:
    """Module -> the ``ayar`` modules (and their parent packages) it imports."""
    mods = _modules()
    graph: dict[str, set[str]] = {name: set() for name in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for target in imported_names(ast.parse(path.read_text(encoding="utf-8")), package, in_functions=in_functions):
            while target and target not in mods:  # `from pkg import name`: name may be an attribute
                target = target.rpartition(".")[0]
            parts = target.split(".")
            for end in range(1, len(parts) + 1):  # importing a.b.c loads a, a.b, a.b.c
                dep = ".".join(parts[:end])
                if dep in mods and dep != name and not name.startswith(dep + "."):
                    graph[name].add(dep)
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components with more than one module (each one holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
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
            connect(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_function_level_imports_but_not_type_checking_ones():
    tree = ast.parse("import ayar.errors\nfrom .. import section\nif TYPE_CHECKING:\n    import ayar.cli\n"
                     "def f():\n    from .config import EvalSection\n")
    assert imported_names(tree, "ayar.eval") == ["ayar.errors", "ayar", "ayar.section", "ayar.eval.config",
                                                 "ayar.eval.config.EvalSection"]


# Cycles through imports inside functions that are known and tracked: the governance hooks (landed beside this
# test) read recipes and gates lazily, and the recipe's `governance:` section validates its gate conditions with
# ayar.govern.gates. Any other cycle, or a change to this one, fails the test.
KNOWN_DEFERRED_CYCLES = [
    ["ayar.export.manifest", "ayar.govern.config", "ayar.govern.gates", "ayar.govern.lineage", "ayar.govern.record",
     "ayar.model.run_folder", "ayar.recipe", "ayar.train.reference"],
]


def test_no_module_level_import_cycles_in_ayar():
    """No two modules need each other to finish loading (imports inside functions left out)."""
    graph = import_graph(in_functions=False)
    cycles = strongly_connected(graph)
    assert not cycles, "modules that import each other at load time: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_no_import_cycles_in_ayar():
    graph = import_graph()
    assert len(graph) > 50 and graph["ayar.recipe"]  # the walk found the package and its imports
    cycles = [c for c in strongly_connected(graph) if c not in KNOWN_DEFERRED_CYCLES]
    assert not cycles, "modules that import each other: " + "; ".join(" <-> ".join(c) for c in cycles)
