"""The SkyPilot API server simulator speaks the 0.14.1 REST contract (shared/skypilot-api.md).

Every test talks plain HTTP to a SimulatorServer on a free port, so what is checked is what a
client sees on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from controlplane.skypilot.client import Identity, SkyPilotClient, Timeouts
from controlplane.skypilot.errors import SubmitUnconfirmedError
from controlplane.skypilot.models import RequestRecord, RequestStatus
from controlplane.skypilot.task import SkyTask
from devtools.skypilot_sim import SimConfig, SimulatorServer
from tests.support.processes import run_text

USER = {"SKYPILOT_USER_ID": "orch0001", "SKYPILOT_USER": "orchestrator"}
VERSION_HEADERS = {"X-SkyPilot-API-Version": "62", "X-SkyPilot-Version": "0.14.1"}
TOKEN = "sky_test-service-account-token"
TASK = """\
name: probe
---
name: probe
resources:
  infra: aws/us-east-1
  accelerators: A100:1
  ports: [8000]
  autostop:
    idle_minutes: 30
    down: false
envs:
  MODEL_ID: org/model
run: echo hello
"""


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    config = SimConfig(
        port=0,
        launch_delay_s=0.3,
        down_delay_s=0.05,
        stop_delay_s=0.05,
        model_warmup_s=1.5,
        status_delay_s=0.01,
        long_workers=1,
    )
    with SimulatorServer(config) as sim:
        yield sim


@pytest.fixture
def http(server: SimulatorServer) -> Iterator[httpx.Client]:
    server.reset()
    with httpx.Client(base_url=server.url, headers=VERSION_HEADERS, timeout=10) as client:
        yield client
    server.reset()


@pytest.fixture(scope="module")
def auth_server() -> Iterator[SimulatorServer]:
    config = SimConfig(port=0, service_account_tokens=[TOKEN], require_auth=True)
    with SimulatorServer(config) as sim:
        yield sim


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def submit(http: httpx.Client, path: str, body: dict[str, Any]) -> str:
    response = http.post(path, json={"env_vars": USER, **body})
    assert response.status_code == 200, response.text
    assert response.content == b"null"
    request_id = response.headers["X-Skypilot-Request-ID"]
    assert str(uuid.UUID(request_id)) == request_id
    return request_id


def get(http: httpx.Client, request_id: str) -> httpx.Response:
    return http.get("/api/get", params={"request_id": request_id})


def result(http: httpx.Client, request_id: str) -> Any:
    response = get(http, request_id)
    assert response.status_code == 200, response.text
    return json.loads(response.json()["return_value"])


def failure(http: httpx.Client, request_id: str) -> dict[str, Any]:
    """The request's error (type, message) from its /api/get 500."""
    response = get(http, request_id)
    assert response.status_code == 500, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, dict)
    error: dict[str, Any] = json.loads(detail["error"])
    assert set(error) == {"object", "type", "message"}
    return error


def launch(http: httpx.Client, cluster: str, task: str = TASK, **extra: Any) -> str:
    return submit(http, "/launch", {"task": task, "cluster_name": cluster, **extra})


def clusters(http: httpx.Client, *names: str) -> list[dict[str, Any]]:
    body = {"cluster_names": list(names) or None, "include_credentials": False}
    records = result(http, submit(http, "/status", body))
    assert isinstance(records, list)
    return records


def status_of(http: httpx.Client, request_id: str) -> str:
    rows = http.get("/api/status", params={"request_ids": request_id}).json()
    return str(rows[0]["status"])


