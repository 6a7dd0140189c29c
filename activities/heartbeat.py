"""Heartbeat while an activity waits, so a dead worker is noticed and a cancel is delivered."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta

from temporalio import activity

DEFAULT_INTERVAL_S = 5.0


def _interval() -> float:
    timeout = activity.info().heartbeat_timeout
    if timeout is None or timeout <= timedelta(0):
        return DEFAULT_INTERVAL_S
    return max(0.2, min(DEFAULT_INTERVAL_S, timeout.total_seconds() / 3))


@contextlib.asynccontextmanager
async def heartbeating(*details: object) -> AsyncIterator[None]:
    """Heartbeat (with non-secret ``details``) in the background for the block's duration."""

    async def beat() -> None:
        interval = _interval()
        while True:
            activity.heartbeat(*details)
            await asyncio.sleep(interval)

    task = asyncio.create_task(beat())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
