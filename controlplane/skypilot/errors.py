"""One error taxonomy for every way of talking to SkyPilot (REST API and `sky` CLI).

Callers decide what to do from three properties, never from class checks scattered around:
``retryable`` (contract §11.7), ``not_found`` (contract §11.5) and the SkyPilot ``error_type``.
Messages are ANSI-stripped and never carry request bodies, so they are safe to log.

This module imports nothing but ``re``: workflow code imports its sets (the transient error
types, the permanent teardown errors) so that one definition serves the activities and the
workflows alike.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")

# Request-level error types that mean "try again" (contract §11.7).
TRANSIENT_ERROR_TYPES = frozenset({"ResourcesUnavailableError", "RequestInterruptedError"})

# Request-level error types that mean the thing asked about does not exist (contract §11.5).
NOT_FOUND_ERROR_TYPES = frozenset({"ClusterDoesNotExist", "ClusterNotUpError"})

# HTTP statuses worth another attempt: throttling, gateway trouble and a server that is draining.
RETRYABLE_HTTP_STATUSES = frozenset({408, 429, 502, 503, 504})

# Teardown retries every failure within NODE_CLEANUP_BUDGET except these, which no retry can
# ever fix (docs/reliability.md):
# - InvalidClusterNameError: SkyPilot refuses the name itself, so no cluster of that name can
#   exist and there is nothing to tear down;
# - HTTP 422: the server's schema rejects the body we built; the same body is rejected forever.
# A cluster SkyPilot does not know (ClusterDoesNotExist) is not an error: it is already gone.
PERMANENT_TEARDOWN_ERROR_TYPES = frozenset({"InvalidClusterNameError"})
PERMANENT_TEARDOWN_HTTP_STATUSES = frozenset({422})


def strip_ansi(text: str) -> str:
    """Remove terminal colour codes, which SkyPilot puts in messages (NoCloudAccessError's)."""
    return _ANSI.sub("", text)


class SkyPilotError(Exception):
    """Base of every SkyPilot failure. Safe to log: it holds no secrets and no request bodies."""

    #: Set by a launch that failed before anything was sent (e.g. POST /validate refused the
    #: token): the caller may skip the teardown. False means "may have been sent".
    nothing_submitted: bool = False

    def __init__(
        self,
        message: str,
        *,
        operation: str | None = None,
        error_type: str | None = None,
        http_status: int | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        self.message = strip_ansi(message).strip()
        self.retry_after_s = retry_after_s
        self.operation = operation
        self.error_type = error_type
        self.http_status = http_status
        self.request_id = request_id
        super().__init__(self.message)

    @property
    def retryable(self) -> bool:
        """True when the same call may succeed later without anyone changing anything."""
        if self.error_type is not None:
            return self.error_type in TRANSIENT_ERROR_TYPES
        return self.http_status in RETRYABLE_HTTP_STATUSES

    @property
    def not_found(self) -> bool:
        """True when the cluster or request asked about does not exist."""
        return self.error_type in NOT_FOUND_ERROR_TYPES

    @property
    def permanent_for_teardown(self) -> bool:
        """True only when retrying a down can never help (see PERMANENT_TEARDOWN_ERROR_TYPES).

        Everything else may pass: a 401 until a rotated token reaches the workers, a 404 on
        /api/get after the server lost a request, a RuntimeError inside the server, a `sky`
        that failed once. A teardown keeps trying those until its budget runs out.
        """
        return (
            self.error_type in PERMANENT_TEARDOWN_ERROR_TYPES
            or self.http_status in PERMANENT_TEARDOWN_HTTP_STATUSES
        )

    def __str__(self) -> str:
        parts = [self.message]
        details = []
        if self.operation:
            details.append(f"operation={self.operation}")
        if self.error_type:
            details.append(f"type={self.error_type}")
        if self.http_status is not None:
            details.append(f"http={self.http_status}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        if details:
            parts.append(f"({', '.join(details)})")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class ServerUnreachableError(SkyPilotError):
    """The API server could not be reached (refused, DNS, TLS, timeout before a reply)."""

    @property
    def retryable(self) -> bool:
        return True


class SubmitUnconfirmedError(ServerUnreachableError):
    """A POST may have reached the server, and no lookup proved that it did or did not land.

    Retryable: the next attempt looks the request up by its marker before it sends again.
    """


class APIError(SkyPilotError):
    """The server answered with an HTTP error that is not a failed request."""


class NotFoundError(APIError):
    """An unknown request id (404 from /api/get), or a resource the server does not know."""

    @property
    def not_found(self) -> bool:
        return True


class AuthenticationError(APIError):
    """401 or 403: the token is missing, wrong, expired or lacks permission. Never retried."""

    @property
    def retryable(self) -> bool:
        return False


class VersionMismatchError(APIError):
    """The server refuses this client's API version (400 version_mismatch). Never retried."""

    @property
    def retryable(self) -> bool:
        return False


class ServerCrashError(APIError):
    """A text/plain 500: an exception inside the server's middleware, not a failed request."""

    @property
    def retryable(self) -> bool:
        return True


class RequestFailedError(SkyPilotError):
    """A SkyPilot request ran and FAILED; ``error_type`` is SkyPilot's exception class name."""


class RequestCancelledError(SkyPilotError):
    """A request CANCELLED through /api/cancel (a restart gives RequestInterruptedError instead)."""

    @property
    def retryable(self) -> bool:
        return False


class WaitTimeoutError(SkyPilotError):
    """A request did not finish before the caller's deadline. The request itself may still run."""

    @property
    def retryable(self) -> bool:
        return True


class InvalidTaskError(SkyPilotError):
    """/validate rejected the task, or the task could not be built. Never retried."""

    @property
    def retryable(self) -> bool:
        return False


class CommandError(SkyPilotError):
    """The `sky` CLI could not be run or exited non-zero with an error we could not classify."""


class CommandTimeoutError(CommandError):
    """The `sky` CLI did not finish within its timeout; it was killed."""

    @property
    def retryable(self) -> bool:
        return True