def set_faults(http: httpx.Client, **faults: Any) -> dict[str, Any]:
    response = http.post("/sim/faults", json=faults)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_async_post_answers_null_with_a_request_id_and_api_get_returns_the_payload(
    http: httpx.Client,
) -> None:
    response = http.post("/status", json={})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() is None
    assert response.headers["X-SkyPilot-API-Version"] == "62"
    assert response.headers["X-SkyPilot-Version"] == "0.14.1"
    request_id = response.headers["X-Skypilot-Request-ID"]

    got = get(http, request_id[:8])  # a unique prefix works too
    assert got.status_code == 200
    payload = got.json()
    assert list(payload) == [
        "request_id",
        "name",
        "entrypoint",
        "request_body",
        "status",
        "created_at",
        "user_id",
        "return_value",
        "error",
        "pid",
        "schedule_type",
        "user_name",
        "cluster_name",
        "status_msg",
        "should_retry",
        "finished_at",
        "file_mounts_blob_id",
    ]
    assert payload["request_id"] == request_id
    assert payload["name"] == "sky.status"
    assert payload["status"] == "SUCCEEDED"
    assert payload["return_value"] == "[]"
    assert payload["error"] == "null"
    assert payload["user_id"] == "fcd1e5cf"  # no env_vars: the server's own user
    assert payload["user_name"] is None
    assert payload["schedule_type"] == "short"
    # Every response has its own throw-away id.
    assert got.headers["X-Skypilot-Request-ID"] != request_id


def test_launch_goes_init_then_up_and_the_model_endpoint_warms_up(
    http: httpx.Client, server: SimulatorServer
) -> None:
    request_id = launch(http, "c-up")
    wait_until(lambda: server.cluster_status("c-up") == "INIT")
    (record,) = clusters(http, "c-up")
    assert record["status"] == "INIT"
    assert record["init_kind"] == "launching"
    assert status_of(http, request_id) == "RUNNING"

    assert result(http, request_id) == {"job_id": 1, "handle": "gAROLg=="}
    (record,) = clusters(http, "c-up")
    assert record["status"] == "UP"
    assert record["cloud"] == "AWS"
    assert record["region"] == "us-east-1"
    assert record["accelerators"] == "{'A100': 1}"
    assert record["autostop"] == 30
    assert record["to_down"] is False
    assert record["user_hash"] == "orch0001"
    assert record["handle"] == "gAROLg=="
    assert record["labels"] == {}
    assert "credentials" not in record

    endpoints = result(http, submit(http, "/endpoints", {"cluster": "c-up", "port": 8000}))
    address = endpoints["8000"]
    assert address == f"127.0.0.1:{server.port}/sim/models/c-up"
    health = httpx.get(f"http://{address}/health")
    assert health.status_code == 503
    wait_until(lambda: httpx.get(f"http://{address}/health").status_code == 200)
    assert httpx.get(f"http://{address}/health").json() == {"status": "ok"}
    models = httpx.get(f"http://{address}/v1/models").json()
    assert models["data"][0]["id"] == "org/model"

    # A second launch on the UP cluster reuses it.
    assert result(http, launch(http, "c-up")) == {"job_id": 2, "handle": "gAROLg=="}


def test_down_of_an_unknown_cluster_fails_with_cluster_does_not_exist(http: httpx.Client) -> None:
    request_id = submit(http, "/down", {"cluster_name": "does-not-exist", "purge": False})
    response = get(http, request_id)
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert detail["name"] == "sky.down"
    assert detail["status"] == "FAILED"
    assert detail["cluster_name"] == "does-not-exist"
    assert detail["return_value"] == "null"
    error = json.loads(detail["error"])
    assert error["type"] == "ClusterDoesNotExist"
    assert error["message"] == "Cluster 'does-not-exist' does not exist."
    # The project's own model reads it the same way.
    parsed = RequestRecord.model_validate(detail)
    assert parsed.status is RequestStatus.FAILED
    assert parsed.error is not None
    assert parsed.error.type == "ClusterDoesNotExist"

    stop_error = failure(http, submit(http, "/stop", {"cluster_name": "does-not-exist"}))
    assert stop_error["type"] == "ClusterDoesNotExist"


def test_down_and_stop_of_an_up_cluster(http: httpx.Client) -> None:
    assert result(http, launch(http, "c-stop")) is not None
    assert result(http, submit(http, "/stop", {"cluster_name": "c-stop"})) is None
    assert [c["status"] for c in clusters(http, "c-stop")] == ["STOPPED"]
    assert result(http, submit(http, "/down", {"cluster_name": "c-stop"})) is None
    assert clusters(http, "c-stop") == []


