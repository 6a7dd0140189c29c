"""A scripted SkyPilot API server on an httpx MockTransport: each edge happens when a test says.

Shared by the client's unit tests and the workflow tests that run the real SkyPilot activities.
Like the real 0.14.1 server (contract §4.2), a listing (``/api/status`` without ids) honours
``fields=`` and answers a placeholder for an unasked ``request_body``, while a lookup by
``request_ids`` answers every column, the body included.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import httpx

from devtools.skypilot_sim.contract import EMPTY_PICKLED_VALUE

Action = Callable[[httpx.Request], httpx.Response | None]

_REQUEST_NAMES = {
    "/launch": "sky.launch",
    "/down": "sky.down",
    "/stop": "sky.stop",
    "/status": "sky.status",
    "/endpoints": "sky.endpoints",
    "/api/cancel": "sky.api_cancel",
}


class ScriptedServer:
    """Minimal in-memory API server; ``script`` hooks decide per call what goes wrong."""

    def __init__(self) -> None:
        self.requests: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.seen_headers: list[httpx.Headers] = []
        self.bodies: list[dict[str, Any]] = []
        self.status_queries: list[httpx.QueryParams] = []
        self.script: dict[str, list[Action]] = {}
        self.forever: dict[str, Action] = {}

    def on(self, key: str, *actions: Action) -> None:
        self.script.setdefault(key, []).extend(actions)

    def always(self, key: str, action: Action) -> None:
        """Answer every ``key`` call with ``action`` from now on (a server that never recovers)."""
        self.forever[key] = action

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
        if request.url.path == "/api/status":
            self.status_queries.append(request.url.params)
        actions = self.script.get(key)
        action = self.forever.get(key) or (actions.pop(0) if actions else None)
        if action is not None:
            result = action(request)
            if result is not None:
                return result
        if request.method == "POST" and request.url.path == "/validate":
            return httpx.Response(200, json=None)
        if request.method == "POST":
            request_id = self.store(request, _REQUEST_NAMES[request.url.path])
            return httpx.Response(200, json=None, headers={"X-Skypilot-Request-ID": request_id})
        if request.url.path == "/api/status":
            return self._api_status(request.url.params)
        if request.url.path == "/api/get":
            row = self.requests.get(request.url.params["request_id"])
            if row is None:
                return httpx.Response(404, json={"detail": "not found"})
            return httpx.Response(200, json={**row, "status": "SUCCEEDED", "return_value": "[]"})
        return httpx.Response(404, json={"detail": "Not Found"})

    def _api_status(self, params: httpx.QueryParams) -> httpx.Response:
        ids = params.get_list("request_ids")
        if ids:
            return httpx.Response(
                200, json=[r for r in self.requests.values() if r["request_id"] in ids]
            )
        cluster = params.get("cluster_name")
        fields = params.get_list("fields")
        rows = [
            r for r in self.requests.values() if cluster is None or r["cluster_name"] == cluster
        ]
        rows.sort(key=lambda r: r["created_at"], reverse=True)
        if fields:
            rows = [
                {"request_body": EMPTY_PICKLED_VALUE, **{k: v for k, v in r.items() if k in fields}}
                for r in rows
            ]
        return httpx.Response(200, json=rows)

    def count(self, method: str, path: str) -> int:
        return self.calls.count((method, path))

    def launches_of(self, cluster_name: str) -> int:
        """Launch requests the server holds for a cluster."""
        return sum(
            1
            for r in self.requests.values()
            if r["name"] == "sky.launch" and r["cluster_name"] == cluster_name
        )


def lost_after_storing(server: ScriptedServer, name: str) -> Action:
    def act(request: httpx.Request) -> httpx.Response | None:
        server.store(request, name)
        raise httpx.ReadTimeout("response lost", request=request)

    return act


def raise_(exc_type: type[httpx.TransportError]) -> Action:
    def act(request: httpx.Request) -> httpx.Response | None:
        raise exc_type("boom", request=request)

    return act


def reply(
    status: int,
    body: Any = None,
    *,
    text: str | None = None,
    headers: dict[str, str] | None = None,
) -> Action:
    def act(request: httpx.Request) -> httpx.Response | None:
        if text is not None:
            return httpx.Response(status, text=text, headers={"content-type": "text/plain"})
        return httpx.Response(status, json=body, headers=headers)

    return act


def failed_request(server: ScriptedServer, error_type: str, message: str) -> Action:
    """/api/get of a request that FAILED with SkyPilot exception ``error_type``."""

    def act(request: httpx.Request) -> httpx.Response:
        row = {
            **server.requests[request.url.params["request_id"]],
            "status": "FAILED",
            "error": json.dumps({"object": "x", "type": error_type, "message": message}),
        }
        return httpx.Response(500, json={"detail": row})

    return act
