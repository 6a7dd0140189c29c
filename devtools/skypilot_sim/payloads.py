"""Request bodies, mirroring ``sky/server/requests/payloads.py`` field for field and in order.

The order matters: ``/api/status`` shows a request's body as ``model_dump_json()``, and the real
server lists every field with its default. Unknown fields are ignored (``extra='ignore'``), and
FastAPI turns a schema violation into the same 422 the real server sends.
"""

from __future__ import annotations

from contextvars import ContextVar
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

# The env_vars of the server's own user, set for the duration of each HTTP call by the app: a
# body without env_vars belongs to the server's user (contract §3.1).
SERVER_ENV_VARS: ContextVar[dict[str, str] | None] = ContextVar("server_env_vars", default=None)

# What the real server's RequestBody.__init__ fills in when the client leaves a field out.
_SERVER_DEFAULTS: dict[str, Any] = {
    "entrypoint": "",
    "entrypoint_command": "skypilot-sim",
    "using_remote_api_server": False,
    "override_skypilot_config": {},
    "override_skypilot_config_path": None,
}


class StatusRefreshMode(StrEnum):
    NONE = "NONE"
    AUTO = "AUTO"
    FORCE = "FORCE"


class AutostopWaitFor(StrEnum):
    JOBS_AND_SSH = "jobs_and_ssh"
    JOBS = "jobs"
    NONE = "none"


class OptimizeTarget(IntEnum):
    COST = 0
    TIME = 1


class RequestBody(BaseModel):
    """Fields every POST body may carry (contract §3.1)."""

    model_config = ConfigDict(extra="ignore")

    env_vars: dict[str, str] = {}
    entrypoint: str = ""
    entrypoint_command: str = ""
    using_remote_api_server: bool = False
    override_skypilot_config: dict[str, Any] | None = {}
    override_skypilot_config_path: str | None = None
    file_mounts_blob_id: str | None = None
    client_api_version: int | None = None
    workspace_access: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_server_defaults(cls, data: Any) -> Any:
        # The real server fills these in before validating (in this order, after the client's
        # own keys), so its 422s echo them as ``input``.
        if not isinstance(data, dict):
            return data
        filled = dict(data)
        server_env = SERVER_ENV_VARS.get()
        if "env_vars" not in filled and server_env is not None:
            filled["env_vars"] = dict(server_env)
        for key, value in _SERVER_DEFAULTS.items():
            filled.setdefault(key, value)
        return filled


class ExecBody(RequestBody):
    """sky/server/requests/payloads.py ExecBody (0.14.1): a task run on an existing cluster."""

    task: str
    cluster_name: str
    dryrun: bool = False
    down: bool = False
    backend: str | None = None


class LaunchBody(RequestBody):
    task: str
    cluster_name: str
    retry_until_up: bool = False
    idle_minutes_to_autostop: int | None = None
    dryrun: bool = False
    down: bool = False
    backend: str | None = None
    optimize_target: OptimizeTarget = OptimizeTarget.COST
    no_setup: bool = False
    clone_disk_from: str | None = None
    fast: bool = False
    quiet_optimizer: bool = False
    is_launched_by_jobs_controller: bool = False
    is_launched_by_sky_serve_controller: bool = False
    disable_controller_check: bool = False
    resize: bool = False
    extra_launch_context: dict[str, Any] = {}
    include_credentials: bool = False


class StopOrDownBody(RequestBody):
    cluster_name: str
    purge: bool = False
    graceful: bool = False
    graceful_timeout: int | None = None


class StartBody(RequestBody):
    cluster_name: str
    idle_minutes_to_autostop: int | None = None
    wait_for: AutostopWaitFor | None = None
    retry_until_up: bool = False
    down: bool = False
    force: bool = False


class AutostopBody(RequestBody):
    cluster_name: str
    idle_minutes: int
    wait_for: AutostopWaitFor | None = None
    down: bool = False
    hook: str | None = None
    hook_timeout: int | None = None


class StatusBody(RequestBody):
    cluster_names: list[str] | None = None
    refresh: StatusRefreshMode = StatusRefreshMode.NONE
    all_users: bool = True
    include_credentials: bool = True
    summary_response: bool = False
    include_handle: bool = True


class EndpointsBody(RequestBody):
    cluster: str
    port: int | str | None = None


class RequestCancelBody(RequestBody):
    request_ids: list[str] | None = None
    user_id: str | None = None


class ValidateBody(RequestBody):
    dag: str
    # Optional but required, as in the real model: the SDK always sends it, null or an object.
    request_options: dict[str, Any] | None
