"""The SkyPilot REST endpoints the simulator serves (contract §2): submit, get, status, ...

Async POSTs store a request under the id the request-id layer put in the response header and
answer ``null``; the work runs as a task (see state.py, operations.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException, Query
from fastapi import Request as HttpRequest
from fastapi.responses import JSONResponse

from devtools.skypilot_sim import operations
from devtools.skypilot_sim.contract import (
    API_VERSION,
    COMMIT,
    REQUEST_COLUMNS,
    USER_ENV_VAR,
    USER_ID_ENV_VAR,
    VERSION,
)
from devtools.skypilot_sim.delivery import DROP_RESPONSE_KEY
from devtools.skypilot_sim.exceptions import serialize_exception_json
from devtools.skypilot_sim.middleware import (
    auth_user_of,
    client_api_version_of,
    request_id_of,
)
from devtools.skypilot_sim.payloads import (
    AutostopBody,
    EndpointsBody,
    ExecBody,
    LaunchBody,
    RequestBody,
    RequestCancelBody,
    StartBody,
    StatusBody,
    StatusRefreshMode,
    StopOrDownBody,
    ValidateBody,
)
from devtools.skypilot_sim.records import Request, full_payload, readable_payload
from devtools.skypilot_sim.state import EXPECTED_ERRORS, Operation, SimState
from devtools.skypilot_sim.taskspec import parse_task

router = APIRouter()

# Endpoints a viewer may call: they need only read access to the active workspace.
_READ_ONLY = frozenset({"sky.status", "sky.endpoints"})


def sim_state(http: HttpRequest) -> SimState:
    state = http.app.state.sim
    assert isinstance(state, SimState)
    return state


def _submit(
    http: HttpRequest,
    name: str,
    body: RequestBody,
    operation: Operation,
    *,
    long: bool = False,
    cluster_name: str | None = None,
    droppable: bool = False,
) -> None:
    """executor.prepare_request_async + schedule: identity, stamping, storing, starting.

    A ``droppable`` submission may have its response lost (faults ``drop_*``), and its commit
    then delayed by ``late_commit_s``.
    """
    state = sim_state(http)
    if "env_vars" not in body.model_fields_set:
        body.env_vars = state.server_env_vars()
    auth = auth_user_of(http.scope)
    if auth is not None:
        body.env_vars[USER_ID_ENV_VAR] = auth.id
        body.env_vars[USER_ENV_VAR] = auth.name
    # A KeyError here is the real server's crash for env_vars without SKYPILOT_USER_ID.
    user_id = body.env_vars[USER_ID_ENV_VAR]
    body.client_api_version = client_api_version_of(http.scope)
    body.workspace_access = "read" if name in _READ_ONLY else "write"
    request = Request(
        request_id=request_id_of(http.scope),
        name=name,
        body=body,
        user_id=user_id,
        user_name=body.env_vars.get(USER_ENV_VAR),
        schedule_type="long" if long else "short",
        cluster_name=cluster_name,
        server_netloc=http.headers.get("host") or http.url.netloc,
    )
    dropped = droppable and state.take_drop()
    if dropped:
        http.scope[DROP_RESPONSE_KEY] = True
    state.submit(request, operation, commit_after_s=state.faults.late_commit_s if dropped else 0)


@router.post("/launch")
async def launch(http: HttpRequest, body: LaunchBody) -> None:
    _submit(
        http,
        "sky.launch",
        body,
        operations.launch,
        long=True,
        cluster_name=body.cluster_name,
        droppable=True,
    )


@router.post("/exec")
async def exec_task(http: HttpRequest, body: ExecBody) -> None:
    _submit(http, "sky.exec", body, operations.exec_task, long=True, cluster_name=body.cluster_name)


@router.post("/down")
async def down(http: HttpRequest, body: StopOrDownBody) -> None:
    _submit(http, "sky.down", body, operations.down, cluster_name=body.cluster_name, droppable=True)


@router.post("/stop")
async def stop(http: HttpRequest, body: StopOrDownBody) -> None:
    _submit(http, "sky.stop", body, operations.stop, cluster_name=body.cluster_name, droppable=True)


@router.post("/start")
async def start(http: HttpRequest, body: StartBody) -> None:
    _submit(http, "sky.start", body, operations.start, long=True, cluster_name=body.cluster_name)


@router.post("/autostop")
async def autostop(http: HttpRequest, body: AutostopBody) -> None:
    _submit(http, "sky.autostop", body, operations.autostop, cluster_name=body.cluster_name)


@router.post("/status")
async def status(
    http: HttpRequest, body: Annotated[StatusBody, Body(default_factory=StatusBody)]
) -> None:
    long = body.refresh != StatusRefreshMode.NONE
    _submit(http, "sky.status", body, operations.status, long=long)


@router.post("/endpoints")
async def endpoints(http: HttpRequest, body: EndpointsBody) -> None:
    _submit(http, "sky.endpoints", body, operations.endpoints, cluster_name=body.cluster)


@router.post("/api/cancel")
async def api_cancel(http: HttpRequest, body: RequestCancelBody) -> None:
    _submit(http, "sky.api_cancel", body, operations.api_cancel)


@router.post("/validate")
async def validate(body: ValidateBody) -> None:
    """Synchronous task check; not a request. 400 carries the serialized exception."""
    try:
        parse_task(body.dag)
    except EXPECTED_ERRORS as exc:
        raise HTTPException(status_code=400, detail=serialize_exception_json(exc)) from exc


@router.get("/api/health")
async def health(http: HttpRequest) -> dict[str, Any]:
    auth = auth_user_of(http.scope)
    return {
        "status": "healthy",
        "api_version": str(API_VERSION),
        "version": VERSION,
        "version_on_disk": VERSION,
        "commit": COMMIT,
        "basic_auth_enabled": False,
        "user": auth.as_health_user() if auth is not None else None,
        "service_account_token_enabled": bool(sim_state(http).config.service_account_tokens),
        "ingress_basic_auth_enabled": False,
        "latest_version": None,
        "external_proxy_auth_enabled": True,
        "telemetry_enabled": False,
        "restrict_config_to_admins": True,
    }


def expand_request_id(state: SimState, request_id: str) -> Request:
    """get_expanded_request_id: a unique prefix, else 404 or 400 with the server's detail."""
    matches = state.find(request_id)
    if not matches:
        raise HTTPException(status_code=404, detail=f"Request {request_id!r} not found")
    if len(matches) > 1:
        raise HTTPException(
            status_code=400, detail=f"Multiple requests found for request ID prefix: {request_id}"
        )
    return matches[0]


