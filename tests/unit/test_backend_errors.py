"""The same-shaped failure gets the same error type in API and CLI mode (issue 9)."""

from __future__ import annotations

import httpx
import pytest

from controlplane.skypilot.backend import ApiBackend, CliBackend
from controlplane.skypilot.cli import SkyCLI
from controlplane.skypilot.client import SkyPilotClient, Timeouts
from controlplane.skypilot.errors import WaitTimeoutError
from controlplane.skypilot.models import ClusterStatus
from tests.support.scripted_sky import ScriptedServer, raise_


class StuckProvisioning(SkyCLI):
    """`sky status` keeps answering INIT: the launch never finishes."""

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        return ClusterStatus.INIT


async def test_a_launch_past_its_deadline_is_a_wait_timeout_in_both_modes() -> None:
    cli = CliBackend(
        StuckProvisioning(launch_timeout=1, terminate_timeout=1, status_timeout=1),
        poll_interval=0.01,
    )
    with pytest.raises(WaitTimeoutError) as by_cli:
        await cli.wait_launched("c1", None, timeout=0.05)

    server = ScriptedServer()
    server.always("GET /api/get", raise_(httpx.ReadTimeout))
    async with SkyPilotClient(
        "http://sky.test",
        timeouts=Timeouts(long_poll=0.01),
        transport=httpx.MockTransport(server.handler),
    ) as client:
        with pytest.raises(WaitTimeoutError) as by_api:
            await ApiBackend(client).wait_launched("c1", "req-1", timeout=0.05)
    # wait_ready turns exactly this type into its permanent LaunchTimeout, in either mode.
    assert type(by_cli.value) is type(by_api.value)
    assert by_cli.value.retryable == by_api.value.retryable
