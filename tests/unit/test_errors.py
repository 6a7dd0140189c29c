"""The error taxonomy: what is retryable, what is not-found, and what the message says."""

from __future__ import annotations

import json

import httpx
import pytest

from controlplane.skypilot.errors import (
    APIError,
    AuthenticationError,
    NotFoundError,
    RequestFailedError,
    ServerCrashError,
    ServerUnreachableError,
    VersionMismatchError,
    strip_ansi,
)
from controlplane.skypilot.models import ClusterRecord, ClusterStatus, RequestRecord, RequestStatus
from controlplane.skypilot.responses import error_from_response, is_server_crash


def response(
    status: int,
    body: object = None,
    *,
    text: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    if text is not None:
        return httpx.Response(
            status, text=text, headers={"content-type": "text/plain", **(headers or {})}
        )
    return httpx.Response(status, json=body, headers=headers)


@pytest.mark.parametrize(
    ("error_type", "retryable", "not_found"),
    [
        ("ResourcesUnavailableError", True, False),
        ("RequestInterruptedError", True, False),
        ("NoCloudAccessError", False, False),
        ("InvalidSkyPilotConfigError", False, False),
        ("ParserError", False, False),
        ("ValueError", False, False),
        ("InvalidClusterNameError", False, False),
        ("ClusterOwnerIdentityMismatchError", False, False),
        ("PermissionDeniedError", False, False),
        ("ClusterDoesNotExist", False, True),
        ("ClusterNotUpError", False, True),
    ],
)
def test_request_level_classification(error_type: str, retryable: bool, not_found: bool) -> None:
    error = RequestFailedError("x", error_type=error_type)
    assert error.retryable is retryable
    assert error.not_found is not_found


@pytest.mark.parametrize(
    ("resp", "kind", "retryable"),
    [
        (
            response(401, {"detail": "Invalid or expired service account token"}),
            AuthenticationError,
            False,
        ),
        (response(401, "Invalid credentials"), AuthenticationError, False),
        (response(403, {"detail": "Forbidden"}), AuthenticationError, False),
        (
            response(403, {"detail": "The viewer role cannot cancel requests."}),
            AuthenticationError,
            False,
        ),
        (
            response(400, {"error": "version_mismatch", "message": "\x1b[33mtoo old\x1b[0m"}),
            VersionMismatchError,
            False,
        ),
        (response(404, {"detail": "Request 'x' not found"}), NotFoundError, False),
        (
            response(
                422,
                {
                    "detail": [
                        {
                            "type": "missing",
                            "loc": ["body", "task"],
                            "msg": "Field required",
                            "input": {"task_secret": "hunter2-secret"},
                        }
                    ]
                },
            ),
            APIError,
            False,
        ),
        (response(503, {"detail": "shutting down"}, headers={"Retry-After": "7"}), APIError, True),
        (response(429, {"detail": "slow down"}), APIError, True),
        (
            response(500, text="Traceback (most recent call last):\nKeyError: 'SKYPILOT_USER_ID'"),
            ServerCrashError,
            True,
        ),
        (
            response(400, {"detail": "Multiple requests found for request ID prefix: "}),
            APIError,
            False,
        ),
    ],
)
def test_http_classification(resp: httpx.Response, kind: type, retryable: bool) -> None:
    error = error_from_response(resp, "op")
    assert type(error) is kind
    assert error.retryable is retryable
    assert error.http_status == resp.status_code
    assert "\x1b" not in str(error)
    assert "hunter2-secret" not in str(error)


def test_bearer_and_basic_401_bodies_both_read() -> None:
    bearer = error_from_response(
        response(401, {"detail": "Service account token has expired"}), "s"
    )
    basic = error_from_response(response(401, "Authentication required"), "s")
    assert "Service account token has expired" in bearer.message
    assert "Authentication required" in basic.message


def test_retry_after_is_carried() -> None:
    error = error_from_response(
        response(503, {"detail": "busy"}, headers={"Retry-After": "3"}), "s"
    )
    assert error.retry_after_s == 3.0


def test_not_found_on_404_and_422_message_names_field() -> None:
    assert error_from_response(response(404, {"detail": "nope"}), "get").not_found
    error = error_from_response(
        response(
            422, {"detail": [{"type": "missing", "loc": ["body", "task"], "msg": "Field required"}]}
        ),
        "launch",
    )
    assert "body.task: Field required" in error.message


def test_crash_detection_only_for_non_record_500s() -> None:
    record = {"detail": {"request_id": "r", "status": "FAILED", "error": "null"}}
    assert not is_server_crash(response(500, record))
    assert is_server_crash(response(500, text="boom"))
    assert is_server_crash(response(500, {"detail": "Internal Server Error"}))


def test_unreachable_is_retryable_and_ansi_is_stripped() -> None:
    assert ServerUnreachableError("down").retryable
    assert strip_ansi("Run: \x1b[1msky check\x1b[0m") == "Run: sky check"


def test_request_record_decodes_double_json_and_tolerates_unknown_status() -> None:
    error = json.dumps({"object": "b64", "type": "ClusterDoesNotExist", "message": "gone"})
    record = RequestRecord.model_validate(
        {
            "request_id": "r1",
            "name": "sky.down",
            "status": "SOMETHING_NEW",
            "error": error,
            "return_value": '["a"]',
        }
    )
    assert record.status is RequestStatus.UNKNOWN
    assert record.error is not None
    assert record.error.type == "ClusterDoesNotExist"
    assert record.return_value == ["a"]
    waiting = RequestRecord.model_validate({"request_id": "r2", "status": "WAITING"})
    assert waiting.status is RequestStatus.WAITING
    assert not waiting.status.finished


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("UP", ClusterStatus.UP),
        ("AUTOSTOPPING", ClusterStatus.AUTOSTOPPING),
        ("ClusterStatus.INIT", ClusterStatus.INIT),
        ("HIBERNATING", ClusterStatus.UNKNOWN),
    ],
)
def test_cluster_status_is_lenient(raw: str, status: ClusterStatus) -> None:
    assert ClusterRecord.model_validate({"name": "c", "status": raw}).status is status
