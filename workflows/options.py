"""Every workflow's activity options, as typed, frozen bundles: one home for timeouts and retries.

A workflow passes a bundle to an activity reference (``acts.DOWN_CLUSTER.run(arg, options)``,
workflows/activity_refs.py), which hands each field to ``workflow.execute_activity`` (or
``execute_local_activity``), with no ``**`` in between. Replay compares which activity is
scheduled, not these values, so a change here needs no ``workflow.patched`` gate; it does change
the lifecycle's guarantees (docs/reliability.md), which is why each value is explained here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

# Errors of a database step that another attempt cannot fix.
_DB_PERMANENT_ERRORS = ["InvalidTransition", "NodeAlreadyManaged", "ConfigurationError"]


@dataclass(frozen=True)
class ActivityOptions:
    """How one activity call is bounded and retried (Temporal's own option names, shortened)."""

    start_to_close: timedelta
    retry_policy: RetryPolicy
    schedule_to_close: timedelta | None = None
    heartbeat: timedelta | None = None  # regular activities only: a local one has none
    cancellation: workflow.ActivityCancellationType = workflow.ActivityCancellationType.TRY_CANCEL
    # Local activities only: a retry backoff longer than this is a workflow timer, not a sleep
    # inside the workflow task (temporalio's default threshold is 1 minute).
    local_retry_threshold: timedelta | None = None


def capped_retry(backoff_s: float, *, maximum_attempts: int) -> RetryPolicy:
    """Temporal's exponential retry from ``backoff_s``, capped at 10x (the guide's
    RetryMaxDelay = RetryBackoff * 10); ``maximum_attempts=0`` retries without limit."""
    return RetryPolicy(
        initial_interval=timedelta(seconds=backoff_s),
        maximum_interval=timedelta(seconds=backoff_s * 10),
        maximum_attempts=maximum_attempts,
    )


# --- database steps ----------------------------------------------------------------------------
DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=_DB_PERMANENT_ERRORS,
)
# No schedule-to-close: a database step retries until Postgres is back (an outage shows in
# controlplane_database_step_failures_total and its alert), never failing the workflow with its
# row live and its cluster running (issue 10, path 2). Local or regular activity alike.
DATABASE = ActivityOptions(start_to_close=timedelta(seconds=30), retry_policy=DB_RETRY)
# The local database steps since patch db-retry-timers (workflows/node.py): every backoff after
# the first (1 s) is a durable timer, so an outage of any length survives a worker restart and
# the time-skipping test server skips it like any timer (issue 10, path 2). With the default
# 1-minute threshold the capped 30 s backoffs all slept inside the workflow task, in real time.
DATABASE_TIMERS = replace(DATABASE, local_retry_threshold=timedelta(seconds=1))


# --- SkyPilot calls ----------------------------------------------------------------------------
def skypilot_retry(*, retry_backoff_s: float, max_retries: int) -> RetryPolicy:
    """A SkyPilot call's attempts: the first and SKYPILOT_MAX_RETRIES more."""
    return capped_retry(retry_backoff_s, maximum_attempts=max_retries + 1)


def down(
    *,
    terminate_timeout_s: float,
    heartbeat_timeout_s: float,
    retry_backoff_s: float,
    budget_s: float | None = None,
    maximum_attempts: int = 0,
) -> ActivityOptions:
    """Every down_cluster call: retried with capped backoff, within ``budget_s`` if given."""
    return ActivityOptions(
        start_to_close=timedelta(seconds=terminate_timeout_s + 60),
        heartbeat=timedelta(seconds=heartbeat_timeout_s),
        retry_policy=capped_retry(retry_backoff_s, maximum_attempts=maximum_attempts),
        schedule_to_close=timedelta(seconds=budget_s) if budget_s is not None else None,
    )


def before_deadline(
    *,
    remaining_s: float,
    start_to_close_s: float | None,
    heartbeat_timeout_s: float,
    retry: RetryPolicy,
) -> ActivityOptions:
    """A launch step (admit, launch, wait ready): every attempt within the launch deadline,
    and a cancel waits until the activity has stopped (it may be cancelling a request)."""
    return ActivityOptions(
        start_to_close=timedelta(seconds=min(start_to_close_s or remaining_s, remaining_s)),
        schedule_to_close=timedelta(seconds=remaining_s),
        heartbeat=timedelta(seconds=heartbeat_timeout_s),
        retry_policy=retry,
        cancellation=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    )


def cluster_health(retry: RetryPolicy) -> ActivityOptions:
    return ActivityOptions(start_to_close=timedelta(minutes=2), retry_policy=retry)


RESTART_TIMEOUT = timedelta(minutes=5)  # one restart in place (SkyPilot exec) of the model


def restart_model(*, heartbeat_timeout_s: float, retry: RetryPolicy) -> ActivityOptions:
    return ActivityOptions(
        start_to_close=RESTART_TIMEOUT + timedelta(minutes=1),
        heartbeat=timedelta(seconds=heartbeat_timeout_s),
        retry_policy=retry,
    )


# --- the reconciler ----------------------------------------------------------------------------
RECONCILE_SCAN = ActivityOptions(
    start_to_close=timedelta(minutes=5), retry_policy=RetryPolicy(maximum_attempts=3)
)
RECOVER_NODE = ActivityOptions(
    start_to_close=timedelta(seconds=60), retry_policy=RetryPolicy(maximum_attempts=3)
)

# --- the fleet-health sweep --------------------------------------------------------------------
COUNT_SERVING = ActivityOptions(
    start_to_close=timedelta(seconds=30), retry_policy=RetryPolicy(maximum_attempts=2)
)
# A sweep that cannot run is simply the next sweep's work: retry a little, then give up.
SWEEP = ActivityOptions(
    start_to_close=timedelta(minutes=2),
    heartbeat=timedelta(seconds=30),
    retry_policy=RetryPolicy(maximum_attempts=2),
)

# Lease mode (FleetHealthInput.lease_s): an activity sweeping for a whole lease. Its heartbeats
# run within and between sweeps (activities/health.py, every 5 s), so a dead worker is noticed
# after LEASE_HEARTBEAT whatever the intervals, and another worker's attempt carries the lease on
# to its end: attempts without limit, at most 10 s apart. The margin covers the last sweep,
# begun just before the lease ends (a shard's probes end within 60 s, SHARD_BUDGET_S).
LEASE_HEARTBEAT = timedelta(seconds=30)
LEASE_MARGIN = timedelta(minutes=5)


def lease(lease_s: float) -> ActivityOptions:
    return ActivityOptions(
        start_to_close=timedelta(seconds=lease_s) + LEASE_MARGIN,
        heartbeat=LEASE_HEARTBEAT,
        retry_policy=capped_retry(1.0, maximum_attempts=0),
    )
