"""Library errors as Temporal errors: permanent ones stop retries, with an actionable message."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import ParamSpec, TypeVar

from temporalio.exceptions import ApplicationError

from controlplane.skypilot.errors import SkyPilotError

P = ParamSpec("P")
T = TypeVar("T")


def skypilot_application_error(
    exc: SkyPilotError, *details: str, non_retryable: bool | None = None
) -> ApplicationError:
    """Keep SkyPilot's error type as the Temporal type, so retry policies and callers can see it.

    Retryable unless ``exc`` says otherwise (or ``non_retryable`` overrides it); a retryable one
    is retried by the activity's retry policy, the one owner of retries of a call that may have
    reached the server.
    """
    delay = timedelta(seconds=exc.retry_after_s) if exc.retry_after_s else None
    return ApplicationError(
        str(exc),
        *details,
        type=exc.error_type or type(exc).__name__,
        non_retryable=not exc.retryable if non_retryable is None else non_retryable,
        next_retry_delay=delay,
    )


def teardown_application_error(exc: SkyPilotError) -> ApplicationError:
    """A failed down: retried within the cleanup budget unless no retry can ever fix it."""
    return skypilot_application_error(exc, non_retryable=exc.permanent_for_teardown)


def permanent(message: str, type_: str) -> ApplicationError:
    return ApplicationError(message, type=type_, non_retryable=True)


def translate_errors(
    func: Callable[P, Awaitable[T]],
) -> Callable[P, Awaitable[T]]:
    """Raise library failures as ApplicationErrors with the right retryability."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await func(*args, **kwargs)
        except SkyPilotError as exc:
            raise skypilot_application_error(exc) from None

    return wrapper