def test_api_get_unknown_missing_and_ambiguous_ids(http: httpx.Client) -> None:
    unknown = str(uuid.uuid4())
    response = get(http, unknown)
    assert response.status_code == 404
    assert response.json() == {"detail": f"Request '{unknown}' not found"}
    assert "X-Skypilot-Request-ID" in response.headers

    missing = http.get("/api/get")
    assert missing.status_code == 422
    assert missing.json() == {
        "detail": [
            {
                "type": "missing",
                "loc": ["query", "request_id"],
                "msg": "Field required",
                "input": None,
            }
        ]
    }
    empty = get(http, "")
    assert empty.status_code == 400
    assert empty.json() == {"detail": "Multiple requests found for request ID prefix: "}


def test_api_status_readable_rows_and_field_selection(http: httpx.Client) -> None:
    marker = "controlplane launch c-rows key=abc"
    first = launch(http, "c-rows", entrypoint_command=marker)
    second = submit(http, "/down", {"cluster_name": "c-rows-other"})
    failure(http, second)

    rows = http.get("/api/status", params={"request_ids": first}).json()
    (row,) = rows
    assert row["entrypoint"] == "launch"
    assert row["return_value"] == "null"
    assert row["error"] == "null"
    assert row["pid"] is None
    assert row["user_name"] == "orchestrator"
    assert row["schedule_type"] == "long"
    body = json.loads(row["request_body"])
    assert body["entrypoint_command"] == marker
    assert body["task"] == TASK
    assert body["retry_until_up"] is False  # every field, with its default
    assert body["client_api_version"] == 62

    all_rows = http.get("/api/status", params={"all_status": "true"}).json()
    ours = [r["request_id"] for r in all_rows if r["user_id"] == "orch0001"]
    assert ours == [second, first]  # newest first

    # Without ids and all_status: only active requests, including the server's daemons.
    active = http.get("/api/status").json()
    assert second not in [r["request_id"] for r in active]
    daemons = [r for r in active if r["user_id"] == "skypilot-system"]
    assert {r["request_id"] for r in daemons} >= {"skypilot-status-refresh-daemon"}
    assert all(r["status"] == "RUNNING" for r in daemons)

    by_cluster = http.get(
        "/api/status",
        params=[("cluster_name", "c-rows"), ("all_status", "true"), ("fields", "request_id")],
    ).json()
    assert [(r["request_id"], r["name"], r["user_id"]) for r in by_cluster] == [(first, "", "")]

    bad = http.get("/api/status", params={"fields": "nope"})
    assert bad.status_code == 400
    assert bad.json()["detail"].startswith("Unknown request field(s): ['nope']. Valid fields: [")
    assert http.get("/api/status", params={"request_ids": str(uuid.uuid4())}).json() == []


def test_schema_violations_are_422_and_create_nothing(http: httpx.Client) -> None:
    response = http.post("/launch", json={"cluster_name": "c-422", "env_vars": USER})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert (error["type"], error["loc"], error["msg"]) == (
        "missing",
        ["body", "task"],
        "Field required",
    )

    response = http.post("/status", json={"refresh": "SOMETIMES", "env_vars": USER})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["type"] == "enum"
    assert error["loc"] == ["body", "refresh"]
    assert error["msg"] == "Input should be 'NONE', 'AUTO' or 'FORCE'"

    assert http.post("/endpoints", json={"env_vars": USER}).status_code == 422
    assert http.get("/sim/counters").json()["requests_by_status"] == {}


def test_version_headers_are_checked_only_when_both_are_sent(http: httpx.Client) -> None:
    old = {"X-SkyPilot-API-Version": "10", "X-SkyPilot-Version": "0.9.0"}
    response = http.get("/api/health", headers=old)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "version_mismatch"
    assert body["message"].startswith(
        "\x1b[33mYour SkyPilot client version is too old:0.9.0\n\x1b[0mThe server is running on "
        "0.14.1 and the minimum compatible version is 0.11.0."
    )
    assert response.headers["X-SkyPilot-API-Version"] == "62"

    with httpx.Client(base_url=http.base_url) as bare:
        plain = bare.get("/api/health", headers={"X-SkyPilot-API-Version": "62"})
        assert plain.status_code == 200
        assert "X-SkyPilot-API-Version" not in plain.headers
        assert "X-SkyPilot-Version" not in plain.headers

        crash = bare.get(
            "/api/health", headers={"X-SkyPilot-API-Version": "x", "X-SkyPilot-Version": "0.14.1"}
        )
        assert crash.status_code == 500
        assert crash.headers["content-type"].startswith("text/plain")
        assert "X-Skypilot-Request-ID" not in crash.headers


