"""The worker's start-up check makes one authenticated call and names a refused token (issue 10).

/api/health answers without authentication, so only an authenticated call shows that the
server refuses SKYPILOT_SERVICE_ACCOUNT_TOKEN; the simulator answers with the real 401 bodies.
"""

from __future__ import annotations

import logging

import pytest
from pydantic import SecretStr

from controlplane.skypilot.client import SkyPilotClient
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer
from worker import check_api_health

GOOD = "sky_startup-check-good-token"


@pytest.mark.parametrize(
    ("tokens", "reason"),
    [
        ([GOOD], "Invalid or expired service account token"),
        ([], "Service account authentication disabled"),
    ],
)
async def test_a_refused_token_is_named_with_the_servers_reason(
    caplog: pytest.LogCaptureFixture, tokens: list[str], reason: str
) -> None:
    config = SimConfig(port=0, service_account_tokens=tokens, require_auth=True)
    with SimulatorServer(config) as sim:
        async with SkyPilotClient(sim.url, token=SecretStr("sky_not-the-right-one")) as client:
            with caplog.at_level(logging.INFO, logger="worker"):
                await check_api_health(client)
    refused = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(refused) == 1, caplog.text
    assert "SKYPILOT_SERVICE_ACCOUNT_TOKEN" in refused[0].getMessage()
    assert reason in refused[0].getMessage()
    assert "sky_not-the-right-one" not in caplog.text


async def test_an_accepted_token_raises_no_alarm(caplog: pytest.LogCaptureFixture) -> None:
    config = SimConfig(port=0, service_account_tokens=[GOOD], require_auth=True)
    with SimulatorServer(config) as sim:
        async with SkyPilotClient(sim.url, token=SecretStr(GOOD)) as client:
            with caplog.at_level(logging.INFO, logger="worker"):
                await check_api_health(client)
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == [], caplog.text
