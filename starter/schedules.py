"""The reconciler's and the fleet health sweeps' Temporal Schedules, created idempotently."""

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

from workflows.fleet_health import FleetHealthWorkflow
from workflows.fleet_models import FleetHealthInput
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
    return await ensure_schedule(
        client, RECONCILE_SCHEDULE_ID, reconcile_schedule(task_queue, interval)
    )


async def ensure_schedule(client: Client, schedule_id: str, schedule: Schedule) -> str:
    """Create ``schedule_id``, or replace an existing one's action, spec and policy.

    Returns "created" or "updated"; an operator's pause (and its note) stays.
    """
    try:
        await client.create_schedule(schedule_id, schedule)
        return "created"
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(schedule_id)

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


# --- fleet health (workflows/fleet_health.py) ---------------------------------------------------
CLUSTER_SWEEP_SCHEDULE_ID = "controlplane-cluster-sweep"
MODEL_PROBE_SCHEDULE_ID = "controlplane-model-probes"


def fleet_health_schedule(
    workflow_id: str, task_queue: str, lease: timedelta, input: FleetHealthInput
) -> Schedule:
    """A lease-mode run every ``lease``. BUFFER_ONE, not SKIP: a run ends a little after the
    next fire (its last sweep, its workflow task), and with SKIP that fire would be skipped and
    the fleet unswept for a whole lease; buffered, the next run starts as the previous ends."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            FleetHealthWorkflow.run, input, id=workflow_id, task_queue=task_queue
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=lease)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ONE),
    )


def fleet_health_runs(
    lease: timedelta, shards: int, interval: timedelta | None = None
) -> dict[str, tuple[str, FleetHealthInput]]:
    """What each fleet-health schedule starts: its runs' workflow id (the schedule adds the
    fire time) and their lease-mode input."""
    lease_s = lease.total_seconds()
    interval_s = interval.total_seconds() if interval is not None else None
    return {
        CLUSTER_SWEEP_SCHEDULE_ID: (
            "controlplane-cluster-sweep-run",
            FleetHealthInput(clusters=True, models=False, lease_s=lease_s, interval_s=interval_s),
        ),
        MODEL_PROBE_SCHEDULE_ID: (
            "controlplane-model-probes-run",
            FleetHealthInput(
                clusters=False, models=True, shards=shards, lease_s=lease_s, interval_s=interval_s
            ),
        ),
    }


async def ensure_fleet_health_schedules(
    client: Client,
    task_queue: str,
    *,
    lease: timedelta,
    shards: int,
    interval: timedelta | None = None,
    start_now: bool = True,
) -> dict[str, str]:
    """The cluster sweep (every NODE_HEALTH_CHECK_INTERVAL) and the model probes (every
    MODEL_PROBE_INTERVAL), each a lease-mode run every FLEET_HEALTH_LEASE (``lease``) that sweeps
    at its interval inside its activities: one schedule each, created or updated; safe from
    every worker. ``interval`` overrides both intervals (the benchmark's health phases).

    With ``start_now``, a schedule with no run in flight starts one at once: its next fire may
    be a whole lease away (a new installation, or an upgrade from one-shot sweeps), and the
    fleet would go unswept meanwhile. A run in flight is left alone (its input is the old one
    until its lease ends)."""
    outcomes = {}
    for schedule_id, (workflow_id, input) in fleet_health_runs(lease, shards, interval).items():
        schedule = fleet_health_schedule(workflow_id, task_queue, lease, input)
        outcomes[schedule_id] = await ensure_schedule(client, schedule_id, schedule)
        if start_now:
            handle = client.get_schedule_handle(schedule_id)
            described = await handle.describe()
            if not described.info.running_actions and not described.schedule.state.paused:
                await handle.trigger()
                outcomes[schedule_id] += ", started"
    return outcomes
