"""Which budget a launch counts against, and how often a queued node asks again.

Launches are capped per API server (SKYPILOT_MAX_INFLIGHT_LAUNCHES): the budget's key is the
server's URL in API mode, and the `sky` CLI of this installation in CLI mode.
"""

from __future__ import annotations

from datetime import timedelta

from controlplane.config import Settings
from controlplane.lifecycle import LaunchMode

# A waiter that has not asked for this long is taken for dead and loses its place. Above the
# slowest poll and a heartbeat-timeout retry of the asking activity on another worker.
MIN_WAITER_TTL = timedelta(seconds=60)
MAX_POLL_INTERVAL_S = 15.0  # well inside MIN_WAITER_TTL: a slow poll never loses the place


def budget_key(mode: LaunchMode, settings: Settings) -> str:
    if mode is LaunchMode.API:
        return f"api:{settings.skypilot_api_server_url or ''}"
    return f"cli:{settings.skypilot_cli_path}"


def poll_interval_s(ahead: int) -> float:
    """The next in line asks twice a second; the far back of a long queue every 15 s.

    The back only has to keep its place (MIN_WAITER_TTL); a slot reaches it after many grants.
    So one worker's ADMISSION_MAX_CONCURRENT_WAITS waiters (200 by default) ask about
    20 ln(10.5 / 0.5), about 60 times a second together, whatever the queue's length (the
    rest wait in Temporal without asking); 1,000 waiters would ask about 115 times.
    """
    return min(MAX_POLL_INTERVAL_S, 0.5 + 0.05 * ahead)


def waiter_ttl(heartbeat_timeout: timedelta) -> timedelta:
    return max(MIN_WAITER_TTL, 3 * heartbeat_timeout)
