"""Typed views of what the SkyPilot API server returns (contract §4, §5).

The server adds enum values over time, so enums parse leniently: an unknown value becomes
``UNKNOWN`` and the raw string is kept, instead of failing a whole response.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class RequestStatus(StrEnum):
    PENDING = "PENDING"
    WAITING = "WAITING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: object) -> RequestStatus:
        try:
            return cls(str(value).upper())
        except ValueError:
            return cls.UNKNOWN

    @property
    def finished(self) -> bool:
        return self in (RequestStatus.SUCCEEDED, RequestStatus.FAILED, RequestStatus.CANCELLED)


class ClusterStatus(StrEnum):
    INIT = "INIT"
    UP = "UP"
    STOPPED = "STOPPED"
    AUTOSTOPPING = "AUTOSTOPPING"
    PENDING = "PENDING"
    # Not a SkyPilot value: a cluster missing from /status is terminated (contract §4.3).
    TERMINATED = "TERMINATED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, value: object) -> ClusterStatus:
        try:
            return cls(str(value).upper())
        except ValueError:
            return cls.UNKNOWN


class RequestError(BaseModel):
    """The usable part of a failed request's ``error``: its class name and message."""

    type: str
    message: str


def decode_json_string(value: Any) -> Any:
    """/api/get JSON-encodes ``return_value`` and ``error`` a second time (contract §4.2)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


class RequestRecord(BaseModel):
    """One SkyPilot request, from /api/get (full form) or /api/status (readable form)."""

    model_config = ConfigDict(extra="ignore")

    request_id: str
    name: str = ""
    status_raw: str = Field(default="UNKNOWN", alias="status")
    cluster_name: str | None = None
    created_at: float | None = None
    finished_at: float | None = None
    status_msg: str | None = None
    user_id: str | None = None
    should_retry: bool | None = None
    return_value: Any = None
    error: RequestError | None = None
    # The submission marker (contract §3.1), the one thing read from a request body. The body
    # itself is never kept: a launch's holds the task YAML with its secrets.
    entrypoint_command: str | None = Field(default=None, alias="request_body")

    @property
    def status(self) -> RequestStatus:
        return RequestStatus.parse(self.status_raw)

    @field_validator("return_value", mode="before")
    @classmethod
    def _decode_return_value(cls, value: Any) -> Any:
        return decode_json_string(value)

    @field_validator("error", mode="before")
    @classmethod
    def _decode_error(cls, value: Any) -> Any:
        value = decode_json_string(value)
        if not isinstance(value, dict):
            return None
        return {
            "type": str(value.get("type") or "UnknownError"),
            "message": str(value.get("message") or ""),
        }

    @field_validator("entrypoint_command", mode="before")
    @classmethod
    def _marker_of_body(cls, value: Any) -> Any:
        # Readable form: a JSON string. Full form: a pickle, which we never open.
        decoded = decode_json_string(value)
        marker = decoded.get("entrypoint_command") if isinstance(decoded, dict) else None
        return marker if isinstance(marker, str) else None


class ClusterRecord(BaseModel):
    """One entry of the /status result (contract §4.3). Only fields an orchestrator uses."""

    model_config = ConfigDict(extra="ignore")

    name: str
    status_raw: str = Field(default="UNKNOWN", alias="status")
    launched_at: int | None = None
    autostop: int | None = None
    to_down: bool | None = None
    cloud: str | None = None
    region: str | None = None
    accelerators: str | None = None
    resources_str: str | None = None
    workspace: str | None = None
    user_hash: str | None = None
    user_name: str | None = None
    init_kind: str | None = None

    @field_validator("status_raw", mode="before")
    @classmethod
    def _status_to_str(cls, value: Any) -> str:
        # The CLI's JSON may print the enum as "ClusterStatus.UP"; keep the member name.
        text = str(value)
        return text.rsplit(".", 1)[-1]

    @property
    def status(self) -> ClusterStatus:
        return ClusterStatus.parse(self.status_raw)


class HealthInfo(BaseModel):
    """/api/health without its ``user`` object, which can carry a password hash (contract §4.4)."""

    model_config = ConfigDict(extra="ignore")

    status: str
    api_version: str | None = None
    version: str | None = None
    commit: str | None = None
    basic_auth_enabled: bool | None = None
    service_account_token_enabled: bool | None = None
    user_id: str | None = None  # the authenticated caller's id (``user.id``): clusters' user_hash

    @model_validator(mode="before")
    @classmethod
    def _only_the_user_id(cls, data: Any) -> Any:
        # Keep ``user.id`` and drop the rest of ``user`` (a basic-auth user's password hash).
        if isinstance(data, dict) and isinstance(data.get("user"), dict):
            data = {**data, "user_id": data["user"].get("id")}
        return data

    @field_validator("api_version", mode="before")
    @classmethod
    def _api_version_to_str(cls, value: Any) -> Any:
        return None if value is None else str(value)

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


class TerminateResult(BaseModel):
    """What a down achieved: ``already_gone`` when SkyPilot said the cluster did not exist."""

    cluster_name: str
    request_id: str | None = None
    already_gone: bool = False
