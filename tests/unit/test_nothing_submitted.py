"""What the launch step tells the workflow about "was anything sent?" (issue 10, path 8).

The workflow skips the teardown only when the launch step proved nothing reached SkyPilot
(``NOTHING_SUBMITTED`` in the error's details). The proof holds for a failure before the launch
POST (``POST /validate`` refused), on the activity's first attempt only: an earlier attempt may
have sent a launch. A launch POST that failed may have been sent, so it proves nothing. The
workflow's side is tests/workflows/test_leakproof.py; end to end on the real server,
tests/contract/test_real_server_workflow.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any, cast

import httpx
import pytest
from pydantic import SecretStr
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.skypilot import SkyPilotActivities
from controlplane.lifecycle import LaunchMode
from controlplane.skypilot.backend import ApiBackend, SkyPilotBackend
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.errors import SubmitUnconfirmedError
from controlplane.skypilot.task import SkyTask, TaskSettings
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer
from tests.support.specs import node_spec
from workflows.models import NOTHING_SUBMITTED, LaunchInput

GOOD = "sky_nothing-submitted-good-token"
SETTINGS = TaskSettings("http://cp.test", "0.11.0", "2.8.0")
SPEC = node_spec(model="org/model")


def launch_input() -> LaunchInput:
    return LaunchInput(
        spec=SPEC,
        cluster_name=SPEC.cluster_name,
        node_id=SPEC.node_id,
        launch_mode=LaunchMode.API,
        credential=None,
    )


async def refused_launch(attempt: int) -> tuple[ApplicationError, dict[str, Any]]:
    """launch_cluster against a server that refuses the token, at the given attempt."""
    config = SimConfig(port=0, service_account_tokens=[GOOD], require_auth=True)
    with SimulatorServer(config) as sim:
        async with (
            SkyPilotClient(sim.url, token=SecretStr("sky_not-the-right-one")) as client,
            httpx.AsyncClient() as probe,
        ):
            backends: dict[LaunchMode, SkyPilotBackend] = {LaunchMode.API: ApiBackend(client)}
            activities = SkyPilotActivities(backends, None, SETTINGS, probe)
            env = ActivityEnvironment()
            env.info = dataclasses.replace(env.info, attempt=attempt)
            with pytest.raises(ApplicationError) as caught:
                await env.run(activities.launch_cluster, launch_input())
            counters = (await probe.get(f"{sim.url}/sim/counters", timeout=5)).json()
    return caught.value, counters


async def test_a_refused_validate_on_the_first_attempt_proves_nothing_was_submitted() -> None:
    error, counters = await refused_launch(attempt=1)
    assert error.type == "AuthenticationError"
    assert NOTHING_SUBMITTED in error.details
    assert SPEC.cluster_name not in counters["launch_requests"]


async def test_a_refused_validate_on_a_later_attempt_proves_nothing() -> None:
    """The first attempt may have sent the launch before its worker died: clean up anyway."""
    error, counters = await refused_launch(attempt=2)
    assert error.type == "AuthenticationError"
    assert NOTHING_SUBMITTED not in error.details
    assert SPEC.cluster_name not in counters["launch_requests"]  # (this attempt sent none)


class _LaunchPostLost:
    """A client whose validate passes and whose launch POST may have landed."""

    def __init__(self) -> None:
        self.launches = 0

    async def validate(self, task: SkyTask) -> None:
        return None

    async def launch(self, cluster_name: str, task: SkyTask, **_: object) -> str:
        self.launches += 1
        raise SubmitUnconfirmedError("the launch's response was lost", operation="launch")


async def test_a_failed_launch_post_may_have_been_sent() -> None:
    client = _LaunchPostLost()
    backend = ApiBackend(cast(SkyPilotClient, client))
    with pytest.raises(SubmitUnconfirmedError) as caught:
        await backend.launch(
            SPEC.cluster_name, SkyTask(name="t", document={}), idempotency_key="k", workspace=None
        )
    assert client.launches == 1
    assert not caught.value.nothing_submitted
