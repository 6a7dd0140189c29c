"""The reconciler's Temporal Schedule, created idempotently (by the worker or a command)."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from workflows.models import ReconcileInput
from workflows.reconcile import ReconcileWorkflow

RECONCILE_SCHEDULE_ID = "controlplane-reconciler"


def reconcile_schedule(task_queue: str, interval: timedelta) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ReconcileWorkflow.run,
            ReconcileInput(),
            id="controlplane-reconcile",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=interval)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_reconcile_schedule(client: Client, task_queue: str, interval: timedelta) -> str:
    """Create the schedule, or bring an existing one to this interval and task queue.

    Returns "created" or "updated"; safe to call from every worker at every start.
    """
    schedule = reconcile_schedule(task_queue, interval)
    try:
        await client.create_schedule(RECONCILE_SCHEDULE_ID, schedule)
        return "created"
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(RECONCILE_SCHEDULE_ID)

        def update(current: ScheduleUpdateInput) -> ScheduleUpdate:
            # Replace only what this function owns: an operator's pause (and its note) stays.
            existing = current.description.schedule
            existing.action, existing.spec, existing.policy = (
                schedule.action,
                schedule.spec,
                schedule.policy,
            )
            return ScheduleUpdate(schedule=existing)

        await handle.update(update)
        return "updated"