def test_health_body(http: httpx.Client) -> None:
    response = http.get("/api/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "api_version": "62",
        "version": "0.14.1",
        "version_on_disk": "0.14.1",
        "commit": "7e595970a806dcc9eefadf459f399edf1733e962",
        "basic_auth_enabled": False,
        "user": None,
        "service_account_token_enabled": False,
        "ingress_basic_auth_enabled": False,
        "latest_version": None,
        "external_proxy_auth_enabled": True,
        "telemetry_enabled": False,
        "restrict_config_to_admins": True,
    }


def test_env_vars_without_user_id_crash_with_a_text_plain_500(
    http: httpx.Client, server: SimulatorServer
) -> None:
    response = http.post("/launch", json={"task": TASK, "cluster_name": "c-crash", "env_vars": {}})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/plain")
    assert "KeyError" in response.text
    assert "X-Skypilot-Request-ID" not in response.headers
    assert "X-SkyPilot-API-Version" not in response.headers
    # As on the real server, the next request on that keep-alive connection is reset.
    with pytest.raises(httpx.ReadError):
        http.get("/api/health")
    counters = httpx.get(f"{server.url}/sim/counters").json()
    assert counters["requests_by_status"] == {}
    assert counters["launch_requests"] == {}


def test_bearer_tokens_when_service_accounts_are_disabled(http: httpx.Client) -> None:
    refused = http.post("/status", json={}, headers={"Authorization": "Bearer sky_made_up"})
    assert refused.status_code == 401
    assert refused.json() == {"detail": "Service account authentication disabled"}
    assert refused.headers["Cache-Control"] == "no-store"
    assert "X-Skypilot-Request-ID" in refused.headers
    assert "X-SkyPilot-API-Version" not in refused.headers
    assert "WWW-Authenticate" not in refused.headers
    # A Bearer token without the sky_ prefix is ignored.
    ignored = http.post("/status", json={}, headers={"Authorization": "Bearer abc"})
    assert ignored.status_code == 200
    # A sky_ token is checked even on /api/health, as the real server's middleware does.
    health = http.get("/api/health", headers={"Authorization": "Bearer sky_made_up"})
    assert health.status_code == 401


def test_service_account_auth(auth_server: SimulatorServer) -> None:
    with httpx.Client(base_url=auth_server.url, headers=VERSION_HEADERS) as client:
        anonymous = client.post("/status", json={})
        assert anonymous.status_code == 401
        assert anonymous.json() == {"detail": "Authentication required"}

        wrong = client.post("/status", json={}, headers={"Authorization": "Bearer sky_wrong"})
        assert wrong.status_code == 401
        assert wrong.json() == {"detail": "Invalid or expired service account token"}

        health = client.get("/api/health")  # open without a token
        assert health.status_code == 200
        assert health.json()["service_account_token_enabled"] is True
        assert health.json()["user"] is None

        good = {"Authorization": f"Bearer {TOKEN}"}
        named = client.get("/api/health", headers=good).json()["user"]
        assert (named["id"][:3], named["user_type"]) == ("sa-", "sa")
        response = client.post("/status", json={"env_vars": USER}, headers=good)
        assert response.status_code == 200
        got = client.get(
            "/api/get",
            params={"request_id": response.headers["X-Skypilot-Request-ID"]},
            headers=good,
        )
        user_id = got.json()["user_id"]
        assert user_id.startswith("sa-")
        assert len(user_id) == 19  # the token wins over env_vars
        assert int(user_id[3:], 16) >= 0


@pytest.fixture
def slow_launches() -> Iterator[tuple[httpx.Client, SimulatorServer]]:
    """One LONG worker and launches slow enough to still be INIT on a loaded machine."""
    config = SimConfig(port=0, launch_delay_s=5.0, down_delay_s=0.05, long_workers=1)
    with (
        SimulatorServer(config) as sim,
        httpx.Client(base_url=sim.url, headers=VERSION_HEADERS, timeout=10) as client,
    ):
        yield client, sim


