"""The package's layout: imports point one way, from the ways in down to the model, with no
circle, type-only and function-level imports included.

Every ``import`` and ``from ... import`` in npdistil/ is read with ``ast`` (nothing is
imported), resolved to the npdistil module it names, and held against ``LAYERS``.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "npdistil"

# From the ground up: a module may import modules of its own layer or of layers below it,
# never above. One layer's modules may not import each other in a circle either.
LAYERS = [
    ["npdistil.errors"],
    ["npdistil.model"],  # the transformer: config, textbook and fast passes, numerics, threads
    ["npdistil.text"],  # tokenizer, sentence-transformers modules, encode
    ["npdistil.weights"],  # Hub, checkpoint readers, conversion, the cache
    ["npdistil.tasks", "npdistil.system"],  # pipelines over the heads; what npdistil runs on
    ["npdistil.api"],  # load, Model
    ["npdistil.inside"],  # looking inside a model
    ["npdistil.cli", "npdistil.spark", "npdistil.serve"],  # the ways in
    ["npdistil"],  # the package's face: __init__.py hands on the public names
]


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _package_of(name: str) -> str:
    path = MODULES[name]
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = _package_of(importer).split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports(name: str) -> set[str]:
    """The npdistil modules ``name`` imports, anywhere in its code."""
    tree = ast.parse(MODULES[name].read_text(), filename=str(MODULES[name]))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node)
            # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name``, mod.
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names
            ]
        else:
            continue
        found |= {t for t in targets if t in MODULES and t != name}
    return found


def layer(name: str) -> int:
    for i, prefixes in enumerate(LAYERS):
        if any(name == p or name.startswith(p + ".") for p in prefixes if p != "npdistil"):
            return i
    assert name == "npdistil", f"{name} belongs to no layer: add it to LAYERS"
    return len(LAYERS) - 1


def test_every_module_has_a_layer():
    for name in MODULES:
        layer(name)


def test_imports_point_down():
    upward = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a in MODULES
        for b in sorted(imports(a))
        if layer(b) > layer(a)
    ]
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), and self-loops."""
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
            if len(component) > 1 or v in graph[v]:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycle():
    graph = {name: imports(name) for name in MODULES}
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_cycle_finder_finds_cycles():
    # The test above can fail: a circle of three, a self-loop and a clean chain.
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}}
    assert cycles(graph) == [["a", "b", "c"], ["d"]]


def test_imports_are_read_whole():
    # Function-level and type-only imports count: tasks must not name the Model class that
    # attaches them, even under TYPE_CHECKING.
    tasks = [m for m in MODULES if m.startswith("npdistil.tasks")]
    assert tasks and "npdistil.api" not in set().union(*map(imports, tasks))
    assert "npdistil.model.kernels" in imports("npdistil.system")
    assert "npdistil.weights.storage" in imports("npdistil.cli.files")  # inside a function
