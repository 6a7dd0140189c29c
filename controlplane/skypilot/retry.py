"""Backoff of the client's own retries: exponential, capped at 10x, honouring Retry-After.

The client retries only failures that never left the machine (connect errors, the pool's own
timeouts); Temporal's activity retry policy, built from the same SKYPILOT_MAX_RETRIES and
SKYPILOT_RETRY_BACKOFF, retries everything that may have reached the server.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from controlplane.backoff import exponential_backoff

MAX_RETRY_AFTER_S = 600.0


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` further connection attempts after the first (SKYPILOT_MAX_RETRIES)."""

    max_retries: int = 3
    backoff_s: float = 5.0  # SKYPILOT_RETRY_BACKOFF
    max_factor: float = 10.0  # the guide's RetryMaxDelay = RetryBackoff * 10
    jitter: float = 0.1

    @property
    def max_delay_s(self) -> float:
        return self.backoff_s * self.max_factor

    def delay(self, retry_number: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1-based)."""
        if retry_after_s is not None and retry_after_s >= 0:
            return min(retry_after_s, MAX_RETRY_AFTER_S)
        base = exponential_backoff(retry_number, initial_s=self.backoff_s, cap_s=self.max_delay_s)
        return float(base * (1 + random.uniform(0, self.jitter)))


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After in seconds (the HTTP-date form is not used by SkyPilot and is ignored)."""
    if value is None:
        return None
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return None