def test_cancel_of_a_pending_launch(slow_launches: tuple[httpx.Client, SimulatorServer]) -> None:
    http, server = slow_launches
    running = launch(http, "c-busy")  # takes the only LONG worker
    pending = launch(http, "c-pending")
    assert status_of(http, pending) == "PENDING"

    cancel_id = submit(http, "/api/cancel", {"request_ids": [pending]})
    assert result(http, cancel_id) == [pending]
    assert get(http, cancel_id).json()["name"] == "sky.api_cancel"
    victim = get(http, pending)
    assert victim.status_code == 200
    assert (victim.json()["status"], victim.json()["error"]) == ("CANCELLED", "null")
    assert server.cluster_status("c-pending") is None

    # Cancelling a running launch removes its INIT cluster; unknown ids are skipped.
    wait_until(lambda: server.cluster_status("c-busy") == "INIT")
    cancel_id = submit(http, "/api/cancel", {"request_ids": [running, str(uuid.uuid4())]})
    assert result(http, cancel_id) == [running]
    assert server.cluster_status("c-busy") is None
    assert clusters(http) == []


def test_down_during_a_launch_cancels_it(http: httpx.Client, server: SimulatorServer) -> None:
    launch_id = launch(http, "c-race")
    wait_until(lambda: server.cluster_status("c-race") == "INIT")
    assert result(http, submit(http, "/down", {"cluster_name": "c-race"})) is None
    assert get(http, launch_id).json()["status"] == "CANCELLED"
    assert clusters(http, "c-race") == []


def test_injected_launch_failure_leaves_no_cluster(http: httpx.Client) -> None:
    set_faults(http, fail_next_launches=1)
    error = failure(http, launch(http, "c-fail"))
    assert error["type"] == "ResourcesUnavailableError"
    assert error["message"] == (
        "Failed to acquire resources in all zones in us-east-1 for {A100:1}."
    )
    assert clusters(http, "c-fail") == []
    assert result(http, launch(http, "c-fail"))["job_id"] == 1  # only the next one failed


def test_task_problems_fail_the_request_and_validate_answers_400(http: httpx.Client) -> None:
    bogus = "name: v\nbogus_key: 1\nrun: echo hi\n"
    response = http.post("/validate", json={"dag": bogus, "request_options": None})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail["type"] == "InvalidSkyPilotConfigError"
    assert detail["message"] == "Invalid task YAML: Found unsupported field 'bogus_key'."
    assert detail["args"] == [detail["message"]]
    assert detail["attributes"] == {}
    assert detail["stacktrace"].startswith("Traceback")

    cpus = http.post(
        "/validate", json={"dag": "resources:\n  cpus: lots\n", "request_options": None}
    )
    assert cpus.json()["detail"]["type"] == "ValueError"
    assert "Found: 'lots'" in cpus.json()["detail"]["message"]
    broken = http.post("/validate", json={"dag": "resources: [\n", "request_options": None})
    assert broken.status_code == 400
    # A YAML error comes from another package, so the server ships it as a CloudError.
    detail = broken.json()["detail"]
    assert detail["type"] == "CloudError"
    assert detail["message"].startswith("yaml error (ParserError): while parsing a flow node")
    assert detail["attributes"] == {"cloud_provider": "yaml", "error_type": "ParserError"}
    ok = http.post("/validate", json={"dag": TASK, "request_options": None})
    assert (ok.status_code, ok.json()) == (200, None)

    # The same problems pass the launch POST and fail the request.
    assert failure(http, launch(http, "c-bad", task=bogus))["type"] == "InvalidSkyPilotConfigError"
    bad_name = failure(http, launch(http, "Bad_Name!!"))
    assert bad_name["type"] == "InvalidClusterNameError"
    assert failure(http, launch(http, "c-yaml", task="resources: [\n"))["type"] == "ParserError"


def test_endpoints_of_a_missing_cluster(http: httpx.Client) -> None:
    error = failure(http, submit(http, "/endpoints", {"cluster": "c-none"}))
    assert error == {
        "object": error["object"],
        "type": "ClusterNotUpError",
        "message": "Cluster 'c-none' not found.",
    }
    assert http.get("/sim/models/c-none/health").status_code == 404


