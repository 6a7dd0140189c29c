"""Client behaviour at the edges the real server rarely shows: lost responses, retries, crashes.

A scripted transport stands in for the server so each edge happens exactly when the test says.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from controlplane.skypilot.client import Identity, SkyPilotClient, Timeouts
from controlplane.skypilot.errors import (
    APIError,
    AuthenticationError,
    RequestFailedError,
    ServerUnreachableError,
    WaitTimeoutError,
)
from controlplane.skypilot.retry import RetryPolicy
from controlplane.skypilot.task import SkyTask

TOKEN = "sky_unit-test-token-value-123456"
TASK = SkyTask(
    name="c1", document={"name": "c1", "run": "echo"}, secrets={"HF_TOKEN": SecretStr("hf_zzz999")}
)


class ScriptedServer:
    """Minimal in-memory API server; ``script`` hooks decide per call what goes wrong."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.seen_headers: list[httpx.Headers] = []
        self.bodies: list[dict[str, Any]] = []
        self.script: dict[str, list[Callable[[httpx.Request], httpx.Response | None]]] = {}

    def on(self, key: str, *actions: Callable[[httpx.Request], httpx.Response | None]) -> None:
        self.script.setdefault(key, []).extend(actions)

    def store(self, request: httpx.Request, name: str, status: str = "PENDING") -> str:
        body = json.loads(request.content)
        request_id = str(uuid.uuid4())
        self.requests[request_id] = {
            "request_id": request_id,
            "name": name,
            "status": status,
            "cluster_name": body.get("cluster_name"),
            "created_at": len(self.requests),
            "request_body": json.dumps(body),
            "return_value": "null",
            "error": "null",
        }
        return request_id

    def handler(self, request: httpx.Request) -> httpx.Response:
        key = f"{request.method} {request.url.path}"
        self.calls.append((request.method, request.url.path))
        self.seen_headers.append(request.headers)
        if request.method == "POST":
            self.bodies.append(json.loads(request.content))
        actions = self.script.get(key)
        if actions:
            result = actions.pop(0)(request)
            if result is not None:
                return result
        if request.method == "POST":
            name = {"/launch": "sky.launch", "/down": "sky.down", "/status": "sky.status"}[
                request.url.path
            ]
            request_id = self.store(request, name)
            return httpx.Response(200, json=None, headers={"X-Skypilot-Request-ID": request_id})
        if request.url.path == "/api/status":
            cluster = request.url.params.get("cluster_name")
            ids = request.url.params.get_list("request_ids")
            rows = [
                r
                for r in self.requests.values()
                if (cluster is None or r["cluster_name"] == cluster)
                and (not ids or r["request_id"] in ids)
            ]
            rows.sort(key=lambda r: r["created_at"], reverse=True)
            return httpx.Response(200, json=rows)
        if request.url.path == "/api/get":
            row = self.requests.get(request.url.params["request_id"])
            if row is None:
                return httpx.Response(404, json={"detail": "not found"})
            return httpx.Response(200, json={**row, "status": "SUCCEEDED", "return_value": "[]"})
        return httpx.Response(404, json={"detail": "Not Found"})

    def count(self, method: str, path: str) -> int:
        return self.calls.count((method, path))


def lost_after_storing(
    server: ScriptedServer, name: str
) -> Callable[[httpx.Request], httpx.Response | None]:
    def act(request: httpx.Request) -> httpx.Response | None:
        server.store(request, name)
        raise httpx.ReadTimeout("response lost", request=request)

    return act


def raise_(
    exc_type: type[httpx.TransportError],
) -> Callable[[httpx.Request], httpx.Response | None]:
    def act(request: httpx.Request) -> httpx.Response | None:
        raise exc_type("boom", request=request)

    return act


def reply(
    status: int,
    body: Any = None,
    *,
    text: str | None = None,
    headers: dict[str, str] | None = None,
) -> Callable[[httpx.Request], httpx.Response | None]:
    def act(request: httpx.Request) -> httpx.Response | None:
        if text is not None:
            return httpx.Response(status, text=text, headers={"content-type": "text/plain"})
        return httpx.Response(status, json=body, headers=headers)

    return act


@pytest.fixture
def server() -> ScriptedServer:
    return ScriptedServer()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    recorded: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr("controlplane.skypilot.client.pause", fake_sleep)
    return recorded


def make_client(server: ScriptedServer, **kwargs: Any) -> SkyPilotClient:
    return SkyPilotClient(
        "http://sky.test",
        token=SecretStr(TOKEN),
        identity=Identity("orch0001", "orchestrator"),
        retry=kwargs.pop("retry", RetryPolicy(max_retries=3, backoff_s=1.0, jitter=0)),
        timeouts=kwargs.pop("timeouts", Timeouts()),
        transport=httpx.MockTransport(server.handler),
        **kwargs,
    )


