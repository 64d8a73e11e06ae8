"""The import graph of skinzoo: layers, cycles and arrows that run up a layer.

Run from the repository root::

    python -m tools.import_graph            # skinzoo/ and cli/ (installed as skinzoo_cli)
    make imports                            # the same

Every ``import`` / ``from ... import`` of one of the scanned modules is read with :mod:`ast`
(nothing is imported or executed), both at module level and inside functions; the latter are
marked ``[in function]`` because they hide from a reader what a module needs (and can hide a
cycle, which then only bites when the function runs). Printed:

- the layers, low to high (:data:`LAYERS`): a module may import from its own layer or below;
- the cycles: strongly connected components of the module graph (top-level and in-function
  imports together), each with the imports that close it;
- the arrows up a layer: imports from a lower layer into a higher one.

Exit code 1 when there is a cycle, 0 otherwise (arrows up a layer are reported, not fatal).
Importing ``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``; those implicit
parent-package imports are not counted as edges (as in other import-graph tools), only what the
source names.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass
from pathlib import Path

# Low to high. A module belongs to the layer of the longest matching name (a name matches
# itself and everything under it). Anything unmatched is listed under "unlayered".
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("skinzoo", "skinzoo.errors", "skinzoo.runtime", "skinzoo.fileio", "skinzoo.ranges",
              "skinzoo.progress", "skinzoo.info", "skinzoo.rundir", "skinzoo.keras_version",
              "skinzoo.metrics")),
    ("data", ("skinzoo.data",)),
    ("models", ("skinzoo.models",)),
    ("train", ("skinzoo.train", "skinzoo.config")),
    ("evaluate", ("skinzoo.evaluate",)),
    ("deploy", ("skinzoo.deploy",)),
    ("cli", ("skinzoo_cli",)),
)
# A top-level package prefix only claims its own __init__, not every module under it.
_EXACT_ONLY = {"skinzoo"}

# folder (relative to the root) -> the module name it is installed as (setup.cfg package_dir)
DEFAULT_PACKAGES = ("skinzoo", "cli=skinzoo_cli")


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool

    @property
    def kind(self) -> str:
        return "in function" if self.in_function else "top-level"


@dataclass
class Graph:
    modules: dict  # module name -> file path
    edges: list  # Edge, one per import statement naming another scanned module


# --- reading the sources -----------------------------------------------------------------------

def module_files(root: Path, packages) -> dict:
    """{module name: path} for every .py file under each ``folder[=module name]`` of ``packages``."""
    modules = {}
    for spec in packages:
        folder, _, name = spec.partition("=")
        base = root / folder
        name = name or folder.replace("/", ".")
        if not base.is_dir():
            raise SystemExit(f"error: {base} is not a folder")
        for path in sorted(base.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join([name, *parts])] = path
    return modules


def _is_package(module: str, modules: dict) -> bool:
    return modules[module].name == "__init__.py"


def _resolve(name: str, modules: dict) -> str | None:
    """The deepest scanned module that ``name`` (a dotted import path) is or lies inside."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _imported_names(node, module: str, modules: dict) -> list[str]:
    """Dotted names an Import/ImportFrom node loads (``from p import m`` loads ``p.m`` if a module)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # relative: from the current package upwards
        package = module if _is_package(module, modules) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = ".".join(p for p in (package, node.module) if p)
    else:
        base = node.module or ""
    return [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names]


class _ImportVisitor(ast.NodeVisitor):
    def __init__(self):
        self.found = []  # (node, in_function)
        self._depth = 0

    def _nested(self, node):
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_Import(self, node):
        self.found.append((node, self._depth > 0))

    visit_ImportFrom = visit_Import


def read_graph(root, packages=DEFAULT_PACKAGES) -> Graph:
    """Parse every module under ``packages`` (folders relative to ``root``) into a Graph."""
    modules = module_files(Path(root), packages)
    edges = []
    for module, path in modules.items():
        visitor = _ImportVisitor()
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        for node, in_function in visitor.found:
            targets = {_resolve(n, modules) for n in _imported_names(node, module, modules)}
            for target in sorted(t for t in targets if t is not None and t != module):
                edges.append(Edge(module, target, node.lineno, in_function))
    return Graph(modules, edges)


# --- analysis ----------------------------------------------------------------------------------

def layer_of(module: str) -> str:
    best, best_len = "unlayered", -1
    for layer, prefixes in LAYERS:
        for prefix in prefixes:
            exact = prefix in _EXACT_ONLY
            if (module == prefix or (not exact and module.startswith(prefix + "."))) \
                    and len(prefix) > best_len:
                best, best_len = layer, len(prefix)
    return best


def layer_rank(layer: str) -> int | None:
    names = [name for name, _ in LAYERS]
    return names.index(layer) if layer in names else None


def cycles(graph: Graph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative), sorted."""
    succ = {m: sorted({e.target for e in graph.edges if e.source == m}) for m in graph.modules}
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = 0
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return sorted(found)


