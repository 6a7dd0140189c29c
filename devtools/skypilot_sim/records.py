"""The simulator's rows (requests, clusters) and their two wire encodings (contract §4.2, §4.3).

``full_payload`` is what ``/api/get`` returns (``Request.encode``), ``readable_payload`` what
``/api/status`` lists (``encode_requests``/``readable_encode``), ``cluster_record`` one entry of
a ``/status`` result (``encode_status``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from devtools.skypilot_sim.contract import (
    EMPTY_PICKLED_VALUE,
    compact_json,
    pickle_b64,
    pickled_function_b64,
)
from devtools.skypilot_sim.exceptions import request_error_json
from devtools.skypilot_sim.payloads import RequestBody
from devtools.skypilot_sim.taskspec import TaskSpec


class RequestStatus(StrEnum):
    PENDING = "PENDING"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.CANCELLED)


class ClusterStatus(StrEnum):
    INIT = "INIT"
    UP = "UP"
    STOPPED = "STOPPED"


class ModelFault(StrEnum):
    """What is wrong with a cluster's model server while the cluster itself stays UP."""

    CRASH = "crash"  # /health answers 503, as a crashed vLLM behind a live proxy would
    HANG = "hang"  # /health never answers


# Request name → (module, function) of the server function that runs it.
ENTRYPOINTS: dict[str, tuple[str, str]] = {
    "sky.launch": ("sky.execution", "launch"),
    "sky.exec": ("sky.execution", "exec"),
    "sky.down": ("sky.core", "user_initiated_down"),
    "sky.stop": ("sky.core", "stop"),
    "sky.start": ("sky.core", "start"),
    "sky.autostop": ("sky.core", "autostop"),
    "sky.status": ("sky.core", "status"),
    "sky.endpoints": ("sky.core", "endpoints"),
    "sky.api_cancel": ("sky.server.requests.requests", "kill_requests"),
}
_DAEMON_ENTRYPOINT = ("sky.server.daemons", "InternalRequestDaemon.run_event")


@dataclass
class Request:
    """One stored request, with the task that runs it and an event set when it finishes."""

    request_id: str
    name: str
    body: RequestBody
    user_id: str
    user_name: str | None
    schedule_type: str = "short"
    cluster_name: str | None = None
    status: RequestStatus = RequestStatus.PENDING
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    pid: int | None = None
    return_value: Any = None
    error: dict[str, Any] | None = None
    status_msg: str | None = None
    should_retry: bool = False
    is_daemon: bool = False
    # Where the client reached the server; /endpoints answers with it.
    server_netloc: str = ""
    done: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    # Undoes a half-finished operation when the request is cancelled (e.g. drop an INIT cluster).
    on_cancel: Callable[[], None] | None = None
    # The request's log (~/.sky/api_server/requests/<id>.log on the real server), line by line.
    log: list[str] = field(default_factory=list)

    def write(self, *lines: str) -> None:
        """Append lines to the request's log (GET /api/stream serves them)."""
        self.log.extend(line.rstrip("\n") + "\n" for line in lines)

    @property
    def entrypoint_name(self) -> str:
        return self.entrypoint_ref[1].rsplit(".", 1)[-1]

    @property
    def entrypoint_ref(self) -> tuple[str, str]:
        return _DAEMON_ENTRYPOINT if self.is_daemon else ENTRYPOINTS[self.name]

    def finish(
        self, status: RequestStatus, *, value: Any = None, error: dict[str, Any] | None = None
    ) -> None:
        self.status = status
        self.return_value = value
        self.error = error
        self.finished_at = time.time()
        self.on_cancel = None
        self.done.set()


def full_payload(request: Request) -> dict[str, Any]:
    """Request.encode(): pickles for entrypoint and body, JSON strings for value and error."""
    module, function = request.entrypoint_ref
    return {
        "request_id": request.request_id,
        "name": request.name,
        "entrypoint": pickled_function_b64(module, function),
        "request_body": pickle_b64(request.body.model_dump(mode="json")),
        "status": request.status.value,
        "created_at": request.created_at,
        "user_id": request.user_id,
        "return_value": compact_json(request.return_value),
        "error": request_error_json(request.error),
        "pid": request.pid,
        "schedule_type": request.schedule_type,
        "user_name": None,
        "cluster_name": request.cluster_name,
        "status_msg": request.status_msg,
        "should_retry": request.should_retry,
        "finished_at": request.finished_at,
        "file_mounts_blob_id": request.body.file_mounts_blob_id,
    }


