"""The package's import graph, read from the source with ``ast`` (nothing is imported).

Every ``import`` / ``from ... import`` of a ``video3d_zoo`` module is an edge, resolved to the
module it loads (``from .io import decode`` -> ``video3d_zoo.io.decode``; ``from .errors import
ConfigError`` -> ``video3d_zoo.errors``).  An edge is *module-level* when the statement runs at
import time (top level, or inside a module-level ``if`` / ``try``), and *function-level* when it
sits inside a function (deferred until called).  Imports under ``if TYPE_CHECKING:`` never run
and are left out.  Parent packages that Python initialises on the way (``video3d_zoo.train``
for ``video3d_zoo.train.loop``) are not edges: an import only ever finds them half-initialised
when they are the importer's own package, which is not a cycle that can break anything.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Set, Tuple

ROOT = "video3d_zoo"


@dataclass
class Edge:
    source: str
    target: str
    line: int
    module_level: bool
    names: Tuple[str, ...] = ()  # the names taken from the target (``from X import names``)


@dataclass
class ImportGraph:
    modules: Dict[str, Path]
    edges: List[Edge] = field(default_factory=list)

    def targets(self, module_level: bool = True) -> Dict[str, Set[str]]:
        out: Dict[str, Set[str]] = {name: set() for name in self.modules}
        for edge in self.edges:
            if edge.module_level or not module_level:
                out[edge.source].add(edge.target)
        return out

    def counts(self) -> Tuple[int, int]:
        """``(module-level edges, function-level edges)``."""
        top = sum(1 for e in self.edges if e.module_level)
        return top, len(self.edges) - top


def module_names(package_dir: Path) -> Dict[str, Path]:
    """``{dotted name: file}`` of every module of the package (``__init__`` gives the package's name)."""
    out = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = (ROOT,) + path.relative_to(package_dir).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterator[Tuple[ast.stmt, bool]]:
    """Every import statement with whether it runs at module import time."""
    def walk(node: ast.AST, top: bool) -> Iterator[Tuple[ast.stmt, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                yield child, top
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                yield from walk(ast.Module(body=child.orelse, type_ignores=[]), top)
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                yield from walk(child, False)
            else:
                yield from walk(child, top)
    yield from walk(tree, True)


def _base(module: str, is_package: bool, level: int) -> str:
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    if level > 1:
        parts = parts[: len(parts) - (level - 1)]
    return ".".join(parts)


def resolve(node: ast.stmt, module: str, is_package: bool, modules: Dict[str, Path]) -> Iterator[Tuple[str, Tuple[str, ...]]]:
    """``(target module, names taken)`` of one import statement, for targets inside the package."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == ROOT or alias.name.startswith(ROOT + "."):
                yield alias.name, ()
        return
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = _base(module, is_package, node.level)
        target = f"{base}.{node.module}" if node.module else base
    else:
        target = node.module or ""
        if not (target == ROOT or target.startswith(ROOT + ".")):
            return
    plain = []
    for alias in node.names:
        sub = f"{target}.{alias.name}"
        if sub in modules:
            yield sub, ()
        else:
            plain.append(alias.name)
    if plain:
        yield target, tuple(plain)


def build(package_dir: Path) -> ImportGraph:
    modules = module_names(package_dir)
    graph = ImportGraph(modules)
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        for node, top in _imports(tree):
            for target, names in resolve(node, name, is_package, modules):
                graph.edges.append(Edge(name, target, node.lineno, top, names))
    return graph


def find_cycle(targets: Dict[str, Set[str]]) -> Optional[List[str]]:
    """One cycle of the graph as ``[a, b, ..., a]``, or ``None``."""
    state: Dict[str, int] = {}  # 1: on the stack, 2: done
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(targets.get(node, ())):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(targets):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def cyclic_groups(targets: Dict[str, Set[str]]) -> List[Set[str]]:
    """The strongly connected components with more than one module (each holds a cycle)."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    groups: List[Set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(targets.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.add(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(group)

    for start in sorted(targets):
        if start not in index:
            visit(start)
    return groups
