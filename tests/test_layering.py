"""One-way layering: sftkit's packages import each other in one direction only.

Every module under sftkit/ is parsed with `ast`; each import of another sftkit unit, at the
top of a module or inside a function (a lazy import runs too, just later), is an edge from the
importing unit to the imported one. A unit is a subpackage (``sftkit/data/``), a top-level
module (``sftkit/errors.py``) or the root package itself (``sftkit/__init__.py``, the public
face). Two rules:

1. no cycle between units (the cycle is printed with the import lines that make it);
2. every edge points to a lower layer of the drawing in docs/architecture.md, or, within one
   layer, to a unit listed to its left. The drawing is read from the document, so the
   document and this test cannot disagree, and a new package fails here until it is drawn.

Imports under ``if TYPE_CHECKING:`` are exempt. They never run, so they cannot make import
order matter, pull torch into a light command or create an import-time cycle; they let a
lower layer name a higher layer's type in a signature (a hookspec taking a `ResolvedRecipe`
or a `RunContext`) without depending on its code, and mypy still checks them. The
``"package.module:Attr"`` factory strings of component specs are not imports either: they
are the registry's seam, resolved only when a run builds that component.
"""

from __future__ import annotations

import ast
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "sftkit"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
PUBLIC_FACE = "sftkit"  # the unit name of sftkit/__init__.py


@dataclass(frozen=True)
class Edge:
    source: str  # importing unit
    target: str  # imported unit
    where: str  # "sftkit/x/y.py:12"
    statement: str  # the import as written

    def render(self) -> str:
        return f"{self.where}: {self.statement}"


def unit_of(module: str) -> str:
    """``sftkit.data.prepare`` -> ``data``; ``sftkit.errors`` -> ``errors``; ``sftkit`` -> the
    public face."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else PUBLIC_FACE


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_submodule(name: str) -> bool:
    """Does ``sftkit.<name>`` name a module or package (for ``from sftkit import name``)?"""
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name / "__init__.py").is_file()


def _type_checking_guard(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement that can run: module level and inside functions and classes,
    skipping the bodies of ``if TYPE_CHECKING:`` (their ``else:`` branch does run)."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
            return
        if isinstance(node, ast.If) and _type_checking_guard(node):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool) -> list[str]:
    """The sftkit modules an import statement loads, as dotted names."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name == "sftkit" or a.name.startswith("sftkit.")]
    if node.level:  # relative: resolve against the importing module's package
        base = importer.split(".")
        base = base[: len(base) - node.level + (1 if is_package else 0)]
        module = ".".join([*base, *([node.module] if node.module else [])])
    else:
        module = node.module or ""
    if module != "sftkit" and not module.startswith("sftkit."):
        return []
    if module == "sftkit":  # `from sftkit import errors` loads sftkit.errors
        return [f"sftkit.{a.name}" if is_submodule(a.name) else "sftkit" for a in node.names]
    return [module]


def collect_edges() -> list[Edge]:
    edges: list[Edge] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        importer = module_name(path)
        source = unit_of(importer)
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(path))
        for node in _imports(tree):
            for target_module in _targets(node, importer, path.name == "__init__.py"):
                target = unit_of(target_module)
                if target != source:
                    edges.append(
                        Edge(
                            source,
                            target,
                            f"{path.relative_to(ROOT)}:{node.lineno}",
                            ast.get_source_segment(text, node) or ast.dump(node),
                        )
                    )
    return edges


def units() -> set[str]:
    found = {PUBLIC_FACE}
    for path in PACKAGE.iterdir():
        if path.suffix == ".py" and path.name != "__init__.py":
            found.add(path.stem)
        elif path.is_dir() and (path / "__init__.py").is_file():
            found.add(path.name)
    return found


def declared_layers() -> list[list[str]]:
    """The drawing in docs/architecture.md, bottom layer first: the fenced block after the
    ``<!-- layers -->`` marker, one layer per line written ``label  unit · unit · ...``."""
    text = ARCHITECTURE.read_text(encoding="utf-8")
    match = re.search(r"<!-- layers -->\s*```[^\n]*\n(.*?)```", text, re.S)
    assert match, f"{ARCHITECTURE} has no ```-fenced layer drawing after <!-- layers -->"
    layers: list[list[str]] = []
    for line in match.group(1).splitlines():
        if not line.strip() or set(line.strip()) <= set("|^v-"):
            continue  # blank lines and the arrows between layers
        columns = re.split(r"\s{2,}", line.strip(), maxsplit=1)
        assert len(columns) == 2, f"layer line without a label and units: {line!r}"
        layers.append([u.strip() for u in columns[1].split("·")])
    return layers[::-1]


