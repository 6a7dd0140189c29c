"""A hook for every SkyPilot call, so metrics can be recorded the same way in API and CLI mode."""

from __future__ import annotations

from typing import Protocol


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
