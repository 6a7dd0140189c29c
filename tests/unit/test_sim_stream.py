"""The simulator's GET /api/stream, as the real 0.14.1 server serves it (contract §2, §9, §10),
and the client and API backend that read it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from controlplane.skypilot.backend import ApiBackend
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.errors import NotFoundError
from controlplane.skypilot.task import SkyTask
from devtools.skypilot_sim import SimConfig, SimulatorServer
from tests.unit import test_simulator
from tests.unit.test_simulator import USER, launch, wait_until

STREAM_HEADERS = {
    "content-type": "text/plain; charset=utf-8",
    "cache-control": "no-cache, no-transform",
    "x-accel-buffering": "no",
    "transfer-encoding": "chunked",
}


@pytest.fixture(scope="module")
def server() -> Iterator[SimulatorServer]:
    config = SimConfig(port=0, launch_delay_s=0.4, status_delay_s=0.02, long_workers=1)
    with SimulatorServer(config) as sim:
        yield sim


http = test_simulator.http  # the same client fixture, on this module's ``server``


def stream(http: httpx.Client, **params: str | int) -> httpx.Response:
    return http.get("/api/stream", params={"format": "plain", **params})


def test_a_launch_log_streams_until_the_request_ends(http: httpx.Client) -> None:
    request_id = launch(http, "s1")
    response = stream(http, request_id=request_id, follow="true")
    assert response.status_code == 200
    for name, value in STREAM_HEADERS.items():
        assert response.headers[name] == value, name
    assert response.headers["x-skypilot-stream-request-id"] == request_id
    lines = [line.strip() for line in response.text.splitlines() if line.strip()]
    assert lines[0] == f"Waiting for 'sky.launch' request to be scheduled: {request_id}"
    assert "⚙︎ Launching on AWS us-east-1 (us-east-1a) (A100:1)." in lines
    assert lines[-1] == "⚙︎ Job submitted, ID: 1"
    # The stream ended because the request did: it has succeeded by now.
    assert http.get("/api/get", params={"request_id": request_id}).status_code == 200


def test_the_waiting_line_is_padded_as_the_real_server_pads_it(http: httpx.Client) -> None:
    first = launch(http, "s2")
    queued = launch(http, "s3")  # one LONG worker: this one stays PENDING for a while
    response = stream(http, request_id=queued, follow="false")
    assert response.text == (
        f"Waiting for 'sky.launch' request to be scheduled: {queued}" + " " * 4096 + "\n"
    )
    http.get("/api/get", params={"request_id": first})


def test_tail_and_follow_false_give_the_end_of_the_log_now(http: httpx.Client) -> None:
    request_id = launch(http, "s4")
    http.get("/api/get", params={"request_id": request_id})
    response = stream(http, request_id=request_id, tail=2, follow="false")
    assert response.text.splitlines() == [
        "✓ Setup completed.  View logs: sky logs --setup s4",
        "⚙︎ Job submitted, ID: 1",
    ]
    assert stream(http, request_id=request_id, tail=0, follow="false").text == ""
    # A unique prefix works, and the header echoes what the caller sent.
    prefixed = stream(http, request_id=request_id[:8], follow="false")
    assert prefixed.headers["x-skypilot-stream-request-id"] == request_id[:8]
    assert "Job submitted" in prefixed.text


def test_console_format_sends_the_spinner_payloads_while_queued(http: httpx.Client) -> None:
    first = launch(http, "s5")
    queued = launch(http, "s6")
    response = http.get(
        "/api/stream", params={"request_id": queued, "format": "console", "follow": "false"}
    )
    assert response.text.startswith('<sky-payload>"<rich_init>[dim]Checking request: ')
    assert "<rich_update>[dim]Waiting for 'sky.launch' request to be scheduled" in response.text
    http.get("/api/get", params={"request_id": first})


def test_a_cancelled_request_ends_its_stream_with_the_servers_line(
    http: httpx.Client, server: SimulatorServer
) -> None:
    request_id = launch(http, "s7")
    wait_until(lambda: "s7" in server.counters()["live_clusters"])
    http.post("/api/cancel", json={"request_ids": [request_id], "env_vars": USER})
    wait_until(
        lambda: (
            http.get("/api/status", params={"request_ids": request_id}).json()[0]["status"]
            == "CANCELLED"
        )
    )
    text = stream(http, request_id=request_id, follow="false").text
    assert text.endswith(f"'sky.launch' request {request_id} cancelled\n")


def test_unknown_ids_and_bad_parameters_get_the_servers_errors(http: httpx.Client) -> None:
    unknown = stream(http, request_id="2bee5e6a-ec33-42f9-ae9a-03695192f38e")
    assert unknown.status_code == 404
    assert unknown.json() == {"detail": "Request '2bee5e6a-ec33-42f9-ae9a-03695192f38e' not found"}
    both = stream(http, request_id="x", log_path="y")
    assert both.status_code == 400
    assert both.json() == {"detail": "Only one of request_id and log_path can be provided"}
    assert stream(http, request_id="x", format="pdf").status_code == 422
    browser = http.get(
        "/api/stream", params={"request_id": "x"}, headers={"User-Agent": "Mozilla/5.0"}
    )
    assert browser.status_code == 404  # the id is checked before the format is chosen


async def test_client_and_backend_read_the_log_while_waiting(server: SimulatorServer) -> None:
    task = SkyTask(name="t", document={"name": "t", "resources": {"cpus": "1+"}, "run": "echo"})
    async with SkyPilotClient(server.url) as client:
        with pytest.raises(NotFoundError):
            async for _ in client.stream_log("2bee5e6a-ec33-42f9-ae9a-03695192f38e"):
                pass
        request_id = await client.launch("s8", task)
        lines: list[str] = []
        await ApiBackend(client).wait_launched("s8", request_id, 30, on_line=lines.append)
    assert lines[-1] == "⚙︎ Job submitted, ID: 1"
    assert any(line.startswith("⚙︎ Running setup") for line in lines)
    assert all(line == line.strip() and line for line in lines)
