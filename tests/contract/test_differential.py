"""Every route and shape of the contract's tables, against the simulator and the real 0.14.1
server in one session, compared as normalized shapes (tests/contract/shapes.py).

A difference fails the test unless docs/skypilot-contract-notes.md lists it, with its reason, in
its table of known differences (``| probe | where | reason |``). A listed difference that no
longer occurs fails too, so the notes stay true.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.contract.conftest import Backend, _selected
from tests.contract.shapes import differences, shape

NOTES = Path(__file__).resolve().parents[2] / "docs" / "skypilot-contract-notes.md"
VERSION = {"X-SkyPilot-API-Version": "62", "X-SkyPilot-Version": "0.14.1"}
USER = {"SKYPILOT_USER_ID": "orch0001", "SKYPILOT_USER": "orchestrator"}
CPU_TASK = "name: probe\nresources:\n  cpus: 1+\nrun: echo hi\n"

Shapes = dict[str, dict[str, Any]]
Probe = Callable[[httpx.AsyncClient, Backend], Awaitable[Shapes]]
PROBES: dict[str, Probe] = {}


def probe(name: str) -> Callable[[Probe], Probe]:
    def register(fn: Probe) -> Probe:
        PROBES[name] = fn
        return fn

    return register


async def submit_and_get(http: httpx.AsyncClient, path: str, body: dict[str, Any] | None) -> Shapes:
    submitted = await http.post(path, json=body)
    out = {"submit": shape(submitted)}
    request_id = submitted.headers.get("x-skypilot-request-id")
    if submitted.status_code == 200 and request_id:
        out["get"] = shape(await http.get("/api/get", params={"request_id": request_id}))
    return out


def submit_probe(name: str, path: str, body: dict[str, Any]) -> None:
    """Register probe ``name``: submit ``body`` to ``path``, then get the request's result."""

    async def run(http: httpx.AsyncClient, backend: Backend) -> Shapes:
        return await submit_and_get(http, path, body)

    PROBES[name] = run


