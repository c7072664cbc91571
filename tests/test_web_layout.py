"""The web package's layout: folders by concern (routes, intake, jobs, jobs/celery), each small enough to hold in
one's head, and an import graph without cycles (none hidden in a function either)."""

from __future__ import annotations

import ast
from pathlib import Path

from test_layout import _cycle

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "web"
MOST_MODULES_PER_FOLDER = 8  # the folder's modules, its __init__ not counted


def _module_name(path: Path) -> str:
    parts = ["web", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """web module → the web modules it imports anywhere (as tests/test_layout.py reads converter/)."""
    modules = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            parents = {".".join(name.split(".")[:end]) for end in range(1, name.count(".") + 1)}
            graph[name] |= {target for target in targets if target in modules and target != name
                            and target not in parents}
    return graph


def test_web_has_no_import_cycle():
    graph = import_graph()
    assert graph["web.service"] and "web.jobs.record" in graph
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_web_is_laid_out_by_concern_in_small_folders():
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert {folder.relative_to(PACKAGE).as_posix() for folder in folders} == {
        ".", "routes", "intake", "jobs", "jobs/celery"}
    for folder in folders:
        modules = [path for path in folder.glob("*.py") if path.name != "__init__.py"]
        assert len(modules) <= MOST_MODULES_PER_FOLDER, f"{folder.relative_to(ROOT)} has {len(modules)} modules"


def test_the_lower_layers_never_import_the_routes_or_the_service():
    """routes → service → intake, jobs → settings, metrics, model_status, user_error: never upwards."""
    graph = import_graph()
    upward = [f"{name} -> {target}" for name, targets in graph.items() for target in targets
              if not name.startswith(("web.routes", "web.service"))
              and target.startswith(("web.routes", "web.service"))]
    assert upward == []
