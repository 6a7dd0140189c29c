"""A loopback HTTP server that records every request the real `sky` CLI sends, and answers enough
of the 0.14.1 contract (/work/shared/skypilot-api.md) for launch, status, down and the `sky api`
commands to run to completion.

It is not a simulator: launches fail with NoCloudAccessError (as on a server without cloud
credentials), `down` finds no cluster, `status` lists none. What matters is the record: each
request's method, path, query, headers and raw body, so a test can look for secrets in all of
them. Requests live in memory only; ``launched`` lists the launch requests it "accepted" and
``/api/status`` reports them as RUNNING until cancelled, so reattach and cancel paths can be
exercised against the real CLI too.
"""

from __future__ import annotations

import base64
import json
import pickle
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

API_VERSION = "62"
VERSION = "0.14.1"
NO_CLOUD = "Cloud access is not set up. Run: \x1b[1msky check\x1b[0m"


def _pickled(value: Any) -> str:
    return base64.b64encode(pickle.dumps(value)).decode()


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def text(self) -> str:
        """Everything the client sent, as one string to search."""
        headers = "\n".join(f"{k}: {v}" for k, v in self.headers.items())
        body = self.body.decode(errors="replace")
        return f"{self.method} {self.path} {self.query}\n{headers}\n{body}"

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


@dataclass
class FakeRequest:
    request_id: str
    name: str
    cluster_name: str | None
    status: str = "RUNNING"
    return_value: Any = None
    error: dict[str, Any] | None = None
    created_at: float = field(default_factory=time.time)