# --- §2 endpoint table --------------------------------------------------------------------------
@probe("health")
async def _health(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    return {
        "versioned": shape(await http.get("/api/health")),
        "unversioned": shape(await http.get("/api/health", headers={k: "" for k in VERSION})),
    }


@probe("launch")
async def _launch(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    backend.arrange_no_cloud_launch()  # the real server has no cloud: both fail the same way
    body = {"task": CPU_TASK, "cluster_name": f"probe-{uuid.uuid4().hex[:6]}", "env_vars": USER}
    submitted = await http.post("/launch", json=body)
    request_id = submitted.headers["x-skypilot-request-id"]
    listed = await http.get("/api/status", params={"request_ids": request_id})
    streamed = await http.get(
        "/api/stream", params={"request_id": request_id, "format": "plain", "follow": "true"}
    )
    result = await http.get("/api/get", params={"request_id": request_id})
    api_status = shape(listed)
    # Listed right after the submit, the request is in flight: PENDING or already RUNNING, by
    # timing on either server (the real one under load answered RUNNING), never finished.
    in_flight = api_status["values"].get("[].status")
    assert in_flight in ("PENDING", "RUNNING"), in_flight
    api_status["values"]["[].status"] = "PENDING or RUNNING"
    out = {
        "submit": shape(submitted),
        "api_status": api_status,
        "stream": shape(streamed),
        "get": shape(result),
    }
    # The error is never in the log, only in /api/get (contract §10).
    out["stream"]["error_in_log"] = "NoCloudAccessError" in streamed.text
    return out


submit_probe("down", "/down", {"cluster_name": "no-such-c", "env_vars": USER})
submit_probe("stop", "/stop", {"cluster_name": "no-such-c", "env_vars": USER})


@probe("status")
async def _status(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    body = {"cluster_names": ["no-such-c"], "include_credentials": False, "env_vars": USER}
    out = await submit_and_get(http, "/status", body)
    # All clusters: the simulator may hold clusters other tests launched (a launch succeeds only
    # there), so only the request's outcome is compared, not the list.
    empty = await http.post("/status", json={})
    out["empty.submit"] = shape(empty)
    got = await http.get("/api/get", params={"request_id": empty.headers["x-skypilot-request-id"]})
    out["empty.get"] = {"status": got.status_code, "request": got.json()["status"]}
    out["no_body"] = shape(await http.post("/status"))
    return out


submit_probe("start", "/start", {"cluster_name": "no-such-c", "env_vars": USER})
submit_probe(
    "autostop", "/autostop", {"cluster_name": "no-such-c", "idle_minutes": 10, "env_vars": USER}
)
submit_probe("endpoints", "/endpoints", {"cluster": "no-such-c", "env_vars": USER})


@probe("validate")
async def _validate(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    good = {"dag": CPU_TASK, "request_options": None, "env_vars": USER}
    bad = {"dag": CPU_TASK.replace("1+", "lots"), "request_options": None, "env_vars": USER}
    unknown_key = {"dag": CPU_TASK + "bogus_key: 1\n", "request_options": None, "env_vars": USER}
    return {
        "good": shape(await http.post("/validate", json=good)),
        "bad": shape(await http.post("/validate", json=bad)),
        "unknown_key": shape(await http.post("/validate", json=unknown_key)),
    }


@probe("api_get")
async def _api_get(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    return {
        "unknown": shape(await http.get("/api/get", params={"request_id": str(uuid.uuid4())})),
        "missing": shape(await http.get("/api/get")),
        "empty": shape(await http.get("/api/get", params={"request_id": ""})),
    }


@probe("api_status")
async def _api_status(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    unknown = await http.get("/api/status", params={"request_ids": str(uuid.uuid4())})
    active = await http.get("/api/status")
    daemons = sorted({row["name"] for row in active.json() if row["user_id"] == "skypilot-system"})
    return {
        "unknown": shape(unknown),
        "bad_field": shape(await http.get("/api/status", params={"fields": "nope"})),
        "active": {"status": active.status_code, "daemons": daemons},
    }


@probe("api_cancel")
async def _api_cancel(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    body = {"request_ids": [str(uuid.uuid4())], "env_vars": USER}
    return await submit_and_get(http, "/api/cancel", body)


@probe("api_stream")
async def _api_stream(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    params = {"format": "plain"}
    status = await http.post("/status", json={"env_vars": USER})
    request_id = status.headers["x-skypilot-request-id"]
    await http.get("/api/get", params={"request_id": request_id})
    return {
        "unknown": shape(
            await http.get("/api/stream", params={**params, "request_id": str(uuid.uuid4())})
        ),
        "both": shape(
            await http.get("/api/stream", params={**params, "request_id": "a", "log_path": "b"})
        ),
        "bad_format": shape(
            await http.get("/api/stream", params={"request_id": request_id, "format": "pdf"})
        ),
        "finished_tail": shape(
            await http.get(
                "/api/stream",
                params={**params, "request_id": request_id, "tail": "5", "follow": "false"},
            )
        ),
    }


# --- §2 unknown routes, §9 error table, §6 auth -----------------------------------------------
@probe("routing")
async def _routing(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    return {
        "unknown_path": shape(await http.get("/no-such-route")),
        "wrong_method": shape(await http.get("/launch")),
    }


@probe("schema_errors")
async def _schema_errors(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    return {
        "launch_without_task": shape(
            await http.post("/launch", json={"cluster_name": "c", "env_vars": USER})
        ),
        "bad_refresh": shape(
            await http.post("/status", json={"refresh": "SOMETIMES", "env_vars": USER})
        ),
        "malformed_json": shape(
            await http.post(
                "/launch", content=b"{not json", headers={"content-type": "application/json"}
            )
        ),
        "endpoints_without_cluster": shape(await http.post("/endpoints", json={"env_vars": USER})),
    }


@probe("crashes")
async def _crashes(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    body = {"task": CPU_TASK, "cluster_name": "c", "env_vars": {"OTHER": "x"}}
    out = {"env_without_user": shape(await http.post("/launch", json=body))}
    async with httpx.AsyncClient(base_url=backend.url, timeout=30) as fresh:
        bad_version = {"X-SkyPilot-API-Version": "abc", "X-SkyPilot-Version": "0.14.1"}
        out["bad_version_header"] = shape(await fresh.get("/api/health", headers=bad_version))
    async with httpx.AsyncClient(base_url=backend.url, timeout=30) as fresh:
        old = {"X-SkyPilot-API-Version": "10", "X-SkyPilot-Version": "0.9.0"}
        out["old_client"] = shape(await fresh.get("/api/health", headers=old))
    return out


@probe("auth")
async def _auth(http: httpx.AsyncClient, backend: Backend) -> Shapes:
    invalid = {"Authorization": "Bearer sky_not-a-real-token"}
    return {
        "invalid_token": shape(await http.post("/status", json={}, headers=invalid)),
        "invalid_token_health": shape(await http.get("/api/health", headers=invalid)),
        "non_sky_bearer": shape(
            await http.post("/status", json={}, headers={"Authorization": "Bearer abc"})
        ),
        "forced_token_mode": shape(
            await http.post("/status", json={}, headers={"X-Skypilot-Auth-Mode": "token"})
        ),
    }


async def observe(backend: Backend) -> dict[str, Shapes]:
    """Run every probe against one backend, each on a connection of its own."""
    out: dict[str, Shapes] = {}
    for name, run in PROBES.items():
        async with httpx.AsyncClient(base_url=backend.url, headers=VERSION, timeout=60) as http:
            out[name] = await run(http, backend)
    return out


def known_differences() -> dict[str, str]:
    """``probe.step.path`` prefix → reason, from the notes' table of known differences."""
    known: dict[str, str] = {}
    for line in NOTES.read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[0].startswith("`") and cells[1].startswith("`"):
            known[f"{cells[0].strip('`')}.{cells[1].strip('`')}"] = cells[2]
    return known


def test_the_notes_list_their_differences() -> None:
    assert "## Known differences" in NOTES.read_text()
    known = known_differences()
    for where, reason in known.items():
        assert len(reason) > 20, f"{where}: say why in {NOTES.name}"
        assert where.split(".", 1)[0] in PROBES, f"{where}: no such probe"


async def test_simulator_and_real_server_answer_alike(
    sim_backend: Backend, request: pytest.FixtureRequest
) -> None:
    if "real" not in _selected():
        pytest.skip("the differential test needs the real server (CONTRACT_BACKENDS)")
    real_backend: Backend = request.getfixturevalue("real_backend")
    real, sim = await asyncio.gather(observe(real_backend), observe(sim_backend))
    found = [
        line.split(": ", 1)
        for line in differences(real, sim)  # left: real, right: simulator
    ]
    known = known_differences()
    unexplained = [
        f"{where}: {what}"
        for where, what in found
        if not any(where.startswith(prefix) for prefix in known)
    ]
    stale = [prefix for prefix in known if not any(w.startswith(prefix) for w, _ in found)]
    assert not unexplained, "real != simulator:\n" + "\n".join(unexplained)
    assert not stale, f"listed in {NOTES.name} but no longer different: {stale}"


def test_every_contract_route_has_a_probe() -> None:
    """Each path of the contract's endpoint table is exercised above."""
    contract = Path("/work/shared/skypilot-api.md")
    text = contract.read_text() if contract.exists() else ""
    table = text.split("## 2. Endpoint table", 1)[-1].split("## 3.", 1)[0]
    rows = "\n".join(line for line in table.splitlines() if line.startswith("|"))
    paths = set(re.findall(r"`(?:GET|POST) (/[a-z_/]+)", rows))
    probed = {
        "/api/health": "health",
        "/launch": "launch",
        "/down": "down",
        "/stop": "stop",
        "/status": "status",
        "/start": "start",
        "/autostop": "autostop",
        "/validate": "validate",
        "/api/get": "api_get",
        "/api/status": "api_status",
        "/api/cancel": "api_cancel",
        "/api/stream": "api_stream",
    }
    if not paths:
        pytest.skip("the shared contract is not on this machine")
    assert paths <= set(probed), paths - set(probed)
    assert set(probed.values()) <= set(PROBES)
