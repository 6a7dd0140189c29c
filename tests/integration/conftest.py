"""The real pieces together: Temporal dev server, the simulator, Postgres, and the worker, built
by devtools/devstack.py (as for the demo, the benchmark and the chaos run) with TEST_TIMINGS.

The worker runs in-process (same code as worker.py: ``open_activities`` + ``create_worker``)
unless a test needs a process to kill; each test gets its own task queue.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from controlplane.config import Settings, load_settings
from controlplane.db.engine import create_engine
from controlplane.db.repository import NodeRepository
from devtools.devstack import (
    TEST_TIMINGS,
    ServerDatabases,
    new_encryption_key,
    worker_settings_env,
    write_sky_shim,
)
from devtools.skypilot_sim.server import SimulatorServer
from starter.api import ControlPlane
from tests.support.specs import new_spec
from worker import create_worker, open_activities

SIM_TOKEN = "sky_integration-suite-service-account-token"
ENCRYPTION_KEY = new_encryption_key()

__all__ = ["ENCRYPTION_KEY", "SIM_TOKEN", "Stack", "new_spec"]


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorServer]:
    server = SimulatorServer(TEST_TIMINGS.sim_config([SIM_TOKEN]))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def stack_database(databases: ServerDatabases) -> str:
    return await databases.create(migrated=True)


@pytest.fixture(scope="session")
def sky_shim(tmp_path_factory: pytest.TempPathFactory, simulator: SimulatorServer) -> Path:
    """`sky` for CLI mode, driving the simulator (devtools.skypilot_sim.sky_cli)."""
    return write_sky_shim(tmp_path_factory.mktemp("bin") / "sky", simulator.url, SIM_TOKEN)


@dataclass
class Stack:
    temporal: WorkflowEnvironment
    simulator: SimulatorServer
    env: dict[str, str]
    settings: Settings

    @property
    def client(self) -> Client:
        return self.temporal.client

    @property
    def control(self) -> ControlPlane:
        return ControlPlane(self.client, self.settings.temporal_task_queue)


@pytest.fixture
def stack(
    dev_server: WorkflowEnvironment,
    simulator: SimulatorServer,
    stack_database: str,
    sky_shim: Path,
) -> Stack:
    env = worker_settings_env(
        temporal_address=dev_server.client.service_client.config.target_host,
        database_url=stack_database,
        simulator_url=simulator.url,
        token=SIM_TOKEN,
        encryption_key=ENCRYPTION_KEY,
        timings=TEST_TIMINGS,
        task_queue=f"it-{uuid.uuid4().hex[:8]}",
        cli_path=sky_shim,
    )
    return Stack(dev_server, simulator, env, load_settings(env))


@pytest.fixture
async def worker(stack: Stack) -> AsyncIterator[Stack]:
    async with (
        open_activities(stack.settings) as activities,
        create_worker(stack.client, stack.settings, activities),
    ):
        yield stack


@pytest.fixture
async def repo(stack: Stack) -> AsyncIterator[NodeRepository]:
    """The node rows of the stack's database."""
    engine = create_engine(stack.settings.database_url or "")
    try:
        yield NodeRepository(engine)
    finally:
        await engine.dispose()