def test_503_burst_with_retry_after(http: httpx.Client) -> None:
    set_faults(http, unavailable_burst=2, retry_after_s=3)
    for _ in range(2):
        response = http.post("/status", json={})
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "3"
        assert "concurrent worker limit" in response.json()["detail"]
    assert http.get("/api/health").status_code == 200  # health is never refused
    assert http.post("/status", json={}).status_code == 200


def test_a_dropped_response_still_creates_exactly_one_request(http: httpx.Client) -> None:
    set_faults(http, drop_next_responses=1)
    marker = "controlplane launch c-drop key=lost"
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.post(
            "/launch",
            json={
                "task": TASK,
                "cluster_name": "c-drop",
                "env_vars": USER,
                "entrypoint_command": marker,
            },
        )
    rows = http.get("/api/status", params={"cluster_name": "c-drop", "all_status": "true"}).json()
    assert [json.loads(r["request_body"])["entrypoint_command"] for r in rows] == [marker]
    assert result(http, rows[0]["request_id"])["job_id"] == 1
    counters = http.get("/sim/counters").json()
    assert counters["launch_requests"] == {"c-drop": 1}
    assert counters["dropped_responses"] == 1
    assert counters["calls"]["POST /launch"] == 1
    launch(http, "c-drop")  # the next response is delivered again


def test_late_commit_hides_an_accepted_request_until_it_commits(http: httpx.Client) -> None:
    set_faults(http, drop_next_responses=1, late_commit_s=0.5)
    marker = "controlplane launch c-late key=late"
    body = {"task": TASK, "cluster_name": "c-late", "env_vars": USER, "entrypoint_command": marker}
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        http.post("/launch", json=body)
    params = {"cluster_name": "c-late", "all_status": "true"}
    assert http.get("/api/status", params=params).json() == []  # accepted, not committed yet
    assert http.get("/sim/counters").json()["launch_requests"] == {}
    wait_until(lambda: bool(http.get("/api/status", params=params).json()))
    rows = http.get("/api/status", params=params).json()
    assert [json.loads(r["request_body"])["entrypoint_command"] for r in rows] == [marker]
    assert result(http, rows[0]["request_id"])["job_id"] == 1
    assert http.get("/sim/counters").json()["launch_requests"] == {"c-late": 1}
    assert http.get("/sim/counters").json()["late_commits"] == 1


def test_history_keeps_every_cluster_incarnation_after_it_is_gone(http: httpx.Client) -> None:
    """GET /sim/history: a cluster downed and launched again is two entries; a gone one stays."""
    result(http, launch(http, "c-hist"))
    result(http, launch(http, "c-other"))
    result(http, submit(http, "/down", {"cluster_name": "c-hist"}))
    wait_until(lambda: "c-hist" not in http.get("/sim/counters").json()["live_clusters"])
    result(http, launch(http, "c-hist"))
    history = http.get("/sim/history").json()
    assert [(c["name"], c["live"]) for c in history] == [
        ("c-hist", False),
        ("c-other", True),
        ("c-hist", True),
    ]
    assert history[0]["gone_at"] is not None
    assert history[1]["gone_at"] is None
    assert history[0]["cluster_hash"] != history[2]["cluster_hash"]
    assert http.get("/sim/counters").json()["calls"].get("GET /sim/history") is None
    http.post("/sim/reset")
    assert http.get("/sim/history").json() == []


# The task the client-against-simulator tests launch.
PROBE_TASK = SkyTask(
    name="probe",
    document={
        "name": "probe",
        "resources": {"infra": "aws/us-east-1", "accelerators": "A100:1", "ports": [8000]},
        "run": "echo hello",
    },
)


async def test_client_reattaches_to_a_late_commit_instead_of_launching_twice(
    server: SimulatorServer, http: httpx.Client
) -> None:
    """Issue 10 path 3: the server commits a launch 3 s after losing its response, later than
    the client's old ~2 s look; the client must wait for the marker, never POST again."""
    late_s = 3.0
    server.set_faults(drop_next_responses=1, late_commit_s=late_s)
    task = PROBE_TASK
    started = time.monotonic()
    async with SkyPilotClient(
        server.url,
        identity=Identity("orch0001", "orchestrator"),
        timeouts=Timeouts(commit_horizon=15),
    ) as sky:
        request_id = await sky.launch("c-late2", task, idempotency_key="node-late")
        await asyncio.sleep(max(0.0, started + late_s + 0.5 - time.monotonic()))
        counters = server.counters()
        assert counters["launch_requests"] == {"c-late2": 1}
        assert counters["calls"]["POST /launch"] == 1
        assert [r.request_id for r in await sky.find_requests("c-late2")] == [request_id]


