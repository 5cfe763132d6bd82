"""Imports go one way: apps depend on the core (`studio`), never the reverse, and apps only on the apps below them.

    studio  <-  environments  <-  runs  <-  models_registry  <-  mlflow_api  <-  endpoints

Only the core's project wiring (settings, urls, asgi, wsgi, celery) may import an app. Every import counts, also one
placed inside a function. Compute knowledge stays in the compute drivers: `runs/execution.py` imports nothing of
Docker.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ["studio", "environments", "runs", "models_registry", "mlflow_api", "endpoints"]
WIRING = {"studio/settings.py", "studio/urls.py", "studio/asgi.py", "studio/wsgi.py", "studio/celery.py"}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in the file, wherever it is placed."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def source_files(package: str) -> list[Path]:
    folder = ROOT / package
    return sorted(p for p in folder.rglob("*.py") if "migrations" not in p.parts) if folder.is_dir() else []


def violations(package: str) -> list[str]:
    allowed = set(LAYERS[: LAYERS.index(package) + 1])
    problems = []
    for path in source_files(package):
        relative = path.relative_to(ROOT).as_posix()
        if relative in WIRING:
            continue
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in LAYERS and top not in allowed:
                problems.append(f"{relative}:{line} imports {module}")
    return problems


@pytest.mark.parametrize("package", LAYERS)
def test_a_layer_imports_only_the_layers_below_it(package):
    assert violations(package) == []


def test_the_check_sees_an_import_inside_a_function(tmp_path, monkeypatch):
    module = tmp_path / "studio" / "sneaky.py"
    module.parent.mkdir()
    module.write_text("def f():\n    from runs.models import Run\n    return Run\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("studio") == ["studio/sneaky.py:2 imports runs.models"]


def test_execution_imports_nothing_of_docker():
    modules = {module for _, module in imported_modules(ROOT / "runs" / "execution.py")}
    assert not {m for m in modules if m.split(".")[0] == "docker" or "docker" in m.split(".")}


def test_only_compute_drivers_and_the_core_factory_talk_to_docker():
    allowed = {"studio/docker_engine.py", "runs/compute/docker.py", "environments/builds.py",
               "endpoints/instances.py"}  # the compute drivers of runs and of endpoints, the builder, the factory
    talking = set()
    for package in LAYERS:
        for path in source_files(package):
            if any(module.split(".")[0] == "docker" for _, module in imported_modules(path)):
                talking.add(path.relative_to(ROOT).as_posix())
    assert talking <= allowed, talking - allowed
