"""The product's layering: what a production worker runs imports neither Temporal nor the dev tools.

``controlplane/`` is library code (no Temporal), and nothing the worker ships (``controlplane/``,
``workflows/``, ``activities/``, ``worker.py``) may depend on ``devtools/`` (the simulator and the
local stack) or on the tests.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _sources(*tops: str) -> list[Path]:
    files: list[Path] = []
    for top in tops:
        target = ROOT / top
        files.extend([target] if target.is_file() else sorted(target.rglob("*.py")))
    return files


def _roots(modules: set[str]) -> set[str]:
    return {module.split(".")[0] for module in modules}


@pytest.mark.parametrize("path", _sources("controlplane"), ids=lambda p: str(p.relative_to(ROOT)))
def test_library_code_imports_no_temporal(path: Path) -> None:
    assert "temporalio" not in _roots(_imported_modules(path))


@pytest.mark.parametrize(
    "path",
    _sources("controlplane", "workflows", "activities", "worker.py"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_what_a_worker_runs_never_imports_the_dev_tools_or_tests(path: Path) -> None:
    assert not _roots(_imported_modules(path)) & {"devtools", "tests"}


def test_the_simulator_lives_outside_the_product() -> None:
    assert not (ROOT / "controlplane" / "skypilot" / "sim").exists()
    assert not (ROOT / "controlplane" / "devstack.py").exists()
    assert (ROOT / "devtools" / "skypilot_sim" / "__main__.py").is_file()