async def test_a_retried_attempt_waits_for_a_late_commit_before_it_sends(
    server: SimulatorServer, http: httpx.Client
) -> None:
    """Issue 10 path 3 across attempts (found by the chaos run: two SUCCEEDED launches for one
    node): an attempt whose POST is committed late gives up (its worker died, or its own look
    ended) before the commit; the next attempt's first look finds nothing, and must keep
    looking until the commit horizon instead of POSTing a second launch."""
    late_s = 3.0
    server.set_faults(drop_next_responses=1, late_commit_s=late_s)
    task = PROBE_TASK
    identity = Identity("orch0001", "orchestrator")
    async with SkyPilotClient(
        server.url, identity=identity, timeouts=Timeouts(commit_horizon=0.2)
    ) as first:
        with pytest.raises(SubmitUnconfirmedError):
            await first.launch("c-late3", task, idempotency_key="node-late3")
    async with SkyPilotClient(
        server.url, identity=identity, timeouts=Timeouts(commit_horizon=15)
    ) as retried:
        request_id = await retried.launch(
            "c-late3", task, idempotency_key="node-late3", earlier_may_have_sent=True
        )
        counters = server.counters()
        assert counters["calls"]["POST /launch"] == 1
        assert counters["launch_requests"] == {"c-late3": 1}
        assert [r.request_id for r in await retried.find_requests("c-late3")] == [request_id]


def test_preemption_removes_the_cluster(http: httpx.Client) -> None:
    result(http, launch(http, "c-spot"))
    assert http.post("/sim/clusters/c-spot/preempt").status_code == 200
    assert clusters(http, "c-spot") == []
    assert http.post("/sim/clusters/c-spot/preempt").status_code == 404

    set_faults(http, preempt_after_s=0.1)
    result(http, launch(http, "c-spot"))
    wait_until(lambda: clusters(http, "c-spot") == [])
    assert http.get("/sim/counters").json()["live_clusters"] == []


def test_model_crash_hang_and_recover_while_the_cluster_stays_up(
    http: httpx.Client, server: SimulatorServer
) -> None:
    result(http, launch(http, "c-sick"))
    health = f"{server.url}/sim/models/c-sick/health"
    models = f"{server.url}/sim/models/c-sick/v1/models"
    wait_until(lambda: httpx.get(health).status_code == 200)

    assert http.post("/sim/models/c-sick/crash").json()["model_fault"] == "crash"
    assert httpx.get(health).status_code == 503
    assert httpx.get(models).status_code == 503
    (record,) = clusters(http, "c-sick")
    assert record["status"] == "UP"  # SkyPilot still sees a healthy cluster

    assert http.post("/sim/models/c-sick/hang").status_code == 200
    with pytest.raises(httpx.ReadTimeout):
        httpx.get(health, timeout=0.3)
    assert clusters(http, "c-sick")[0]["status"] == "UP"

    assert http.post("/sim/models/c-sick/recover").json()["model_fault"] is None
    assert httpx.get(health).status_code == 200
    assert httpx.get(models).json()["data"][0]["id"] == "org/model"

    assert server.model_fault("c-sick", "crash")
    assert httpx.get(health).status_code == 503
    assert server.model_fault("c-sick", None)
    assert httpx.get(health).status_code == 200


def test_a_hung_model_call_ends_when_the_model_recovers(
    http: httpx.Client, server: SimulatorServer
) -> None:
    result(http, launch(http, "c-hang"))
    health = f"{server.url}/sim/models/c-hang/health"
    wait_until(lambda: httpx.get(health).status_code == 200)
    assert server.model_fault("c-hang", "hang")
    with httpx.Client(timeout=5) as probe:
        answers: list[int] = []
        waiter = threading.Thread(target=lambda: answers.append(probe.get(health).status_code))
        waiter.start()
        time.sleep(0.3)
        assert answers == []  # still hanging
        assert server.model_fault("c-hang", None)
        waiter.join(5)
    assert answers == [200]