def upward_edges(graph: Graph) -> list[Edge]:
    """Imports from a lower layer into a higher one."""
    out = []
    for e in graph.edges:
        src, dst = layer_rank(layer_of(e.source)), layer_rank(layer_of(e.target))
        if src is not None and dst is not None and dst > src:
            out.append(e)
    return sorted(out, key=lambda e: (e.source, e.target, e.line))


# --- report ------------------------------------------------------------------------------------

def _edge_text(e: Edge) -> str:
    return f"{e.source} -> {e.target}  (line {e.line}, {e.kind})"


def report_lines(graph: Graph) -> list[str]:
    n_func = sum(e.in_function for e in graph.edges)
    lines = [f"{len(graph.modules)} modules, {len(graph.edges)} imports between them "
             f"({len(graph.edges) - n_func} top-level, {n_func} in functions)", "",
             "layers (low to high; a module imports its own layer or below):"]
    by_layer: dict = {}
    for m in graph.modules:
        by_layer.setdefault(layer_of(m), []).append(m)
    for rank, layer in enumerate([*(name for name, _ in LAYERS), "unlayered"]):
        members = sorted(by_layer.get(layer, []))
        if members or layer != "unlayered":
            tag = f"{rank}" if layer != "unlayered" else "-"
            lines.append(f"  {tag} {layer:<9} {len(members):3d}: {', '.join(members)}")
    found = cycles(graph)
    lines += ["", f"cycles: {len(found)}"]
    for i, component in enumerate(found, 1):
        members = set(component)
        inside = sorted((e for e in graph.edges if e.source in members and e.target in members),
                        key=lambda e: (e.source, e.target, e.line))
        lines.append(f"  {i}. {' <-> '.join(component)}")
        lines += [f"       {_edge_text(e)}" for e in inside]
    up = upward_edges(graph)
    lines += ["", f"arrows up a layer: {len(up)}"]
    lines += [f"  {layer_of(e.source)} -> {layer_of(e.target)}: {_edge_text(e)}" for e in up]
    lines += ["", f"imports in functions: {n_func}"]
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.import_graph", description=__doc__.split("\n\n")[0])
    parser.add_argument("packages", nargs="*", default=list(DEFAULT_PACKAGES),
                        help="folders to scan, FOLDER or FOLDER=MODULE_NAME "
                             "[default: skinzoo cli=skinzoo_cli]")
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="where the folders are [default: the repository root]")
    parser.add_argument("--edges", action="store_true", help="also list every import edge")
    args = parser.parse_args(argv)
    graph = read_graph(args.root, args.packages)
    lines = report_lines(graph)
    if args.edges:
        lines += ["", "edges:"] + [f"  {_edge_text(e)}" for e in
                                   sorted(graph.edges, key=lambda e: (e.source, e.target, e.line))]
    print("\n".join(lines))
    return 1 if cycles(graph) else 0


if __name__ == "__main__":
    sys.exit(main())
