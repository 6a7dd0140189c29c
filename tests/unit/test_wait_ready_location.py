"""wait_ready learns where the cluster landed from SkyPilot only when the spec left a choice.

A spec without fallback locations can land in one place only: asking SkyPilot's status for it
was two calls per launch (``POST /status`` and its ``GET /api/get``) that could only say what
the spec said.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from temporalio.testing import ActivityEnvironment

from activities.skypilot import SkyPilotActivities
from controlplane.lifecycle import LaunchMode
from controlplane.skypilot.task import TaskSettings
from tests.support.specs import node_spec
from workflows.models import WaitReadyInput
from workflows.node import pinned_location

TASK_SETTINGS = TaskSettings(
    control_plane_url="http://cp.test", vllm_version="0.11.0", torch_version="2.8.0"
)


class LandedBackend:
    """An API backend whose launch is done and whose cluster says where it is."""

    mode = LaunchMode.API

    def __init__(self) -> None:
        self.located: list[str] = []

    async def wait_launched(self, *args: Any, **kwargs: Any) -> None:
        return None

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        return "10.0.0.1:8000"

    async def location(self, cluster_name: str) -> str | None:
        self.located.append(cluster_name)
        return "gcp/us-central1"


def model_answers(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200)


async def wait_ready(pinned: str | None) -> tuple[str | None, list[str]]:
    backend = LandedBackend()
    async with httpx.AsyncClient(transport=httpx.MockTransport(model_answers)) as probe:
        sky = SkyPilotActivities({LaunchMode.API: backend}, None, TASK_SETTINGS, probe)  # type: ignore[dict-item]
        result = await ActivityEnvironment().run(
            sky.wait_ready,
            WaitReadyInput(
                cluster_name="cpn-x",
                launch_mode=LaunchMode.API,
                request_id="req-1",
                timeout_s=10,
                pinned_location=pinned,
            ),
        )
    return result.location, backend.located


async def test_a_pinned_launch_takes_its_location_from_the_spec() -> None:
    location, asked = await wait_ready("aws/us-east-1")
    assert location == "aws/us-east-1"
    assert asked == []


async def test_a_launch_with_candidates_asks_skypilot_where_it_landed() -> None:
    location, asked = await wait_ready(None)
    assert location == "gcp/us-central1"
    assert asked == ["cpn-x"]


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "aws/us-east-1"),
        ({"fallback_locations": [{"provider": "gcp", "region": "us-central1"}]}, None),
        # a fallback equal to the first choice is no second place
        ({"fallback_locations": [{"provider": "aws", "region": "us-east-1"}]}, "aws/us-east-1"),
    ],
)
def test_only_a_spec_with_one_place_is_pinned(fields: dict[str, Any], expected: str | None) -> None:
    spec = node_spec(provider="aws", region="us-east-1", **fields)
    assert pinned_location(spec) == expected
