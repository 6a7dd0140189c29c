"""What the client relies on, checked against the simulator and the real server alike."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from controlplane.skypilot.client import API_VERSION, CLIENT_VERSION, SkyPilotClient
from controlplane.skypilot.errors import (
    AuthenticationError,
    InvalidTaskError,
    NotFoundError,
    RequestCancelledError,
    RequestFailedError,
)
from controlplane.skypilot.models import ClusterStatus
from controlplane.skypilot.task import SkyTask
from tests.contract.conftest import Backend

USER = {"SKYPILOT_USER_ID": "orch0001", "SKYPILOT_USER": "orchestrator"}
VERSION_HEADERS = {"X-SkyPilot-API-Version": str(API_VERSION), "X-SkyPilot-Version": CLIENT_VERSION}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def cpu_task(name: str, **resources: object) -> SkyTask:
    """A task the real server can judge without a cloud or the accelerator catalog."""
    return SkyTask(
        name=name,
        document={"name": name, "resources": {"cpus": "1+", **resources}, "run": "echo hi"},
    )


async def test_health_shape(backend: Backend, client: SkyPilotClient) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        raw = await http.get(f"{backend.url}/api/health", headers=VERSION_HEADERS)
    assert raw.status_code == 200
    body = raw.json()
    for key in (
        "status",
        "api_version",
        "version",
        "commit",
        "basic_auth_enabled",
        "user",
        "service_account_token_enabled",
    ):
        assert key in body, key
    assert isinstance(body["api_version"], str)
    health = await client.health()
    assert health.healthy
    assert health.api_version == "62"
    assert health.version == "0.14.1"


def test_submit_returns_request_id_header_and_version_headers(backend: Backend) -> None:
    response = httpx.post(
        f"{backend.url}/status", json={"env_vars": USER}, headers=VERSION_HEADERS, timeout=10
    )
    assert response.status_code == 200
    assert response.json() is None
    uuid.UUID(response.headers["X-Skypilot-Request-ID"])
    assert response.headers["X-SkyPilot-API-Version"] == "62"
    assert response.headers["X-SkyPilot-Version"] == "0.14.1"


async def test_launch_without_cloud_is_a_permanent_no_cloud_error(
    backend: Backend, client: SkyPilotClient
) -> None:
    backend.arrange_no_cloud_launch()
    name = unique("ct-nocloud")
    request_id = await client.launch(name, cpu_task(name))
    with pytest.raises(RequestFailedError) as failure:
        await client.wait_for_request(request_id, timeout=60)
    error = failure.value
    assert error.error_type == "NoCloudAccessError"
    assert not error.retryable
    assert "sky check" in error.message
    assert "\x1b" not in error.message
    assert error.request_id == request_id


async def test_down_of_unknown_cluster_is_not_found_and_terminate_counts_it_done(
    client: SkyPilotClient,
) -> None:
    name = unique("ct-missing")
    request_id = await client.down(name)
    with pytest.raises(RequestFailedError) as failure:
        await client.wait_for_request(request_id, timeout=30)
    assert failure.value.not_found
    assert failure.value.error_type == "ClusterDoesNotExist"
    result = await client.terminate(name, timeout=30)
    assert result.already_gone


async def test_status_of_unknown_cluster_is_terminated(client: SkyPilotClient) -> None:
    assert await client.cluster_status(unique("ct-ghost")) is ClusterStatus.TERMINATED


async def test_unknown_request_id_is_not_found(client: SkyPilotClient) -> None:
    missing = str(uuid.uuid4())
    with pytest.raises(NotFoundError) as by_status:
        await client.request_status(missing)
    assert by_status.value.not_found
    with pytest.raises(NotFoundError) as by_get:
        await client.get_result(missing, timeout=10)
    assert by_get.value.http_status == 404


async def test_pending_request_can_be_cancelled(client: SkyPilotClient) -> None:
    # A burst fills the LONG queue (4 workers on the real server), so the last one is pending.
    ids = [await client.launch(unique("ct-burst"), cpu_task("burst")) for _ in range(8)]
    victim = ids[-1]
    assert await client.cancel([victim]) == [victim]
    with pytest.raises(RequestCancelledError):
        await client.wait_for_request(victim, timeout=60)
    record = await client.request_status(victim)
    assert record.status.value == "CANCELLED"


async def test_cancel_refuses_an_empty_list(client: SkyPilotClient) -> None:
    with pytest.raises(ValueError, match="cancel all"):
        await client.cancel([])


async def test_wrong_service_account_token_is_an_authentication_error(backend: Backend) -> None:
    async with SkyPilotClient(backend.url, token=SecretStr("sky_not-a-real-token")) as bad:
        with pytest.raises(AuthenticationError) as failure:
            await bad.status()
    assert failure.value.http_status == 401
    assert not failure.value.retryable
    assert "sky_not-a-real-token" not in str(failure.value)


async def test_submission_marker_round_trips_for_reattachment(client: SkyPilotClient) -> None:
    name = unique("ct-marker")
    first = await client.down(name, idempotency_key="contract-key")
    records = await client.find_requests(name, name="sky.down")
    assert [r.request_id for r in records] == [first]
    # A listing carries no bodies (they hold launches' secrets), so no marker either ...
    assert records[0].entrypoint_command is None
    # ... which the marker lookup reads by id, where the server answers the body.
    marker = (await client.request_status(first)).entrypoint_command
    assert marker is not None
    assert marker.endswith("key=contract-key")


def test_a_listing_without_request_body_leaves_the_body_out(backend: Backend) -> None:
    """What the client's listings rely on: fields= without request_body answers no body, while a
    lookup by id answers the body (whose entrypoint_command carries the marker)."""
    name = unique("ct-fields")
    marker = f"controlplane down {name} key=fields"
    body = {"cluster_name": name, "env_vars": USER, "entrypoint_command": marker}
    posted = httpx.post(f"{backend.url}/down", json=body, headers=VERSION_HEADERS, timeout=10)
    request_id = posted.headers["X-Skypilot-Request-ID"]
    fields = ["request_id", "name", "status", "cluster_name", "created_at", "user_id"]
    listing = httpx.get(
        f"{backend.url}/api/status",
        params=[("cluster_name", name), ("all_status", "true"), *[("fields", f) for f in fields]],
        headers=VERSION_HEADERS,
        timeout=10,
    )
    assert listing.status_code == 200, listing.text
    [row] = listing.json()
    assert row["request_id"] == request_id
    assert marker not in listing.text
    assert "env_vars" not in listing.text
    by_id = httpx.get(
        f"{backend.url}/api/status",
        params={"request_ids": request_id},
        headers=VERSION_HEADERS,
        timeout=10,
    )
    assert json.loads(by_id.json()[0]["request_body"])["entrypoint_command"] == marker


async def test_validate_rejects_bad_tasks_before_submission(client: SkyPilotClient) -> None:
    with pytest.raises(InvalidTaskError) as bad_value:
        await client.validate(cpu_task("v", cpus="lots"))
    assert bad_value.value.error_type == "ValueError"
    bogus = SkyTask(name="v", document={"name": "v", "bogus_key": 1, "run": "echo hi"})
    with pytest.raises(InvalidTaskError) as bad_key:
        await client.validate(bogus)
    assert bad_key.value.error_type == "InvalidSkyPilotConfigError"
    assert "bogus_key" in bad_key.value.message
    await client.validate(cpu_task("v"))


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status"),
    [
        ("POST", "/launch", {"json": {"cluster_name": "x", "env_vars": USER}}, 422),
        ("POST", "/status", {"json": {"refresh": "SOMETIMES", "env_vars": USER}}, 422),
        ("GET", "/api/get", {}, 422),
        ("GET", "/api/status", {"params": {"fields": "nope"}}, 400),
        ("GET", "/no/such/path", {}, 404),
        ("GET", "/api/get", {"params": {"request_id": str(uuid.UUID(int=7))}}, 404),
    ],
)
def test_error_shapes_match(
    backend: Backend, method: str, path: str, kwargs: dict[str, Any], status: int
) -> None:
    response = httpx.request(
        method, f"{backend.url}{path}", headers=VERSION_HEADERS, timeout=10, **kwargs
    )
    assert response.status_code == status
    detail = response.json()["detail"]
    if status == 422:
        assert isinstance(detail, list)
        assert {"type", "loc", "msg"} <= set(detail[0])
    else:
        assert isinstance(detail, str)


def test_old_client_version_is_refused(backend: Backend) -> None:
    old = {"X-SkyPilot-API-Version": "10", "X-SkyPilot-Version": "0.9.0"}
    response = httpx.get(f"{backend.url}/api/health", headers=old, timeout=10)
    assert response.status_code == 400
    assert response.json()["error"] == "version_mismatch"


def test_env_vars_without_user_id_crash_as_text_plain(backend: Backend) -> None:
    response = httpx.post(
        f"{backend.url}/status", json={"env_vars": {"X": "1"}}, headers=VERSION_HEADERS, timeout=10
    )
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")
    assert "X-Skypilot-Request-ID" not in response.headers


async def test_exec_on_unknown_cluster_fails_not_found_with_its_marker(
    client: SkyPilotClient,
) -> None:
    """POST /exec (repair in place): the body ExecBody takes, the request name it is listed
    under, and the error when the cluster is not there (nothing is provisioned)."""
    name = unique("ct-exec")
    request_id = await client.exec(name, cpu_task("exec"), idempotency_key="node:repair:1")
    records = await client.find_requests(name, name="sky.exec")
    assert [r.request_id for r in records] == [request_id]
    marked = await client.request_status(request_id)  # by id: the body, with its marker
    assert (marked.entrypoint_command or "").endswith("key=node:repair:1")
    with pytest.raises(RequestFailedError) as failure:
        await client.wait_for_request(request_id, timeout=60)
    assert failure.value.not_found, failure.value
    assert failure.value.error_type == "ClusterDoesNotExist", failure.value
    assert await client.cluster_status(name) is ClusterStatus.TERMINATED
