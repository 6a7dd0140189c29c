"""One contract suite, two servers: the project's simulator and the real skypilot 0.14.1 server.

Where they disagree, the simulator is wrong. The real server is started once per session in its
own virtualenv and HOME; set CONTRACT_BACKENDS=sim to run against the simulator alone.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest

from controlplane.skypilot.client import Identity, SkyPilotClient, Timeouts
from controlplane.skypilot.retry import RetryPolicy
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer
from tests.support.real_skypilot import RealSkyPilotServer

VALID_TOKEN = "sky_contract-suite-valid-token"


@dataclass
class Backend:
    name: str
    url: str

    @property
    def is_sim(self) -> bool:
        return self.name == "sim"

    def arrange_no_cloud_launch(self) -> None:
        """The real server has no cloud; make the simulator's next launch fail the same way."""
        if self.is_sim:
            faults = {"fail_next_launches": 1, "launch_failure_types": ["NoCloudAccessError"]}
            httpx.post(f"{self.url}/sim/faults", json=faults, timeout=5).raise_for_status()


def _selected() -> list[str]:
    return [b.strip() for b in os.environ.get("CONTRACT_BACKENDS", "sim,real").split(",") if b]


@pytest.fixture(scope="session")
def sim_backend() -> Iterator[Backend]:
    config = SimConfig(port=0, launch_delay_s=3.0, service_account_tokens=[VALID_TOKEN])
    server = SimulatorServer(config)
    server.start()
    try:
        yield Backend("sim", server.url)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def real_backend() -> Iterator[Backend]:
    server = RealSkyPilotServer(service_accounts=True)
    server.start()
    try:
        yield Backend("real", server.url)
    finally:
        server.stop()


@pytest.fixture(params=["sim", "real"])
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param not in _selected():
        pytest.skip(f"backend {request.param} not in CONTRACT_BACKENDS")
    fixture_name = f"{request.param}_backend"
    result: Backend = request.getfixturevalue(fixture_name)
    return result


@pytest.fixture
async def client(backend: Backend) -> AsyncIterator[SkyPilotClient]:
    async with SkyPilotClient(
        backend.url,
        identity=Identity("orch0001", "orchestrator"),
        retry=RetryPolicy(max_retries=2, backoff_s=0.2),
        timeouts=Timeouts(read=30, long_poll=30),
    ) as sky:
        yield sky