def test_model_faults_name_the_cluster_and_the_fault(http: httpx.Client) -> None:
    assert http.post("/sim/models/c-missing/crash").status_code == 404
    result(http, launch(http, "c-known"))
    response = http.post("/sim/models/c-known/explode")
    assert response.status_code == 404
    assert "crash, hang, recover" in response.json()["detail"]


def test_counters_count_every_call(http: httpx.Client) -> None:
    set_faults(http, unavailable_burst=1)
    assert http.post("/status", json={}).status_code == 503
    refused = http.post("/status", json={}, headers={"Authorization": "Bearer sky_x"})
    assert refused.status_code == 401
    result(http, launch(http, "c-count"))
    counters = http.get("/sim/counters").json()
    assert counters["calls"]["POST /status"] == 2  # the 503 and the 401
    assert counters["calls"]["POST /launch"] == 1
    assert counters["calls"]["GET /api/get"] >= 1
    assert counters["launch_requests"] == {"c-count": 1}
    assert counters["live_clusters"] == ["c-count"]
    assert counters["requests_by_status"] == {"SUCCEEDED": 1}
    assert http.post("/sim/faults", json={"launch_failure_rate": 2}).status_code == 422


@contextlib.contextmanager
def sim_command(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[int, str]]:
    """``python -m devtools.skypilot_sim --port 0 <args>``: its pid and the URL its first line
    names. Leaving the block SIGTERMs it, which must end it with 0 (killed if a test failed)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devtools.skypilot_sim", "--port", "0", *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        prefix = "skypilot simulator listening on "
        assert line.startswith(prefix), line
        yield process.pid, line[len(prefix) :]
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_command_line_serves_until_sigterm() -> None:
    with sim_command() as (_, url):
        assert httpx.get(url + "/api/health").status_code == 200


def test_command_line_reads_tokens_from_a_file_and_the_environment_not_argv(
    tmp_path: Path,
) -> None:
    """Issue 8.6: `ps` shows every process's argv to every user; the tokens are not in it."""
    from_file, from_env = "sky_sim-token-from-file-0123456789", "sky_sim-token-from-env-987654"
    token_file = tmp_path / "tokens"
    token_file.write_text(f"{from_file}\n\n")
    token_file.chmod(0o600)
    with sim_command(
        "--require-auth", "--token-file", str(token_file), env={"SKYPILOT_SIM_TOKENS": from_env}
    ) as (pid, url):
        listing = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-p", str(pid)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode()
        assert "devtools.skypilot_sim" in listing
        for token in (from_file, from_env):
            assert token not in listing
            assert token not in cmdline
        with httpx.Client(base_url=url, headers=VERSION_HEADERS) as client:
            assert client.post("/status", json={}).status_code == 401
            for token in (from_file, from_env):
                authorized = {"Authorization": f"Bearer {token}"}
                assert client.post("/status", json={}, headers=authorized).status_code == 200


def test_a_token_on_the_command_line_is_refused_without_repeating_it() -> None:
    token = "sky_argv-token-must-not-be-echoed-42"
    result = run_text(
        [sys.executable, "-m", "devtools.skypilot_sim", "--port", "0", "--token", token]
    )
    assert result.returncode != 0
    assert "--token is not accepted" in result.stderr
    assert "SKYPILOT_SIM_TOKENS" in result.stderr
    assert token not in result.stdout + result.stderr


async def test_async_context_manager_serves_an_async_client() -> None:
    config = SimConfig(port=0, launch_delay_s=0.05, status_delay_s=0.0)
    async with SimulatorServer(config) as sim, httpx.AsyncClient(base_url=sim.url) as client:
        response = await client.post(
            "/launch", json={"task": TASK, "cluster_name": "c-async", "env_vars": USER}
        )
        request_id = response.headers["X-Skypilot-Request-ID"]
        got = await client.get("/api/get", params={"request_id": request_id})
        assert got.json()["status"] == "SUCCEEDED"
        assert sim.counters()["live_clusters"] == ["c-async"]
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{sim.url}/api/health")
