"""The packages `backbones`, `tasks` and `lab` have no import circle.

Every module is parsed with `ast` (nothing is imported), and every import
statement counts, at module level or inside a function: a function-level
import that runs back up is a circle that only happens to work at runtime.
An edge goes to the submodule named (`from backbones import registry` ->
`backbones.registry`), or to the package itself when the name imported from
it is not a submodule (`import backbones`, `from backbones import Backbone`).
Importing a submodule does import its parent package first, but that is
Python's doing, not an arrow in our layering, so it is not an edge.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("backbones", "tasks", "lab")


def module_files():
    """Module name -> file, for every .py file of the packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name, modules):
    """The longest prefix of dotted `name` that is one of our modules, or None."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph(modules):
    """Module -> {module it imports: line number of the first such import}."""
    graph = {}
    for module, path in modules.items():
        edges = graph[module] = {}
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    anchor = module.split(".")
                    anchor = anchor[:len(anchor) - node.level + (1 if is_package else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    submodule = f"{base}.{alias.name}"
                    targets.append(submodule if submodule in modules else base)
            for target in targets:
                resolved = _resolve(target, modules)
                if resolved is not None and resolved != module:
                    edges.setdefault(resolved, node.lineno)
    return graph


def find_cycle(graph):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}  # module -> "active" | "done"
    stack = []

    def visit(module):
        state[module] = "active"
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "active":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(graph):
        if module not in state:
            cycle = visit(module)
            if cycle:
                return cycle
    return None


def describe(cycle, graph, modules):
    return "\n".join(
        f"  {a} imports {b}  ({modules[a].relative_to(ROOT)}:{graph[a][b]})"
        for a, b in zip(cycle, cycle[1:]))


def test_no_import_cycle():
    modules = module_files()
    graph = import_graph(modules)
    cycle = find_cycle(graph)
    assert cycle is None, "Import cycle:\n" + describe(cycle, graph, modules)


def test_the_checker_finds_a_cycle(tmp_path):
    # The test above must be able to fail: two modules importing each other
    # inside functions form a cycle.
    (tmp_path / "a.py").write_text("def f():\n    from pkg import b\n")
    (tmp_path / "b.py").write_text("def g():\n    import pkg.a\n")
    modules = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    graph = import_graph(modules)
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.a"]


def test_layers_point_down():
    # lab -> tasks -> backbones, never back up.
    graph = import_graph(module_files())
    rank = {"lab": 2, "tasks": 1, "backbones": 0}
    upward = [(a, b) for a, edges in graph.items() for b in edges
              if rank[b.split(".")[0]] > rank[a.split(".")[0]]]
    assert upward == []
