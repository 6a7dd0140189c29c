"""The real pieces together: Temporal dev server, the simulator, Postgres, and the worker.

The worker runs in-process (same code as worker.py: ``open_activities`` + ``create_worker``)
unless a test needs a process to kill; each test gets its own task queue.
"""

from __future__ import annotations

import base64
import os
import shlex
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from controlplane.config import Settings, load_settings
from controlplane.search_attributes import dev_server_flags
from controlplane.spec import NodeSpec
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer
from starter.api import ControlPlane
from tests.conftest import Databases
from tests.support.temporal_env import dev_server_path
from worker import create_worker, open_activities

SIM_TOKEN = "sky_integration-suite-service-account-token"
ENCRYPTION_KEY = base64.b64encode(b"k" * 16 + os.urandom(16)).decode()


@pytest.fixture(scope="session")
async def temporal() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_local(
        dev_server_existing_path=dev_server_path(),
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_extra_args=dev_server_flags(),  # the control plane's search attributes
    )
    try:
        yield environment
    finally:
        await environment.shutdown()


@pytest.fixture(scope="session")
def simulator() -> Iterator[SimulatorServer]:
    server = SimulatorServer(
        SimConfig(
            port=0,
            launch_delay_s=0.5,
            model_warmup_s=0.3,
            down_delay_s=0.2,
            service_account_tokens=[SIM_TOKEN],
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def stack_database(databases: Databases) -> str:
    return await databases.create(migrated=True)


@pytest.fixture(scope="session")
def sky_shim(tmp_path_factory: pytest.TempPathFactory, simulator: SimulatorServer) -> Path:
    """`sky` for CLI mode, driving the simulator (devtools.skypilot_sim.sky_cli)."""
    path = tmp_path_factory.mktemp("bin") / "sky"
    path.write_text(
        "#!/bin/sh\n"
        f"SKYPILOT_API_SERVER_ENDPOINT={shlex.quote(simulator.url)} "
        f"SKYPILOT_SERVICE_ACCOUNT_TOKEN={shlex.quote(SIM_TOKEN)} "
        f'exec {shlex.quote(sys.executable)} -m devtools.skypilot_sim.sky_cli "$@"\n'
    )
    path.chmod(0o755)
    return path


def new_spec() -> NodeSpec:
    return NodeSpec(
        tenant="acme",
        model="NousResearch/Meta-Llama-3-8B-Instruct",
        provider="aws",
        region="us-east-1",
        gpu_type="A100",
        gpu_count=1,
        deployment=f"it-{uuid.uuid4().hex[:8]}",
    )


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
    temporal: WorkflowEnvironment, simulator: SimulatorServer, stack_database: str, sky_shim: Path
) -> Stack:
    env = {
        "TEMPORAL_ADDRESS": temporal.client.service_client.config.target_host,
        "TEMPORAL_TASK_QUEUE": f"it-{uuid.uuid4().hex[:8]}",
        "DATABASE_URL": stack_database,
        "SKYPILOT_API_SERVER_URL": simulator.url,
        "SKYPILOT_SERVICE_ACCOUNT_TOKEN": SIM_TOKEN,
        "SKYPILOT_USE_API_SERVER": "true",
        "SKYPILOT_CLI_PATH": str(sky_shim),
        "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": ENCRYPTION_KEY,
        "SKYPILOT_RETRY_BACKOFF": "200ms",
        "SKYPILOT_LAUNCH_TIMEOUT": "60s",
        "SKYPILOT_TERMINATE_TIMEOUT": "30s",
        "NODE_HEALTH_CHECK_INTERVAL": "2s",
        "NODE_HEARTBEAT_TIMEOUT": "3s",
    }
    return Stack(temporal, simulator, env, load_settings(env))


@pytest.fixture
async def worker(stack: Stack) -> AsyncIterator[Stack]:
    async with (
        open_activities(stack.settings) as activities,
        create_worker(stack.client, stack.settings, activities),
    ):
        yield stack
