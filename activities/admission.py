"""Launch admission activities: wait (heartbeating) for a launch slot, and give it back.

The wait is one activity, not a timer per poll in the workflow, so a node queued for minutes
costs Temporal a handful of events. New workflows run it on the admission task queue, on a
worker of its own (worker.py NodeWorkers), so waits never hold the slots launches need.
If the worker dies, the retry on another worker finds the node's place in the queue kept
(it is in Postgres).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

from temporalio import activity

from controlplane.admission import budget_key, poll_interval_s, waiter_ttl
from controlplane.config import Settings
from controlplane.db.launch_slots import Admission, LaunchSlotRepository
from controlplane.metrics import Metrics
from workflows import activity_refs as acts
from workflows.fleet_models import (
    AcquireSlotInput,
    AcquireSlotResult,
    ReleaseSlotInput,
    ReleaseSlotResult,
)

T = TypeVar("T")

# A slot outlives the launch's deadline by this much, then it is free again whatever happened.
LEASE_MARGIN = timedelta(minutes=5)


class AdmissionActivities:
    def __init__(
        self, slots: LaunchSlotRepository, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self.slots = slots
        self.settings = settings
        self.metrics = metrics

    def _ask(self, input: AcquireSlotInput) -> Awaitable[Admission]:
        """One ask for the node's slot (idempotent: a queued node keeps its place)."""
        s = self.settings
        return self.slots.try_acquire(
            input.node_id,
            budget_key(input.launch_mode, s),
            budget=s.skypilot_max_inflight_launches,
            lease=timedelta(seconds=input.timeout_s) + LEASE_MARGIN,
            waiter_ttl=waiter_ttl(s.node_heartbeat_timeout),
        )

    def _granted(self, answer: Admission) -> AcquireSlotResult:
        waited = ((answer.granted_at or answer.enqueued_at) - answer.enqueued_at).total_seconds()
        if self.metrics is not None:
            self.metrics.launch_queue_wait.observe(waited)
        return AcquireSlotResult(
            granted=True, waited_s=waited, budget=self.settings.skypilot_max_inflight_launches
        )

    @activity.defn(name=acts.TRY_LAUNCH_SLOT.name)
    async def try_launch_slot(self, input: AcquireSlotInput) -> AcquireSlotResult:
        """One ask, no wait (the node's local first ask): granted, or ``granted=False`` with
        the node queued; its wait (``acquire_launch_slot``) asks again and keeps the place."""
        answer = await self._ask(input)
        if answer.granted:
            return self._granted(answer)
        budget = self.settings.skypilot_max_inflight_launches
        return AcquireSlotResult(granted=False, ahead=answer.ahead, budget=budget)

    @activity.defn(name=acts.ACQUIRE_LAUNCH_SLOT.name)
    async def acquire_launch_slot(self, input: AcquireSlotInput) -> AcquireSlotResult:
        """Return once granted, or ``granted=False`` when ``timeout_s`` passed in the queue."""
        budget = self.settings.skypilot_max_inflight_launches
        deadline = time.monotonic() + input.timeout_s
        # Heartbeat well inside the activity's heartbeat timeout, however slowly the back polls
        # and however long the database takes to answer.
        timeout = activity.info().heartbeat_timeout
        beat = timeout.total_seconds() / 3 if timeout else poll_interval_s(0)
        ahead: int | None = None
        while True:
            answer = await heartbeating(self._ask(input), every_s=beat, details=ahead)
            ahead = answer.ahead
            if answer.granted:
                return self._granted(answer)
            activity.heartbeat(answer.ahead)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                await self.slots.release(input.node_id)  # leave the queue: the launch is over
                return AcquireSlotResult(granted=False, ahead=answer.ahead, budget=budget)
            wait = min(poll_interval_s(answer.ahead), remaining)
            await heartbeating(asyncio.sleep(wait), every_s=beat, details=ahead)

    @activity.defn(name=acts.RELEASE_LAUNCH_SLOT.name)
    async def release_launch_slot(self, input: ReleaseSlotInput) -> ReleaseSlotResult:
        return ReleaseSlotResult(released=await self.slots.release(input.node_id))


async def heartbeating(ask: Awaitable[T], *, every_s: float, details: object) -> T:
    """Await ``ask``, heartbeating meanwhile: many waiters queue for the budget's advisory lock
    and the connection pool, and a slow answer is not a dead worker. A database that does not
    answer at all still fails the ask (the pool's and the driver's timeouts)."""
    task = asyncio.ensure_future(ask)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=every_s)
            if done:
                return task.result()
            activity.heartbeat(details)
    finally:
        task.cancel()
