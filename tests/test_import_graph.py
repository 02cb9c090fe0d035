"""The import graph of ``shardforge``, read from the source with ``ast``: no cycles, and the
layering of DESIGN.md ("Package layout and who may import whom").

Every import counts, module-level, inside functions (a lazy import is still a dependency) and
under ``if TYPE_CHECKING:`` (an annotation's import is still a dependency of the design).
Relative imports are resolved,
and ``from pkg import name`` is an edge to ``pkg.name`` when that is a module, else to ``pkg``.
"""

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ("geometry", "vision")
COLUMN_MODULES = ("categorical", "codebook", "crossed", "dense", "geo", "image", "numeric",
                  "strings", "text")
STDLIB = frozenset(sys.stdlib_module_names)


def _modules() -> dict[str, tuple[Path, bool]]:
    """Dotted module name -> (source file, is a package)."""
    out = {}
    for path in sorted((ROOT / "shardforge").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


MODULES = _modules()


def _import_nodes(node: ast.AST):
    """Every Import / ImportFrom node, at any depth."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
        return
    for child in ast.iter_child_nodes(node):
        yield from _import_nodes(child)


def _imports(name: str) -> tuple[set[str], set[str]]:
    """(shardforge modules, top-level names of other packages) that module ``name`` imports."""
    path, is_package = MODULES[name]
    package = name if is_package else name.rpartition(".")[0]
    internal, external = set(), set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name
                (internal if target.split(".")[0] == "shardforge" else external).add(target)
            continue
        if node.level:
            base = package.split(".")[: len(package.split(".")) - node.level + 1]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module
        if module.split(".")[0] != "shardforge":
            external.add(module)
            continue
        for alias in node.names:
            sub = f"{module}.{alias.name}"
            internal.add(sub if sub in MODULES else module)
    unknown = internal - set(MODULES)
    assert not unknown, f"{name} imports modules that do not exist: {sorted(unknown)}"
    return internal, {e.split(".")[0] for e in external}


GRAPH = {name: _imports(name) for name in MODULES}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return [_cycle_in(edges, component) for component in components]


def _cycle_in(edges: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the first module of a strongly connected component."""
    start = min(component)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & component):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no cycle through {start}")


def _subpackage(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def _violations(importer: str, forbidden: tuple[str, ...]) -> list[str]:
    """``module -> imported`` edges from subpackage ``importer`` into ``forbidden`` ones."""
    return [f"{m} -> {t}" for m, (internal, _) in GRAPH.items() if _subpackage(m) == importer
            for t in sorted(internal) if _subpackage(t) in forbidden]


def test_the_graph_reads_lazy_relative_and_from_imports():
    # the edges this test depends on, each of a kind a naive reader would miss
    assert "shardforge.kernels.adamw_triton" in GRAPH["shardforge.kernels.adamw"][0]  # lazy
    assert "shardforge.vision.decode" in GRAPH["shardforge.vision.patches"][0]
    assert "shardforge.geometry" in GRAPH["shardforge.features.geo"][0]  # from pkg import names
    assert "torch" in GRAPH["shardforge.features.layer"][1]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    tree = ast.parse("if TYPE_CHECKING:\n    import x\nelse:\n    import y\ndef f():\n    import z")
    assert [n.names[0].name for n in _import_nodes(tree)] == ["x", "y", "z"]


def test_no_import_cycles():
    cycles = _cycles({name: internal for name, (internal, _) in GRAPH.items()})
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


@pytest.mark.parametrize(("importer", "forbidden"), [
    ("training", ("pipelines", "cli", "demo", "demo_vlm")),
    ("features", ("training", "pipelines", "cli", "demo", "demo_vlm")),
    ("records", ("features", "pipelines", "training", "kernels", *ENGINES)),
    ("protos", ("records", "features", "pipelines", "training", "kernels", *ENGINES)),
    ("kernels", ("protos", "records", "features", "pipelines", "training", *ENGINES)),
    *[(engine, ("protos", "records", "features", "pipelines", "training", "kernels"))
      for engine in ENGINES],
])
def test_layers_import_only_downwards(importer, forbidden):
    bad = _violations(importer, forbidden)
    assert not bad, f"{importer}/ imports what DESIGN.md forbids:\n" + "\n".join(bad)


def test_nothing_but_the_cli_and_the_demo_imports_pipelines():
    allowed = {"pipelines", "cli", "demo", "demo_vlm"}
    bad = [f"{m} -> {t}" for m, (internal, _) in GRAPH.items() if _subpackage(m) not in allowed
           for t in sorted(internal) if _subpackage(t) == "pipelines"]
    assert not bad, "\n".join(bad)


def test_no_training_module_imports_a_column_module():
    columns = {f"shardforge.features.{m}" for m in COLUMN_MODULES}
    bad = [f"{m} -> {t}" for m, (internal, _) in GRAPH.items() if _subpackage(m) == "training"
           for t in sorted(internal & columns)]
    assert not bad, "training imports column modules (use the engines):\n" + "\n".join(bad)


@pytest.mark.parametrize(("subpackage", "allowed"), [
    ("kernels", {"torch", "triton"}),
    *[(engine, {"numpy", "numba", "PIL"}) for engine in ENGINES],
])
def test_third_party_imports_of_the_lower_layers(subpackage, allowed):
    bad = [f"{m} -> {e}" for m, (_, external) in GRAPH.items() if _subpackage(m) == subpackage
           for e in sorted(external - STDLIB - allowed)]
    assert not bad, f"{subpackage}/ may import only {sorted(allowed)}:\n" + "\n".join(bad)


def test_beam_and_tensorflow_stay_out_of_training():
    beam = [m for m, (_, ext) in GRAPH.items() if "apache_beam" in ext
            and _subpackage(m) in ("training", "kernels", "records", *ENGINES)]
    assert not beam, f"training never pays for Beam; these import it: {beam}"
    tf = [m for m, (_, ext) in GRAPH.items() if "tensorflow" in ext and _subpackage(m) != "interop"]
    assert not tf, f"TensorFlow is imported only by shardforge.interop; also by {tf}"
