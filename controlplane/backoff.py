"""The one backoff formula: exponential from a first delay, doubling per retry, capped.

Used by the SkyPilot client's own retries (controlplane/skypilot/retry.py, which adds jitter),
the node workflow's relaunch loop and the deployment controller's replacements. Pure and
deterministic, so workflow code may call it.
"""

from __future__ import annotations

# 2**30 times any first delay is past every cap we use; it keeps the power from overflowing.
_MAX_DOUBLINGS = 30


def exponential_backoff(retry: int, *, initial_s: float, cap_s: float) -> float:
    """Seconds before retry number ``retry`` (1-based): ``initial_s * 2**(retry - 1)``, at most
    ``cap_s``; 0 before the first retry (``retry <= 0``)."""
    if retry <= 0:
        return 0.0
    return float(min(initial_s * 2 ** min(retry - 1, _MAX_DOUBLINGS), cap_s))
