"""Turn SkyPilot HTTP error responses into the error taxonomy (contract §6, §7, §9, §11).

Bodies are summarised, never echoed: a 422 echoes the request body back (`input`), and that
body can hold a task's secrets.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from controlplane.skypilot.errors import (
    APIError,
    AuthenticationError,
    NotFoundError,
    ServerCrashError,
    SkyPilotError,
    VersionMismatchError,
)
from controlplane.skypilot.retry import parse_retry_after

REQUEST_ID_HEADER = "X-Skypilot-Request-ID"
_MAX_MESSAGE = 500


def _json(response: httpx.Response) -> Any:
    if "json" not in response.headers.get("content-type", ""):
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _summarise_422(detail: list[Any]) -> str:
    parts = []
    for item in detail[:5]:
        if isinstance(item, dict):
            loc = ".".join(str(p) for p in item.get("loc", []))
            parts.append(f"{loc}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "request body rejected by the server schema"


def _detail_message(body: Any) -> str:
    if isinstance(body, str):
        return body  # Basic-auth 401s are a bare JSON string (contract §6)
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, dict) and "message" in detail:
            return str(detail.get("message"))
        if "message" in body:
            return str(body["message"])
    return ""


def is_server_crash(response: httpx.Response) -> bool:
    """A 500 whose body is not a JSON request record: an exception in the server's middleware."""
    if response.status_code != 500:
        return False
    body = _json(response)
    return not (isinstance(body, dict) and isinstance(body.get("detail"), dict))


def error_from_response(response: httpx.Response, operation: str) -> SkyPilotError:
    """The taxonomy error for a non-2xx response that is not a failed-request record."""
    status = response.status_code
    body = _json(response)
    common: dict[str, Any] = {"operation": operation, "http_status": status}
    if status in (401, 403):
        message = _detail_message(body) or response.reason_phrase
        hint = "check SKYPILOT_SERVICE_ACCOUNT_TOKEN" if status == 401 else "permission denied"
        return AuthenticationError(
            f"SkyPilot API server refused the call: {message} ({hint})", **common
        )
    if status == 400 and isinstance(body, dict) and body.get("error") == "version_mismatch":
        return VersionMismatchError(
            f"SkyPilot API server rejected this client's version: {body.get('message', '')}",
            error_type="version_mismatch",
            **common,
        )
    if status == 404:
        return NotFoundError(_detail_message(body) or "not found", **common)
    if status == 422 and isinstance(body, dict) and isinstance(body.get("detail"), list):
        summary = _summarise_422(body["detail"])
        return APIError(f"SkyPilot rejected the request: {summary}", **common)
    if is_server_crash(response):
        lines = [ln for ln in response.text.strip().splitlines() if ln.strip()]
        last = lines[-1][:_MAX_MESSAGE] if lines else "no body"
        return ServerCrashError(f"SkyPilot API server crashed handling the call: {last}", **common)
    message = _detail_message(body) or response.text[:_MAX_MESSAGE] or response.reason_phrase
    return APIError(
        f"SkyPilot API server answered {status}: {message[:_MAX_MESSAGE]}",
        retry_after_s=parse_retry_after(response.headers.get("Retry-After")),
        **common,
    )


def decode_json_body(response: httpx.Response) -> Any:
    """The JSON body of a successful response, or ``None`` for SkyPilot's ``null``."""
    if not response.content:
        return None
    try:
        return json.loads(response.content)
    except ValueError as exc:
        raise APIError(
            f"SkyPilot API server sent a body that is not JSON ({len(response.content)} bytes)",
            http_status=response.status_code,
        ) from exc
