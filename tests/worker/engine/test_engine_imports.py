"""No import circle in worker/engine/: every module's imports of other engine modules (at the top,
inside functions, or for type checking alone), read from the source with ast, form a graph
without a cycle. A circle hides an order the code depends on; the runner sits under the passes
that use it, never beside them."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[3] / "worker" / "engine"
PACKAGE = "worker.engine"


def engine_imports(path: Path) -> set[str]:
    """The engine modules ``path`` imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == PACKAGE:    # from worker.engine import x
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(PACKAGE + "."):
                found.add(node.module.split(".")[2])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[2] for a in node.names if a.name.startswith(PACKAGE + "."))
    return found


def import_graph(folder: Path) -> dict[str, set[str]]:
    modules = {p.stem: p for p in folder.glob("*.py") if p.stem != "__init__"}
    return {name: engine_imports(path) & modules.keys() - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph (its modules, the first repeated at the end), or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_circle():
    assert find_cycle({"generation": {"batch_generation"}, "batch_generation": {"generation"}}) == [
        "batch_generation", "generation", "batch_generation"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_the_engine_has_no_import_circle():
    graph = import_graph(ENGINE)
    assert {"denoise_pass", "generation", "face_detail"} <= graph.keys()
    assert "denoise_pass" in graph["generation"] and "denoise_pass" in graph["face_detail"], "the one runner"
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"
