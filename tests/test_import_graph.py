"""The package's import graph has no cycle, counting every import of one llm2vec_hf module by another, at
module top, inside a function or under ``if __name__ == "__main__"`` (each can hide a cycle, none removes it)."""

from __future__ import annotations

import ast

from helpers.samples import REPO

PACKAGE_DIRS = {"llm2vec_hf": REPO / "src" / "llm2vec_hf", "llm2vec_hf.modeling": REPO / "modeling"}


def package_modules() -> dict[str, tuple[ast.Module, bool]]:
    """{dotted name: (parsed source, is a package __init__)} of every module llm2vec_hf ships."""
    modules = {}
    for prefix, root in PACKAGE_DIRS.items():
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if prefix == "llm2vec_hf" and parts[0] == "modeling":
                continue
            is_package = parts[-1] == "__init__"
            name = ".".join([prefix] + (parts[:-1] if is_package else parts))
            modules[name] = (ast.parse(path.read_text(), str(path)), is_package)
    return modules


def _imports(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, (tree, is_package) in modules.items():
        package = name if is_package else name.rsplit(".", 1)[0]
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                if node.level:
                    base = package.split(".")
                    base = base[: len(base) - (node.level - 1)]
                    source = ".".join(base + ([node.module] if node.module else []))
                else:
                    source = node.module or ""
                targets = [source] + [f"{source}.{alias.name}" for alias in node.names]
            for target in targets:
                # importing a.b.c runs a, a.b and a.b.c
                parts = target.split(".")
                for end in range(1, len(parts) + 1):
                    prefix = ".".join(parts[:end])
                    if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                        graph[name].add(prefix)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of nodes (first == last), or None."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for successor in sorted(graph[node]):
            if state.get(successor) == 1:
                return path[path.index(successor):] + [successor]
            if successor not in state:
                found = visit(successor)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_finder_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_graph_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert "llm2vec_hf.errors" in graph["llm2vec_hf.loading.models"]
    assert "llm2vec_hf.modeling.modeling_llm2vec" in graph["llm2vec_hf.modeling.sentence_transformers_llm2vec"]
    assert len(graph) > 40


def test_the_package_import_graph_has_no_cycle():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)
