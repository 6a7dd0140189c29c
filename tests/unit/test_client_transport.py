"""Client behaviour at the edges the real server rarely shows: lost responses, retries, crashes.

A scripted transport stands in for the server so each edge happens exactly when the test says.
The client itself retries only what never left the machine; everything else is raised, with
its retryability, for the activity's retry policy (tests/workflows/test_skypilot_retries.py).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from controlplane.skypilot.backend import ApiBackend
from controlplane.skypilot.client import Identity, SkyPilotClient, Timeouts
from controlplane.skypilot.errors import (
    APIError,
    AuthenticationError,
    RequestFailedError,
    ServerCrashError,
    ServerUnreachableError,
    SubmitUnconfirmedError,
    WaitTimeoutError,
)
from controlplane.skypilot.retry import RetryPolicy
from controlplane.skypilot.task import SkyTask
from tests.support.scripted_sky import ScriptedServer, lost_after_storing, raise_, reply

TOKEN = "sky_unit-test-token-value-123456"
TASK = SkyTask(
    name="c1", document={"name": "c1", "run": "echo"}, secrets={"HF_TOKEN": SecretStr("hf_zzz999")}
)


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
async def test_post_that_may_have_landed_is_not_sent_again_by_the_attempt(
    server: ScriptedServer, sleeps: list[float], failure: type[httpx.TransportError]
) -> None:
    server.on("POST /launch", raise_(failure))
    async with make_client(server, timeouts=Timeouts(commit_horizon=10)) as sky:
        with pytest.raises(SubmitUnconfirmedError, match="SKYPILOT_SUBMIT_COMMIT_HORIZON") as lost:
            await sky.launch("c1", TASK, idempotency_key="wf-1")
        assert lost.value.retryable
        assert server.count("POST", "/launch") == 1
        assert sum(sleeps) >= 10  # it looked for the marker for the whole horizon
        # The next activity attempt looks the marker up first, finds nothing, and sends once.
        request_id = await sky.launch("c1", TASK, idempotency_key="wf-1")
    assert server.count("POST", "/launch") == 2
    assert list(server.requests) == [request_id]


async def test_a_late_commit_within_the_horizon_is_reattached_not_resent(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    held: list[httpx.Request] = []

    def accept_but_commit_later(request: httpx.Request) -> httpx.Response | None:
        held.append(request)
        raise httpx.ReadTimeout("response lost", request=request)

    def commit_on_the_fifth_look(request: httpx.Request) -> httpx.Response | None:
        if len(server.status_queries) >= 5 and held:
            server.store(held.pop(), "sky.launch")
        return None

    server.on("POST /launch", accept_but_commit_later)
    server.always("GET /api/status", commit_on_the_fifth_look)
    async with make_client(server, timeouts=Timeouts(commit_horizon=30)) as sky:
        request_id = await sky.launch("c1", TASK, idempotency_key="wf-2")
    assert server.count("POST", "/launch") == 1
    assert list(server.requests) == [request_id]
    assert sum(sleeps) > 2  # longer than the old fixed 2 s look


@pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout])
async def test_failures_that_never_left_are_retried_without_lookup(
    server: ScriptedServer, sleeps: list[float], failure: type[httpx.TransportError]
) -> None:
    server.on("POST /down", raise_(failure))
    async with make_client(server) as sky:
        await sky.down("c1")
    assert server.count("POST", "/down") == 2
    assert server.count("GET", "/api/status") == 0
    assert sleeps == [1.0]


async def test_503_is_raised_for_the_retry_policy_with_its_retry_after(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.always("POST /down", reply(503, {"detail": "busy"}, headers={"Retry-After": "4"}))
    async with make_client(server) as sky:
        with pytest.raises(APIError) as busy:
            await sky.down("c1")
    assert busy.value.retryable
    assert busy.value.retry_after_s == 4.0
    assert server.count("POST", "/down") == 1  # sent once: Temporal owns the retry
    assert sleeps == []


async def test_503_on_a_get_is_not_retried_by_the_client(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.always("GET /api/health", reply(503, {"detail": "busy"}))
    async with make_client(server) as sky:
        with pytest.raises(APIError) as busy:
            await sky.health()
    assert busy.value.retryable
    assert server.count("GET", "/api/health") == 1
    assert sleeps == []


async def test_retries_stop_at_max_retries(server: ScriptedServer, sleeps: list[float]) -> None:
    server.on("GET /api/health", *[raise_(httpx.ConnectError)] * 5)
    async with make_client(server, retry=RetryPolicy(max_retries=2, backoff_s=1, jitter=0)) as sky:
        with pytest.raises(ServerUnreachableError, match="SKYPILOT_API_SERVER_URL"):
            await sky.health()
    assert server.count("GET", "/api/health") == 3
    assert sleeps == [1.0, 2.0]


async def test_auth_errors_are_not_retried(server: ScriptedServer, sleeps: list[float]) -> None:
    server.on("POST /status", reply(401, {"detail": "Invalid or expired service account token"}))
    async with make_client(server) as sky:
        with pytest.raises(AuthenticationError):
            await sky.status()
    assert server.count("POST", "/status") == 1
    assert sleeps == []


async def test_text_plain_500_reopens_the_connection_and_is_raised(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    server.on(
        "GET /api/health",
        reply(500, text="Traceback\nKeyError"),
        reply(200, {"status": "healthy", "api_version": "62"}),
    )
    async with make_client(server) as sky:
        first_pool = sky._http
        with pytest.raises(ServerCrashError) as crash:
            await sky.health()
        assert crash.value.retryable
        assert sky._http is not first_pool
        assert (await sky.health()).healthy  # the retry (the caller's) gets a fresh pool
    assert server.count("GET", "/api/health") == 2


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
        with pytest.raises(SubmitUnconfirmedError):
            await sky.launch("c1", TASK, idempotency_key="wf-9")
        second = await sky.launch("c1", TASK, idempotency_key="wf-9")
    assert second != first
    assert server.count("POST", "/launch") == 3  # first, the lost one that never landed, the next


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
    server.on("POST /down", raise_(httpx.ConnectError))
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


async def test_lookups_ask_for_no_bodies_except_their_own_candidates(
    server: ScriptedServer, sleeps: list[float]
) -> None:
    """A listing's bodies hold every launch's secrets: listings never ask for request_body; the
    marker lookup fetches by id only the bodies of same-operation requests (issue 8 §6)."""
    async with make_client(server) as sky:
        launch_id = await sky.launch("c1", TASK, idempotency_key="wf-b")
        down_id = await sky.down("c1", idempotency_key="wf-b")
        assert await sky.down("c1", idempotency_key="wf-b") == down_id  # reattached by marker
        records = await sky.find_requests("c1")
        await ApiBackend(sky).cancel_launches("c1")
    listings = [q for q in server.status_queries if not q.get_list("request_ids")]
    assert len(listings) >= 3
    for query in listings:
        assert query.get_list("fields"), "a listing without fields= answers every body"
        assert "request_body" not in query.get_list("fields")
    fetched = {i for q in server.status_queries for i in q.get_list("request_ids")}
    assert fetched == {down_id}  # the down's lookup never read the launch's body
    assert launch_id not in fetched
    assert {r.name for r in records} == {"sky.launch", "sky.down"}
    assert "hf_zzz999" not in repr(records)
