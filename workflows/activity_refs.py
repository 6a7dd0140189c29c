"""Activities as the workflows see them: a name and the model types in and out.

Workflows call activities by name, so no I/O code (httpx, SQLAlchemy, cryptography) is imported
into the workflow sandbox; the worker registers the implementations (activities/*) under these
same names (worker.py's IMPLEMENTATIONS, keyed by these references), and
tests/unit/test_activity_refs.py checks that every reference has an implementation with
matching input and output types. The options of each call are in workflows/options.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from temporalio import workflow

from workflows.fleet_models import (
    AcquireSlotInput,
    AcquireSlotResult,
    ClusterSweepInput,
    ClusterSweepResult,
    CountServingInput,
    CountServingResult,
    MonitorInput,
    MonitorResult,
    ProbeShardInput,
    ProbeShardResult,
    ReleaseSlotInput,
    ReleaseSlotResult,
)
from workflows.models import (
    ClusterHealthInput,
    ClusterHealthResult,
    CredentialRefInput,
    CredentialRefResult,
    DownClusterInput,
    DownClusterResult,
    LaunchInput,
    LaunchResult,
    LookupClusterInput,
    LookupClusterResult,
    ReconcileScanInput,
    ReconcileScanResult,
    RecordDeploymentEventsInput,
    RecordDeploymentEventsResult,
    RecordIntentInput,
    RecordIntentResult,
    RecoverNodeInput,
    RecoverNodeResult,
    RestartModelInput,
    RestartModelResult,
    TransitionInput,
    TransitionResult,
    WaitReadyInput,
    WaitReadyResult,
)
from workflows.options import ActivityOptions

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)


@dataclass(frozen=True)
class ActivityRef(Generic[In, Out]):
    name: str
    input_type: type[In]
    result_type: type[Out]

    async def run(self, arg: In, options: ActivityOptions, *, task_queue: str | None = None) -> Out:
        """Execute the activity from workflow code, typed end to end (on the workflow's own
        task queue unless ``task_queue`` is given)."""
        result: Out = await workflow.execute_activity(
            self.name,
            arg,
            task_queue=task_queue,
            result_type=self.result_type,
            start_to_close_timeout=options.start_to_close,
            schedule_to_close_timeout=options.schedule_to_close,
            heartbeat_timeout=options.heartbeat,
            retry_policy=options.retry_policy,
            cancellation_type=options.cancellation,
        )
        return result

    async def run_local(self, arg: In, options: ActivityOptions) -> Out:
        """Execute it as a local activity: in the workflow's own task, with no activity task
        on the queue and no activity events in the history (for short database steps)."""
        if options.heartbeat is not None:
            raise ValueError(f"{self.name}: a local activity cannot heartbeat")
        result: Out = await workflow.execute_local_activity(
            self.name,
            arg,
            result_type=self.result_type,
            start_to_close_timeout=options.start_to_close,
            schedule_to_close_timeout=options.schedule_to_close,
            retry_policy=options.retry_policy,
            local_retry_threshold=options.local_retry_threshold,
            cancellation_type=options.cancellation,
        )
        return result


RECORD_INTENT = ActivityRef("record_intent", RecordIntentInput, RecordIntentResult)
RECORD_TRANSITION = ActivityRef("record_transition", TransitionInput, TransitionResult)
CREDENTIAL_REFERENCE = ActivityRef("credential_reference", CredentialRefInput, CredentialRefResult)
LAUNCH_CLUSTER = ActivityRef("launch_cluster", LaunchInput, LaunchResult)
WAIT_READY = ActivityRef("wait_ready", WaitReadyInput, WaitReadyResult)
CLUSTER_HEALTH = ActivityRef("cluster_health", ClusterHealthInput, ClusterHealthResult)
DOWN_CLUSTER = ActivityRef("down_cluster", DownClusterInput, DownClusterResult)
LOOKUP_CLUSTER = ActivityRef("lookup_cluster", LookupClusterInput, LookupClusterResult)
RECONCILE_SCAN = ActivityRef("reconcile_scan", ReconcileScanInput, ReconcileScanResult)
RESTART_MODEL = ActivityRef("restart_model", RestartModelInput, RestartModelResult)
RECORD_DEPLOYMENT_EVENTS = ActivityRef(
    "record_deployment_events", RecordDeploymentEventsInput, RecordDeploymentEventsResult
)
SWEEP_CLUSTERS = ActivityRef("sweep_clusters", ClusterSweepInput, ClusterSweepResult)
COUNT_SERVING = ActivityRef("count_serving_nodes", CountServingInput, CountServingResult)
PROBE_MODEL_SHARD = ActivityRef("probe_model_shard", ProbeShardInput, ProbeShardResult)
# Lease mode (FleetHealthInput.lease_s): the sweeps above, every interval for a whole lease.
MONITOR_CLUSTERS = ActivityRef("monitor_clusters", MonitorInput, MonitorResult)
MONITOR_MODEL_SHARD = ActivityRef("monitor_model_shard", MonitorInput, MonitorResult)
ACQUIRE_LAUNCH_SLOT = ActivityRef("acquire_launch_slot", AcquireSlotInput, AcquireSlotResult)
RELEASE_LAUNCH_SLOT = ActivityRef("release_launch_slot", ReleaseSlotInput, ReleaseSlotResult)
# One ask, no wait (a local activity): granted, or queued with the place kept for the wait.
TRY_LAUNCH_SLOT = ActivityRef("try_launch_slot", AcquireSlotInput, AcquireSlotResult)
# Launch-slot waits run here, on a worker of their own (worker.py): queued nodes, however many,
# never take the activity slots that admitted nodes need to launch and give their slot back.
ADMISSION_ACTIVITIES: tuple[ActivityRef[Any, Any], ...] = (ACQUIRE_LAUNCH_SLOT,)


def admission_task_queue(task_queue: str) -> str:
    """The task queue of the launch-slot waits of the nodes on ``task_queue``."""
    return f"{task_queue}-admission"


RECOVER_NODE = ActivityRef("recover_node", RecoverNodeInput, RecoverNodeResult)

ALL: tuple[ActivityRef[Any, Any], ...] = (
    RECORD_INTENT,
    RECORD_TRANSITION,
    CREDENTIAL_REFERENCE,
    LAUNCH_CLUSTER,
    WAIT_READY,
    CLUSTER_HEALTH,
    DOWN_CLUSTER,
    LOOKUP_CLUSTER,
    RECONCILE_SCAN,
    RECORD_DEPLOYMENT_EVENTS,
    RESTART_MODEL,
    SWEEP_CLUSTERS,
    COUNT_SERVING,
    PROBE_MODEL_SHARD,
    MONITOR_CLUSTERS,
    MONITOR_MODEL_SHARD,
    ACQUIRE_LAUNCH_SLOT,
    TRY_LAUNCH_SLOT,
    RELEASE_LAUNCH_SLOT,
    RECOVER_NODE,
)