def rank() -> dict[str, tuple[int, int]]:
    """unit -> (layer, position in its layer); an edge must go to a smaller rank."""
    return {
        unit: (layer, position)
        for layer, members in enumerate(declared_layers())
        for position, unit in enumerate(members)
    }


def cycles(edges: list[Edge]) -> list[list[str]]:
    """The strongly connected components with more than one unit (Tarjan)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        graph[e.source].add(e.target)
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


def shortest_cycle(start: str, component: list[str], edges: list[Edge]) -> list[Edge]:
    """A shortest cycle from `start` back to it inside `component`, as the imports that make it."""
    inside = set(component)
    by_source: dict[str, list[Edge]] = defaultdict(list)
    for e in edges:
        if e.source in inside and e.target in inside:
            by_source[e.source].append(e)
    # breadth-first from start back to start, remembering the edge taken
    previous: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in by_source[v]:
                if e.target == start:
                    path = [e]
                    while path[0].source != start:
                        path.insert(0, previous[path[0].source])
                    return path
                if e.target not in previous:
                    previous[e.target] = e
                    nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {component}")  # pragma: no cover


EDGES = collect_edges()


def test_the_parser_sees_lazy_imports_and_skips_type_checking_blocks():
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "from sftkit.errors import SftkitError\n"
        "if TYPE_CHECKING:\n"
        "    from sftkit.recipe.load import ResolvedRecipe\n"
        "def f():\n"
        "    from sftkit.training.runner import run_recipe\n"
        "    import sftkit.memory.terms\n"
        "class C:\n"
        "    def g(self):\n"
        "        from sftkit import hookspecs, __version__\n"
    )
    loaded = [unit_of(t) for node in _imports(tree) for t in _targets(node, "sftkit.cli.x", False)]
    assert loaded == ["errors", "training", "memory", "hookspecs", PUBLIC_FACE]


def test_no_cycles_between_packages():
    problems = []
    for component in cycles(EDGES):
        problems.append(f"packages in one cycle: {', '.join(component)}")
        seen: set[frozenset[tuple[str, str]]] = set()
        for start in component:  # a shortest cycle through each, each shown once
            path = shortest_cycle(start, component, EDGES)
            key = frozenset((e.source, e.target) for e in path)
            if key in seen:
                continue
            seen.add(key)
            chain = " -> ".join([path[0].source, *(e.target for e in path)])
            problems.append(f"  cycle {chain}:")
            problems.extend(f"    {e.source} -> {e.target}  {e.render()}" for e in path)
    assert not problems, "import cycles between sftkit packages:\n" + "\n".join(problems)


def test_the_drawing_names_every_package_once():
    drawn = [u for layer in declared_layers() for u in layer]
    duplicates = sorted({u for u in drawn if drawn.count(u) > 1})
    assert not duplicates, f"drawn twice in docs/architecture.md: {duplicates}"
    missing = sorted(units() - set(drawn))
    assert not missing, (
        f"not in the layer drawing of docs/architecture.md: {missing}; add each where it "
        "belongs (it may import only what is below it, or to its left)"
    )
    unknown = sorted(set(drawn) - units())
    assert not unknown, f"docs/architecture.md draws units that do not exist: {unknown}"


def test_every_import_follows_the_layer_order():
    ranks = rank()
    wrong = [
        e
        for e in EDGES
        if e.source in ranks and e.target in ranks and ranks[e.target] >= ranks[e.source]
    ]
    assert not wrong, (
        "imports against the layer order of docs/architecture.md (a unit imports only from "
        "lower layers, or from its left in its own layer):\n"
        + "\n".join(f"  {e.source} -> {e.target}  {e.render()}" for e in wrong)
    )


@pytest.mark.parametrize("unit", ["errors", "suggest", "runpaths", "devices", "dtypes"])
def test_the_foundation_imports_nothing_from_sftkit(unit):
    """The owners of shared facts are importable from anywhere: they depend on nothing."""
    assert [e.render() for e in EDGES if e.source == unit] == []