def readable_payload(
    request: Request,
    fields: list[str] | None = None,
    *,
    by_id: bool = False,
    users: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """encode_requests(): names and JSON instead of pickles; no value, error or pid.

    With ``fields``, the columns not asked for carry the server's placeholder defaults. A lookup
    by id (``readable_encode``) also carries ``file_mounts_blob_id``; a listing does not.
    """
    wanted = set(fields) if fields else None

    def has(column: str) -> bool:
        return wanted is None or column in wanted

    return {
        "request_id": request.request_id if has("request_id") else "",
        "name": request.name if has("name") else "",
        "entrypoint": request.entrypoint_name if has("entrypoint") else "",
        "request_body": request.body.model_dump_json() if has("request_body") else "null",
        "status": request.status.value if has("status") else RequestStatus.PENDING.value,
        "created_at": request.created_at if has("created_at") else 0,
        "user_id": request.user_id if has("user_id") else "",
        "return_value": "null",
        "error": "null",
        "pid": None,
        "schedule_type": request.schedule_type if has("schedule_type") else "short",
        # Looked up at read time in the users table (``users``), which a worker fills in when it
        # first runs one of the user's requests: null until then (contract §13).
        "user_name": (
            (users.get(request.user_id) if users is not None else request.user_name)
            if has("user_id")
            else None
        ),
        "cluster_name": request.cluster_name if has("cluster_name") else None,
        "status_msg": request.status_msg if has("status_msg") else None,
        "should_retry": request.should_retry if has("should_retry") else False,
        "finished_at": request.finished_at if has("finished_at") else None,
        "file_mounts_blob_id": request.body.file_mounts_blob_id if by_id else None,
    }


@dataclass
class Cluster:
    """A simulated cluster. A terminated cluster is not kept: it is simply gone (contract §4.3)."""

    name: str
    spec: TaskSpec
    user_hash: str
    user_name: str
    cluster_hash: str
    status: ClusterStatus = ClusterStatus.INIT
    launched_at: int = field(default_factory=lambda: int(time.time()))
    status_updated_at: int = field(default_factory=lambda: int(time.time()))
    ever_up: bool = False
    # time.monotonic() when the cluster last reached UP; the model endpoint warms up from there.
    up_since: float | None = None
    launch_request_id: str | None = None
    gone_at: float | None = None  # time.time() when it was downed or vanished
    autostop: int = -1
    to_down: bool = False
    jobs: int = 0
    exec_jobs: int = 0  # jobs run by POST /exec: the model server restarted in place
    preempt_timer: asyncio.TimerHandle | None = None
    # Injected by POST /sim/models/{name}/crash|hang; /recover clears it and frees hung calls.
    model_fault: ModelFault | None = None
    model_recovered: asyncio.Event = field(default_factory=asyncio.Event)

    def set_status(self, status: ClusterStatus) -> None:
        self.status = status
        self.status_updated_at = int(time.time())
        if status == ClusterStatus.UP:
            self.ever_up = True
            self.up_since = time.monotonic()
        else:
            self.up_since = None


def _resources_str(cluster: Cluster, *, full: bool) -> str:
    spec = cluster.spec
    accel = spec.accelerators_str if spec.accelerators else None
    instance = "[Spot]sim-instance" if spec.use_spot else "sim-instance"
    parts = [instance]
    if full:
        parts.append(f"cpus={spec.cpus or '8'}, mem={spec.memory or '32'}")
    if accel:
        parts.append(accel)
    if full and spec.ports:
        parts.append(f"ports={[str(p) for p in spec.ports]}")
    return f"{spec.num_nodes}x {spec.cloud}({', '.join(parts)})"


def cluster_record(cluster: Cluster, *, include_credentials: bool) -> dict[str, Any]:
    """encode_status() of one StatusResponse: None-valued optional fields are left out."""
    spec = cluster.spec
    record: dict[str, Any] = {
        "name": cluster.name,
        "launched_at": cluster.launched_at,
        "handle": EMPTY_PICKLED_VALUE,
        "last_use": "",
        "status": cluster.status.value,
        "autostop": cluster.autostop,
        "to_down": cluster.to_down,
        "owner": None,
        "metadata": {},
        "cluster_hash": cluster.cluster_hash,
        "cluster_ever_up": cluster.ever_up,
        "status_updated_at": cluster.status_updated_at,
        "user_hash": cluster.user_hash,
        "user_name": cluster.user_name,
        "workspace": "default",
        "is_managed": False,
    }
    if cluster.status == ClusterStatus.INIT:
        record["init_kind"] = "launching"
    record["resources_str"] = _resources_str(cluster, full=False)
    record["resources_str_full"] = _resources_str(cluster, full=True)
    if include_credentials:
        record["credentials"] = {
            "ssh_user": "sky",
            "ssh_private_key": "-----BEGIN OPENSSH PRIVATE KEY-----\nSIMULATED\n"
            "-----END OPENSSH PRIVATE KEY-----\n",
        }
    record["nodes"] = spec.num_nodes
    record["cloud"] = spec.cloud
    record["region"] = spec.region
    if spec.cpus is not None:
        record["cpus"] = spec.cpus
    if spec.memory is not None:
        record["memory"] = spec.memory
    if spec.accelerators:
        record["accelerators"] = spec.accelerators_str
    record["labels"] = dict(spec.labels)
    record["cluster_name_on_cloud"] = f"{cluster.name}-{cluster.user_hash[:4]}"
    record["storage_mounts_metadata"] = EMPTY_PICKLED_VALUE
    return record
