"""Reading a failure chain from workflow code: what happened, in words and in types.

Temporal wraps an activity's error (ActivityError → ApplicationError / TimeoutError →
...); these helpers walk the ``__cause__`` chain so every workflow reads it the same way.
"""

from __future__ import annotations

from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    is_cancelled_exception,
)
from temporalio.exceptions import TimeoutError as TemporalTimeoutError

from workflows.models import NOTHING_SUBMITTED

# Raised by the launch steps when the launch deadline (SKYPILOT_LAUNCH_TIMEOUT) ran out.
DEADLINE_ERRORS = frozenset({"LaunchTimeout", "ReadinessTimeout"})


def describe(error: BaseException) -> str:
    """A failure chain as one line a person can act on, skipping Temporal's generic wrappers."""
    if is_cancelled_exception(error):
        return "cancelled"
    parts: list[str] = []
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, TemporalTimeoutError):
            parts.append(f"timed out ({current.type.name if current.type else 'timeout'})")
        elif isinstance(current, ActivityError):
            pass  # "Activity task failed" says nothing
        elif str(current) and str(current) not in parts:
            parts.append(str(current))
        current = current.__cause__
    return ": ".join(parts)[:1000] or type(error).__name__


def timed_out(error: BaseException) -> bool:
    """True when the launch deadline, not a SkyPilot error, ended the wait."""
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, TemporalTimeoutError):
            return True
        if isinstance(current, ActivityError) and current.retry_state == RetryState.TIMEOUT:
            return True
        if isinstance(current, ApplicationError) and current.type in DEADLINE_ERRORS:
            return True
        current = current.__cause__
    return False


def nothing_submitted(error: BaseException) -> bool:
    """True when the launch step proved nothing reached SkyPilot (its error's details say so)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError) and NOTHING_SUBMITTED in (cause.details or ()):
            return True
        cause = cause.__cause__
    return False


def failure_type(error: BaseException) -> str | None:
    """The first application error type in the chain (e.g. a SkyPilot error's name), if any."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, ApplicationError) and cause.type:
            return cause.type
        cause = cause.__cause__
    return None