@router.get("/api/get")
async def api_get(http: HttpRequest, request_id: str) -> JSONResponse:
    """Block until the request finishes; a request with an error comes back as a 500."""
    request = expand_request_id(sim_state(http), request_id)
    if not request.is_daemon:  # daemons run forever; the server answers at once
        await request.done.wait()
    payload = full_payload(request)
    if request.error is not None:
        return JSONResponse({"detail": payload}, status_code=500)
    return JSONResponse(payload)


@router.get("/api/status")
async def api_status(
    http: HttpRequest,
    request_ids: Annotated[list[str] | None, Query()] = None,
    all_status: bool = False,
    limit: int | None = None,
    fields: Annotated[list[str] | None, Query()] = None,
    cluster_name: str | None = None,
) -> JSONResponse:
    """Readable request rows, never blocking. By ids: any status, all columns."""
    unknown = [f for f in fields or [] if f not in REQUEST_COLUMNS]
    if unknown:
        raise HTTPException(
            status_code=400,
            detail=f"Unknown request field(s): {unknown}. Valid fields: {REQUEST_COLUMNS}",
        )
    state = sim_state(http)
    if request_ids is not None:
        found = [r for prefix in request_ids for r in state.find(prefix)]
        return JSONResponse([readable_payload(r, by_id=True, users=state.users) for r in found])
    rows = [
        r
        for r in state.requests.values()
        if (all_status or not r.status.finished)
        and (not cluster_name or r.cluster_name == cluster_name)
    ]
    rows.sort(key=lambda r: r.created_at, reverse=True)
    if limit is not None and limit >= 0:
        rows = rows[:limit]
    return JSONResponse([readable_payload(r, fields, users=state.users) for r in rows])
