"""Tell the SkyPilot client which activity attempts are retries, for skypilot_api_retries_total.

Temporal's retry policy owns the retries of calls that may have reached the server, so the
client cannot see them; an attempt after the first marks its context, and the first SkyPilot
call it makes is recorded as a retry of that operation.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import ParamSpec, TypeVar

from temporalio import activity

from controlplane.skypilot.observer import attempt

P = ParamSpec("P")
T = TypeVar("T")


def records_retries(func: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Run the activity inside ``attempt(retried=...)`` from Temporal's attempt number."""

    @functools.wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with attempt(retried=activity.info().attempt > 1):
            return await func(*args, **kwargs)

    return wrapper
