"""The converter package's layout: its import graph has no cycles (none hidden in a function either), the export
writers sit above the core, and the public API is the package's own names."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import converter

PACKAGE = Path(converter.__file__).resolve().parent
CORE = ("geometry", "images", "options", "mesh", "align", "stages", "errors", "torch_kernels", "depth")


def _module_name(package: Path, path: Path) -> str:
    parts = [package.name, *path.relative_to(package).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache  # read once for the tests that check it (none changes it)
def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``package``'s module → the modules of that package it imports anywhere (top level or inside a function);
    importing a name from a package counts as importing the package's ``__init__`` (and the submodule, when it is
    one), but for the module's own parent packages, which Python has always imported before it. The web package's
    layout test reads web/ with it too. Parsed once a session (0.7 s each time): every caller gets its own copy."""
    return {name: set(targets) for name, targets in _parsed_graph(Path(package)).items()}


@functools.lru_cache(maxsize=None)
def _parsed_graph(package: Path) -> dict[str, set[str]]:
    modules = {_module_name(package, path): path for path in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package_name = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package_name.split(".")[: len(package_name.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            parents = {".".join(name.split(".")[:end]) for end in range(1, name.count(".") + 1)}
            graph[name] |= {target for target in targets if target in modules and target != name
                            and target not in parents}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (a list of modules, the first repeated at the end), or None."""
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        trail.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return trail[trail.index(target):] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_package_has_no_import_cycle():
    graph = import_graph()
    assert "converter.exports.outputs" in graph and graph["converter.pipeline"]
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_core_does_not_import_the_writers_or_the_pipeline():
    graph = import_graph()
    for name, targets in graph.items():
        if name.count(".") and name.split(".")[1] in CORE:
            above = sorted(t for t in targets if t.startswith(("converter.exports", "converter.pipeline")))
            assert above == [], f"{name} imports {above}"
    assert not any(t == "converter.pipeline" for name, targets in graph.items() if name.startswith(
        "converter.exports") for t in targets)


def test_every_public_name_is_there():
    missing = [name for name in converter.__all__ if not hasattr(converter, name)]
    assert missing == [] and len(converter.__all__) == len(set(converter.__all__))
