"""A hook for every SkyPilot call, so metrics can be recorded the same way in API and CLI mode."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Protocol

# True while a retried attempt of the caller's retry owner (a Temporal activity attempt after
# the first) has not yet made a SkyPilot call: its first call is recorded as a retry.
_RETRIED_ATTEMPT: ContextVar[bool] = ContextVar("skypilot_retried_attempt", default=False)


class CallObserver(Protocol):
    def call_finished(self, operation: str, outcome: str, seconds: float) -> None:
        """``outcome`` is "success" or "error"."""

    def call_failed(self, operation: str, error_type: str) -> None: ...

    def call_retried(self, operation: str) -> None: ...


class NullObserver:
    """The default: records nothing."""

    def call_finished(self, operation: str, outcome: str, seconds: float) -> None:
        return None

    def call_failed(self, operation: str, error_type: str) -> None:
        return None

    def call_retried(self, operation: str) -> None:
        return None


@contextlib.contextmanager
def attempt(*, retried: bool) -> Iterator[None]:
    """Run one attempt of a caller that retries SkyPilot calls (an activity) in this context."""
    token = _RETRIED_ATTEMPT.set(retried)
    try:
        yield
    finally:
        _RETRIED_ATTEMPT.reset(token)


def first_call_of_a_retry() -> bool:
    """True for the first SkyPilot call of a retried attempt, and only for it."""
    if not _RETRIED_ATTEMPT.get():
        return False
    _RETRIED_ATTEMPT.set(False)
    return True
