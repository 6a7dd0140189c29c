"""Scripted stand-ins for external programs, for tests that must not need the real thing.

``fake_sky.py`` imitates SkyPilot 0.14.1's ``sky`` CLI; its docstring lists the environment
variables that drive it. :func:`install_fake_sky` writes a ``sky`` wrapper that runs it with the
current interpreter, so it works whatever ``python3`` is on PATH.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

FAKE_SKY = Path(__file__).with_name("fake_sky.py")


def install_fake_sky(directory: Path) -> Path:
    """Write an executable ``sky`` into ``directory`` that execs the fake; returns its path."""
    wrapper = directory / "sky"
    wrapper.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} {shlex.quote(str(FAKE_SKY))} "$@"\n',
        encoding="utf-8",
    )
    wrapper.chmod(0o755)
    return wrapper
