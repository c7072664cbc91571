"""The web package's layout: folders by concern (routes, intake, jobs, jobs/celery), each small enough to hold in
one's head, and an import graph without cycles (none hidden in a function either)."""

from __future__ import annotations

from pathlib import Path

import test_layout as converter_layout
from test_layout import _cycle

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "web"
MOST_MODULES_PER_FOLDER = 8  # the folder's modules, its __init__ not counted


def import_graph() -> dict[str, set[str]]:
    """web module → the web modules it imports anywhere (read as tests/test_layout.py reads converter/)."""
    return converter_layout.import_graph(PACKAGE)


def test_web_has_no_import_cycle():
    graph = import_graph()
    assert graph["web.service"] and "web.jobs.record" in graph
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_web_is_laid_out_by_concern_in_small_folders():
    folders = {path.parent for path in PACKAGE.rglob("*.py")}
    assert {folder.relative_to(PACKAGE).as_posix() for folder in folders} == {
        ".", "routes", "intake", "jobs", "jobs/celery", "jobs/video"}
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