async def test_lost_launch_response_reattaches_instead_of_resubmitting(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.on("POST /launch", lost_after_storing(server, "sky.launch"))
    async with make_client(server) as sky:
        request_id = await sky.launch("c1", TASK)
    assert server.count("POST", "/launch") == 1
    assert list(server.requests) == [request_id]


@pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.RemoteProtocolError, httpx.ReadError])
async def test_post_that_never_landed_is_sent_again(
    server: ScriptedServer, sleeps: list[float], failure: type[httpx.TransportError]
) -> None:
    server.on("POST /launch", raise_(failure))
    async with make_client(server) as sky:
        request_id = await sky.launch("c1", TASK)
    assert server.count("POST", "/launch") == 2
    assert list(server.requests) == [request_id]
    assert server.count("GET", "/api/status") >= 1  # it looked before sending again


async def test_connect_error_is_retried_without_lookup(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.on("POST /down", raise_(httpx.ConnectError))
    async with make_client(server) as sky:
        await sky.down("c1")
    assert server.count("POST", "/down") == 2
    assert server.count("GET", "/api/status") == 0
    assert sleeps == [1.0]


async def test_503_honours_retry_after_then_backs_off_exponentially_capped(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    busy = reply(503, {"detail": "busy"}, headers={"Retry-After": "4"})
    server.on("POST /down", busy, reply(503, {"detail": "busy"}), reply(503, {"detail": "busy"}))
    async with make_client(
        server, retry=RetryPolicy(max_retries=3, backoff_s=4.0, max_factor=1.5, jitter=0)
    ) as sky:
        await sky.down("c1")
    assert sleeps == [4.0, 6.0, 6.0]  # Retry-After, then 2x4=8 capped at 1.5x4=6
    assert server.count("POST", "/down") == 4


async def test_retries_stop_at_max_retries(server: ScriptedServer, sleeps: list[float]) -> None:
    server.on("GET /api/health", *[raise_(httpx.ConnectError)] * 5)
    async with make_client(server, retry=RetryPolicy(max_retries=2, backoff_s=1, jitter=0)) as sky:
        with pytest.raises(ServerUnreachableError, match="SKYPILOT_API_SERVER_URL"):
            await sky.health()
    assert server.count("GET", "/api/health") == 3


async def test_auth_errors_are_not_retried(server: ScriptedServer, sleeps: list[float]) -> None:
    server.on("POST /status", reply(401, {"detail": "Invalid or expired service account token"}))
    async with make_client(server) as sky:
        with pytest.raises(AuthenticationError):
            await sky.status()
    assert server.count("POST", "/status") == 1
    assert sleeps == []


async def test_text_plain_500_reopens_the_connection_and_retries_a_get(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.on(
        "GET /api/health",
        reply(500, text="Traceback\nKeyError"),
        reply(200, {"status": "healthy", "api_version": "62"}),
    )
    async with make_client(server) as sky:
        first_pool = sky._http
        health = await sky.health()
        assert sky._http is not first_pool
    assert health.healthy


async def test_idempotency_key_reattaches_to_a_live_request_across_clients(
    server: ScriptedServer,
) -> None:
    async with make_client(server) as sky:
        first = await sky.launch("c1", TASK, idempotency_key="wf-7")
    async with make_client(server) as other_process:
        again = await other_process.launch("c1", TASK, idempotency_key="wf-7")
    assert again == first
    assert server.count("POST", "/launch") == 1


async def test_idempotency_key_resubmits_after_a_failed_attempt(server: ScriptedServer) -> None:
    async with make_client(server) as sky:
        first = await sky.launch("c1", TASK, idempotency_key="wf-8")
        server.requests[first]["status"] = "FAILED"
        second = await sky.launch("c1", TASK, idempotency_key="wf-8")
    assert second != first
    assert server.count("POST", "/launch") == 2


async def test_lost_response_after_a_failed_attempt_does_not_reattach_to_the_old_one(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    async with make_client(server) as sky:
        first = await sky.launch("c1", TASK, idempotency_key="wf-9")
        server.requests[first]["status"] = "FAILED"
        server.on("POST /launch", raise_(httpx.ReadTimeout))
        second = await sky.launch("c1", TASK, idempotency_key="wf-9")
    assert second != first
    assert server.count("POST", "/launch") == 3  # first, the lost one that never landed, the resend


async def test_every_call_carries_version_headers_token_and_identity(
    server: ScriptedServer,
) -> None:
    async with make_client(server) as sky:
        await sky.launch("c1", TASK)
        await sky.status(["c1"])
    for headers in server.seen_headers:
        assert headers["X-SkyPilot-API-Version"] == "62"
        assert headers["X-SkyPilot-Version"] == "0.14.1"
        assert headers["Authorization"] == f"Bearer {TOKEN}"
    for body in server.bodies:
        assert body["env_vars"] == {"SKYPILOT_USER_ID": "orch0001", "SKYPILOT_USER": "orchestrator"}
    launch, status = server.bodies
    assert "HF_TOKEN: hf_zzz999" in launch["task"]
    assert "envs" not in launch
    assert status["include_credentials"] is False
    assert status["all_users"] is True
    assert status["cluster_names"] == ["c1"]


async def test_missing_request_id_header_is_an_error(server: ScriptedServer) -> None:
    server.on("POST /down", reply(200, None))
    async with make_client(server) as sky:
        with pytest.raises(APIError, match="X-Skypilot-Request-ID"):
            await sky.down("c1")


async def test_wait_long_polls_until_the_result_arrives(server: ScriptedServer) -> None:
    server.on("GET /api/get", raise_(httpx.ReadTimeout), raise_(httpx.ReadTimeout))
    async with make_client(server) as sky:
        request_id = await sky.down("c1")
        assert await sky.wait_for_request(request_id, timeout=60) == []
    assert server.count("GET", "/api/get") == 3
    assert server.count("GET", "/api/status") == 0


async def test_wait_with_poll_interval_polls_status(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    async with make_client(server) as sky:
        request_id = await sky.down("c1")
        server.on(
            "GET /api/status", reply(200, [{**server.requests[request_id], "status": "RUNNING"}])
        )
        server.requests[request_id]["status"] = "SUCCEEDED"
        assert await sky.wait_for_request(request_id, timeout=60, poll_interval=0.5) == []
    assert server.count("GET", "/api/status") == 2
    assert sleeps == [0.5]


async def test_wait_deadline_raises_wait_timeout(server: ScriptedServer) -> None:
    server.on("GET /api/get", *[raise_(httpx.ReadTimeout)] * 100_000)
    async with make_client(server, timeouts=Timeouts(long_poll=0.01)) as sky:
        request_id = await sky.down("c1")
        with pytest.raises(WaitTimeoutError) as failure:
            await sky.wait_for_request(request_id, timeout=0.05)
    assert failure.value.retryable


async def test_failed_request_record_becomes_request_failed_error(server: ScriptedServer) -> None:
    error = json.dumps(
        {"object": "x", "type": "ClusterDoesNotExist", "message": "Cluster 'c1' does not exist."}
    )

    def failed(request: httpx.Request) -> httpx.Response:
        request_id = request.url.params["request_id"]
        row = {
            **server.requests[request_id],
            "status": "FAILED",
            "error": error,
            "name": "sky.down",
        }
        return httpx.Response(500, json={"detail": row})

    server.on("GET /api/get", failed)
    async with make_client(server) as sky:
        result = await sky.terminate("c1", timeout=5)
    assert result.already_gone


async def test_token_and_secrets_never_logged(
    server: ScriptedServer, caplog: pytest.LogCaptureFixture, sleeps: list[float]
) -> None:
    caplog.set_level(logging.DEBUG)
    server.on("POST /launch", lost_after_storing(server, "sky.launch"))
    server.on("POST /down", reply(503, {"detail": "busy"}))
    async with make_client(server) as sky:
        await sky.launch("c1", TASK)
        await sky.down("c1")
        assert TOKEN not in repr(sky)
    assert caplog.records, "expected the retry and reattach to be logged"
    for text in (TOKEN, "hf_zzz999"):
        assert text not in caplog.text


async def test_cancel_refuses_empty_and_status_missing_cluster_is_terminated(
    server: ScriptedServer,
) -> None:
    async with make_client(server) as sky:
        with pytest.raises(ValueError, match="cancel all"):
            await sky.cancel(["", ""])
        assert (await sky.cluster_status("ghost")).value == "TERMINATED"


async def test_request_failure_message_has_no_ansi(server: ScriptedServer) -> None:
    error = json.dumps(
        {"type": "NoCloudAccessError", "message": "Run: \u001b[1msky check\u001b[0m"}
    )

    def failed(request: httpx.Request) -> httpx.Response:
        row = {
            **server.requests[request.url.params["request_id"]],
            "status": "FAILED",
            "error": error,
        }
        return httpx.Response(500, json={"detail": row})

    server.on("GET /api/get", failed)
    async with make_client(server) as sky:
        request_id = await sky.launch("c1", TASK)
        with pytest.raises(RequestFailedError) as failure:
            await sky.wait_for_request(request_id, timeout=5)
    assert failure.value.message == "Run: sky check"
    assert not failure.value.retryable