class RecordingSkyServer:
    """Start with ``start()``; ``url`` is its endpoint; ``requests`` is what it received."""

    def __init__(self, *, launches_finish: bool = True) -> None:
        self.requests: list[Recorded] = []
        self.store: dict[str, FakeRequest] = {}
        self.launches_finish = launches_finish
        # Requests that succeed the moment a client follows them (GET /api/stream): a launch
        # that was still running when its first client died, and is reattached to.
        self.finish_when_followed: set[str] = set()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def start(self) -> RecordingSkyServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def posts(self, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    def add_request(self, name: str, cluster_name: str | None, status: str = "RUNNING") -> str:
        request_id = str(uuid.uuid4())
        with self._lock:
            self.store[request_id] = FakeRequest(request_id, name, cluster_name, status)
        return request_id

    def finish(
        self, request_id: str, *, status: str = "SUCCEEDED", return_value: Any = None
    ) -> None:
        """End a request added with ``add_request`` (a launch's result holds no handle here)."""
        with self._lock:
            request = self.store[request_id]
            request.return_value = return_value
            request.status = status

    def launch_result(self) -> dict[str, Any]:
        """A launch's return value: job 1, and a pickled ``None`` for the cluster handle."""
        return {"job_id": 1, "handle": _pickled(None)}

    # --- answers ---------------------------------------------------------------------------
    def _submit(self, name: str, body: dict[str, Any]) -> str:
        cluster = body.get("cluster_name")
        request = FakeRequest(str(uuid.uuid4()), name, cluster, status="SUCCEEDED")
        if name == "sky.launch":
            if self.launches_finish:
                request.status = "FAILED"
                request.error = _error("NoCloudAccessError", NO_CLOUD)
            else:
                request.status = "RUNNING"
        elif name == "sky.down":
            request.status = "FAILED"
            request.error = _error("ClusterDoesNotExist", f"Cluster {cluster!r} does not exist.")
        elif name == "sky.workspaces":
            request.return_value = {}
        elif name not in ("sky.api_cancel",):
            request.return_value = []
        elif name == "sky.api_cancel":
            cancelled = []
            with self._lock:
                for rid in body.get("request_ids") or []:
                    for stored in self.store.values():
                        if stored.request_id.startswith(rid) and stored.status in (
                            "PENDING",
                            "RUNNING",
                        ):
                            stored.status = "CANCELLED"
                            cancelled.append(stored.request_id)
            request.return_value = cancelled
        with self._lock:
            self.store[request.request_id] = request
        return request.request_id

    def _full(self, request: FakeRequest) -> dict[str, Any]:
        return {
            "request_id": request.request_id,
            "name": request.name,
            "entrypoint": _pickled(None),
            "request_body": _pickled(None),
            "status": request.status,
            "created_at": request.created_at,
            "user_id": "c0a7b1e5",
            "return_value": json.dumps(request.return_value),
            "error": json.dumps(request.error),
            "pid": None,
            "schedule_type": "long" if request.name == "sky.launch" else "short",
            "cluster_name": request.cluster_name,
            "status_msg": None,
            "should_retry": False,
            "finished_at": None if request.status in ("PENDING", "RUNNING") else time.time(),
        }

    def _readable(self, request: FakeRequest) -> dict[str, Any]:
        return {**self._full(request), "entrypoint": "", "request_body": "null", "error": "null"}

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the record is the log

            def _record(self) -> Recorded:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                split = urlsplit(self.path)
                recorded = Recorded(
                    self.command, split.path, parse_qs(split.query), dict(self.headers), body
                )
                with owner._lock:
                    owner.requests.append(recorded)
                return recorded

            def _send(
                self,
                status: int,
                payload: Any,
                *,
                headers: dict[str, str] | None = None,
                content_type: str = "application/json",
            ) -> None:
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-SkyPilot-API-Version", API_VERSION)
                self.send_header("X-SkyPilot-Version", VERSION)
                self.send_header("X-Skypilot-Request-ID", str(uuid.uuid4()))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                recorded = self._record()
                body = recorded.json() or {}
                if recorded.path == "/validate":
                    self._send(200, None)
                    return
                names = {
                    "/launch": "sky.launch",
                    "/down": "sky.down",
                    "/stop": "sky.stop",
                    "/status": "sky.status",
                    "/api/cancel": "sky.api_cancel",
                }
                name = names.get(recorded.path, f"sky{recorded.path.replace('/', '.')}")
                self._accepted(owner._submit(name, body))

            def _accepted(self, request_id: str) -> None:
                self.send_response(200)
                data = b"null"
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-SkyPilot-API-Version", API_VERSION)
                self.send_header("X-SkyPilot-Version", VERSION)
                self.send_header("X-Skypilot-Request-ID", request_id)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                recorded = self._record()
                query = {k: v[-1] for k, v in recorded.query.items()}
                if recorded.path == "/api/health":
                    self._send(200, _health())
                elif recorded.path in ("/api/get", "/api/stream"):
                    found = owner._find(query.get("request_id", ""))
                    if found is None:
                        rid = query.get("request_id")
                        self._send(404, {"detail": f"Request {rid!r} not found"})
                    elif recorded.path == "/api/stream":
                        if found.request_id in owner.finish_when_followed:
                            owner.finish(found.request_id, return_value=owner.launch_result())
                        self._wait(found)
                        self._send(
                            200,
                            b"streamed\n",
                            content_type="text/plain",
                            headers={"X-SkyPilot-Stream-Request-ID": found.request_id},
                        )
                    else:
                        self._wait(found)
                        full = owner._full(found)
                        self._send(
                            500 if found.error else 200, {"detail": full} if found.error else full
                        )
                elif recorded.path == "/api/status":
                    self._send(200, owner._listing(recorded.query))
                elif recorded.path == "/users/me/workspace":  # answered directly
                    self._send(200, {"workspace": "default", "preferred": None, "accessible": []})
                elif recorded.path.startswith("/api/"):
                    self._send(404, {"detail": "Not Found"})
                else:  # /workspaces, /enabled_clouds, ...: async requests like the POSTs
                    self._accepted(owner._submit(f"sky{recorded.path.replace('/', '.')}", {}))

            def _wait(self, request: FakeRequest) -> None:
                deadline = time.monotonic() + 30
                while request.status in ("PENDING", "RUNNING") and time.monotonic() < deadline:
                    time.sleep(0.05)

        return Handler

    def _find(self, prefix: str) -> FakeRequest | None:
        with self._lock:
            matches = [r for r in self.store.values() if prefix and r.request_id.startswith(prefix)]
        return matches[0] if len(matches) == 1 else None

    def _listing(self, query: dict[str, list[str]]) -> list[dict[str, Any]]:
        ids = query.get("request_ids", [])
        clusters = query.get("cluster_name")
        cluster = clusters[-1] if clusters else None
        all_status = (query.get("all_status") or ["false"])[-1].lower() == "true"
        with self._lock:
            requests = sorted(self.store.values(), key=lambda r: r.created_at, reverse=True)
        out = []
        for request in requests:
            if ids and not any(request.request_id.startswith(i) for i in ids):
                continue
            if cluster is not None and request.cluster_name != cluster:
                continue
            if not ids and not all_status and request.status not in ("PENDING", "RUNNING"):
                continue
            out.append(self._readable(request))
        return out


def _error(kind: str, message: str) -> dict[str, Any]:
    serialized = {
        "type": kind,
        "message": message,
        "args": (message,),
        "attributes": {},
        "stacktrace": "",
    }
    return {"object": _pickled(serialized), "type": kind, "message": message}


def _health() -> dict[str, Any]:
    return {
        "status": "healthy",
        "api_version": API_VERSION,
        "version": VERSION,
        "version_on_disk": VERSION,
        "commit": "7e595970a806dcc9eefadf459f399edf1733e962",
        "basic_auth_enabled": False,
        "user": None,
        "service_account_token_enabled": True,
        "ingress_basic_auth_enabled": False,
        "latest_version": None,
        "external_proxy_auth_enabled": False,
        "telemetry_enabled": False,
        "restrict_config_to_admins": True,
    }
