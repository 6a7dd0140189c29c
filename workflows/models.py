"""The pydantic models workflows, activities and updates exchange: one in and one out each.

Everything here is plain JSON a person can type into the Temporal web UI, and nothing here is
secret: credentials travel as references and are resolved inside the activity that uses them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    model_validator,
)

from controlplane.db.models import CredentialRef
from controlplane.launch_progress import NodePhase
from controlplane.lifecycle import (
    LOST_SECOND_LOOK_DEFAULT_S,
    SERVING_STATUSES,
    STARTING_STATUSES,
    TRANSITIONS,
    EventType,
    LaunchMode,
    NodeStatus,
    Transition,
    transition_matching,
    transition_named,
)
from controlplane.reconcile import Finding, Findings
from controlplane.spec import (
    DeploymentName,
    Generation,
    GpuType,
    Location,
    ModelId,
    NodeSpec,
    PackageVersion,
    Placement,
    Provider,
    Region,
    TenantId,
)

__all__ = [
    "CredentialRef",
    "EventType",
    "Finding",
    "Findings",
    "LaunchMode",
    "NodePhase",
    "NodeSpec",
    "NodeStatus",
]  # re-exported for workflows


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- NodeWorkflow -------------------------------------------------------------------------------
class NodePlan(_Model):
    """What was decided when the node was created; it never changes for the node's life."""

    node_id: str
    cluster_name: str
    launch_mode: LaunchMode
    launch_timeout_s: float
    terminate_timeout_s: float
    health_interval_s: float
    cleanup_budget_s: float
    heartbeat_timeout_s: float
    max_retries: int
    retry_backoff_s: float
    # The wait before the second look at a cluster that seems gone (NODE_LOST_SECOND_LOOK);
    # plans recorded before the setting existed get its default.
    lost_second_look_s: float = Field(default=LOST_SECOND_LOOK_DEFAULT_S, gt=0)


class NodeState(_Model):
    """The node as the workflow knows it; carried across continue-as-new."""

    plan: NodePlan
    status: NodeStatus = NodeStatus.PENDING
    request_id: str | None = None
    endpoint: str | None = None
    error: str | None = None
    terminate_reason: str | None = None
    location: str | None = None  # cloud/region the cluster landed in
    repair_times: list[datetime] = Field(default_factory=list)  # restarts in place, recent
    repairs: int = 0
    repair_exhausted: bool = False
    unhealthy_episodes: int = 0  # how often it became unhealthy: the events' dedupe suffix
    health_check_requested: bool = False  # a check_health not yet served, across continue-as-new


class RepairPolicy(_Model):
    """In-place repair of an unhealthy model: restart its server on the cluster it has.

    After ``attempts`` restarts within ``window_s`` that did not bring it back, the node is
    ``repair_exhausted``: a deployment replaces it; a standalone node stays unhealthy.
    """

    enabled: bool = True
    attempts: int = Field(default=3, ge=1, le=100)
    window_s: float = Field(default=1800.0, gt=0)
    recover_wait_s: float = Field(default=300.0, gt=0)


class NodeWorkflowInput(_Model):
    """Start a node. ``launch_mode`` overrides the worker's configured choice for this node."""

    spec: NodeSpec
    launch_mode: LaunchMode | None = None
    repair: RepairPolicy | None = None
    resume: NodeState | None = Field(default=None, description="set by continue-as-new only")


class NodeView(_Model):
    """The status query's answer, and the workflow's result."""

    node_id: str
    cluster_name: str | None = Field(default=None, description="None until intent is recorded")
    status: NodeStatus
    launch_mode: LaunchMode | None = None
    endpoint: str | None = None
    request_id: str | None = None
    error: str | None = None
    reason: str | None = None  # why it waits, e.g. queued for a launch slot
    repairs: int = 0  # restarts in place
    repair_exhausted: bool = False
    location: str | None = None  # cloud/region it landed in, from the cluster record
    phase: NodePhase | None = Field(default=None, description="where the node stands")
    progress: str | None = Field(default=None, description="a short line: what it is doing")
    since: datetime | None = Field(default=None, description="when the phase began")


class NodeProgressSignal(_Model):
    """A launch moved to a new phase (sent by the waiting activity, once per phase)."""

    phase: NodePhase
    progress: str = Field(max_length=500)


class TerminateNodeRequest(_Model):
    reason: str = Field(default="requested", max_length=500)


class TerminateNodeResponse(_Model):
    """``still_terminating`` means the bound passed; the workflow keeps confirming the down."""

    node_id: str
    status: NodeStatus
    still_terminating: bool


# --- DeploymentWorkflow -------------------------------------------------------------------------
class DeploymentSpec(Placement):
    model_config = ConfigDict(extra="forbid")

    name: DeploymentName = "default"
    vllm_version: PackageVersion | None = None
    torch_version: PackageVersion | None = None
    fallback_locations: tuple[Location, ...] = Field(default=(), max_length=8)

    def node(
        self, replica: int, *, generation: str | None = None, spot: bool | None = None
    ) -> NodeSpec:
        """Replica ``replica``'s spec: every field of this spec (``name`` as ``deployment``),
        ``spot`` overriding this spec's when given."""
        same = {field: getattr(self, field) for field in type(self).model_fields if field != "name"}
        if spot is not None:
            same["spot"] = spot
        return NodeSpec(**same, deployment=self.name, replica=replica, generation=generation)


class ReplaceOrder(StrEnum):
    NEW_FIRST = "new_first"  # launch the replacement, retire the broken one once it is ready
    OLD_FIRST = "old_first"  # retire the broken one at once (frees its GPU quota first)


class DeploymentPolicy(_Model):
    """How the controller heals and rolls out; the starter fills it from DEPLOYMENT_* settings."""

    replace_order: ReplaceOrder = ReplaceOrder.NEW_FIRST
    backoff_initial_s: float = Field(default=30.0, gt=0)
    backoff_max_s: float = Field(default=600.0, gt=0)
    crash_loop_threshold: int = Field(default=3, ge=1, le=100)
    rollout_deadline_s: float = Field(default=1800.0, gt=0)
    spot_fallback_after: int | None = Field(
        default=None, ge=1, le=100, description="capacity failures on spot before on-demand"
    )
    serving_check_interval_s: float = Field(default=600.0, gt=0)
    history_limit: int = Field(
        default=20000, ge=100, description="continue-as-new past this many history events"
    )


class ReplicaRecord(_Model):
    """One replica as the controller tracks it; carried across continue-as-new."""

    replica: int
    node_id: str
    cluster_name: str | None  # None until the child records intent and reports it
    workflow_id: str
    status: NodeStatus
    revision: int = 0
    spot: bool = False
    endpoint: str | None = None
    error: str | None = None
    ever_ready: bool = False
    retiring: bool = False
    repair_exhausted: bool = False
    repairs: int = 0
    replaces: int | None = None
    location: str | None = None

    @property
    def counts(self) -> bool:
        """Serving, or about to: what counts toward desired."""
        return (
            not self.retiring
            and not self.repair_exhausted
            and self.status in STARTING_STATUSES | SERVING_STATUSES
        )


class DeploymentEventType(StrEnum):
    """Deployment-level events, written to the outbox beside the nodes' own."""

    REPLICA_REPAIRED = "deployment.replica_repaired"
    REPLICA_REPLACED = "deployment.replica_replaced"
    ROLLOUT_STARTED = "deployment.rollout_started"
    ROLLOUT_FINISHED = "deployment.rollout_finished"
    ROLLOUT_ROLLED_BACK = "deployment.rollout_rolled_back"
    DEGRADED = "deployment.degraded"
    RECOVERED = "deployment.recovered"
    SPOT_FALLBACK = "deployment.spot_fallback"


class DeploymentEvent(_Model):
    event_type: DeploymentEventType
    detail: str
    replica: int | None = None
    node_id: str | None = None
    at: datetime


class RolloutState(_Model):
    revision: int
    previous_revision: int
    previous_spec: DeploymentSpec
    max_surge: int
    max_unavailable: int
    deadline_at: datetime
    phase: str = "rolling"  # rolling | done | rolled_back
    reason: str | None = None


class DeploymentState(_Model):
    """Everything the controller knows; what continue-as-new carries."""

    spec: DeploymentSpec
    revision: int = 0  # the target: what replicas are rolled to (back to the old one on rollback)
    next_revision: int = 1  # never reused, so a rolled-back revision's replicas stay apart
    desired: int
    generation: Generation
    next_replica: int = 0
    replicas: list[ReplicaRecord] = Field(default_factory=list)
    terminating: bool = False
    never_ready_streak: int = 0
    degraded: bool = False
    degraded_reason: str | None = None
    spot_capacity_failures: int = 0
    on_demand_fallback: bool = False
    not_before: datetime | None = None
    rollout: RolloutState | None = None
    recent_events: list[DeploymentEvent] = Field(default_factory=list)
    events_written: int = 0


class DeploymentInput(_Model):
    deployment: DeploymentSpec
    replicas: int = Field(ge=0, le=100)
    launch_mode: LaunchMode | None = None
    policy: DeploymentPolicy = Field(default_factory=DeploymentPolicy)
    repair: RepairPolicy = Field(default_factory=lambda: RepairPolicy())
    resume: DeploymentState | None = Field(default=None, description="set by continue-as-new only")


class ReplicaView(_Model):
    replica: int
    node_id: str
    cluster_name: str | None = Field(default=None, description="None until the replica reports")
    workflow_id: str
    status: NodeStatus
    endpoint: str | None = None
    error: str | None = None
    revision: int = 0
    retiring: bool = False
    repair_exhausted: bool = False
    repairs: int = 0
    location: str | None = None


class RolloutView(_Model):
    """An update's progress: replicas on the old and the new spec, and who is being replaced."""

    revision: int
    phase: str
    old_replicas: int
    new_replicas: int
    new_ready: int
    replacing: list[int] = Field(default_factory=list)
    reason: str | None = None


class DeploymentView(_Model):
    name: str
    tenant: str
    desired_replicas: int
    terminating: bool
    replicas: list[ReplicaView]
    serving_replicas: int = 0
    revision: int = 0
    generation: str | None = None
    degraded: bool = False
    degraded_reason: str | None = None
    on_demand_fallback: bool = False
    rollout: RolloutView | None = None
    recent_events: list[DeploymentEvent] = Field(default_factory=list)


class ScaleDeploymentRequest(_Model):
    replicas: int = Field(ge=0, le=100)


class UpdateDeploymentRequest(_Model):
    """A new node spec for every replica, rolled out; fields left out keep their value."""

    model: ModelId | None = None
    vllm_version: PackageVersion | None = None
    torch_version: PackageVersion | None = None
    gpu_type: GpuType | None = None
    gpu_count: int | None = Field(default=None, ge=1, le=16)
    provider: Provider | None = None
    region: Region | None = None
    spot: bool | None = None
    fallback_locations: tuple[Location, ...] | None = Field(default=None, max_length=8)
    max_surge: int = Field(default=1, ge=1, le=100)
    max_unavailable: int = Field(default=0, ge=0, le=100)
    deadline_s: float | None = Field(default=None, gt=0)


class TerminateDeploymentRequest(_Model):
    reason: str = Field(default="requested", max_length=500)


class ReplicaStatusSignal(_Model):
    replica: int
    status: NodeStatus
    endpoint: str | None = None
    error: str | None = None
    cluster_name: str | None = None
    repair_exhausted: bool = False
    repairs: int = 0
    location: str | None = None


# --- TerminateClusterWorkflow -------------------------------------------------------------------
class TerminateClusterInput(_Model):
    """Down a cluster by name, e.g. one this system did not launch (the guide's TerminateNode)."""

    cluster_name: str = Field(pattern=r"^[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$", max_length=100)
    launch_mode: LaunchMode | None = None
    tenant: TenantId | None = Field(
        default=None, description="refuse unless the cluster is this tenant's node"
    )


class TerminateClusterResult(_Model):
    """Either the down's outcome, or the NodeWorkflow the teardown was handed to."""

    cluster_name: str
    node_id: str | None = None
    launch_mode: LaunchMode
    delegated_to: str | None = None
    already_gone: bool = False
    cancelled_requests: list[str] = Field(default_factory=list)


class LookupClusterInput(_Model):
    cluster_name: str
    launch_mode: LaunchMode | None = None


class LookupClusterResult(_Model):
    """How to tear a cluster down: its node (if this system launched it) and the timings."""

    cluster_name: str
    node_id: str | None = None
    tenant: str | None = None
    workflow_id: str | None = None
    status: NodeStatus | None = None
    launch_mode: LaunchMode
    terminate_timeout_s: float
    cleanup_budget_s: float
    heartbeat_timeout_s: float
    retry_backoff_s: float


# --- ReconcileWorkflow --------------------------------------------------------------------------
class ReconcileInput(_Model):
    """``cleanup`` None follows the worker's RECONCILE_CLEANUP setting."""

    cleanup: bool | None = None


class ReconcileReport(_Model):
    clusters_seen: int
    nodes_seen: int
    cleanup_enabled: bool
    orphans: list[Finding]
    lost: list[Finding]
    stuck: list[Finding]
    cleanup_failed: list[Finding]
    cleaned: list[str] = Field(default_factory=list)
    cleanup_errors: list[str] = Field(default_factory=list)
    unowned: list[Finding] = Field(default_factory=list)
    recovered: list[str] = Field(default_factory=list)  # workflow ids started for unowned rows
    total: dict[str, int] = Field(default_factory=dict)  # findings per kind before bounding


# --- activities ---------------------------------------------------------------------------------
class RecordIntentInput(_Model):
    spec: NodeSpec
    workflow_id: str
    launch_mode: LaunchMode | None = None


class RecordIntentResult(_Model):
    """The node's row after recording intent: new, or as an earlier run left it."""

    plan: NodePlan
    status: NodeStatus
    owner_workflow_id: str
    created: bool
    request_id: str | None = None
    endpoint: str | None = None


class CredentialRefInput(_Model):
    tenant: str
    provider: str


class CredentialRefResult(_Model):
    ref: CredentialRef | None = None


class LaunchInput(_Model):
    spec: NodeSpec
    cluster_name: str
    node_id: str
    launch_mode: LaunchMode
    credential: CredentialRef | None = None
    # The row was already launching when this run began (an adopted or resumed node): an earlier
    # run may have sent the launch.
    resumed: bool = False


NOTHING_SUBMITTED = "nothing_submitted"
"""In a launch_cluster error's details: the step proved nothing reached SkyPilot (no launch POST
was sent and no marked request exists), so there is no cluster to clean up."""


class LaunchResult(_Model):
    request_id: str | None = None


class RestartModelInput(_Model):
    """Repair in place: run the node's task again on its own cluster (SkyPilot ``exec``)."""

    spec: NodeSpec
    cluster_name: str
    node_id: str
    launch_mode: LaunchMode
    credential: CredentialRef | None = None
    attempt: int
    timeout_s: float


class RestartModelResult(_Model):
    job_submitted: bool


class WaitReadyInput(_Model):
    cluster_name: str
    launch_mode: LaunchMode
    request_id: str | None = None
    timeout_s: float
    pinned_location: str | None = Field(
        default=None,
        description="the only place the launch can land (no fallbacks): no status call for it",
    )


class WaitReadyResult(_Model):
    endpoint: str
    location: str | None = Field(default=None, description="cloud/region, from the cluster record")


def _transition(value: object) -> Transition:
    if isinstance(value, Transition):
        return value
    if isinstance(value, str):
        return transition_named(value)
    raise ValueError(f"a transition's name was expected, not {type(value).__name__}")


# A named transition of controlplane/lifecycle.py; on the wire, its name.
TransitionName = Annotated[
    Transition,
    PlainValidator(_transition),
    PlainSerializer(lambda t: t.name, return_type=str),
    WithJsonSchema({"type": "string", "enum": sorted(TRANSITIONS)}),
]


class TransitionInput(_Model):
    node_id: str
    transition: TransitionName
    request_id: str | None = None
    endpoint: str | None = None
    error: str | None = None
    deadline_s: float | None = None
    dedupe_suffix: str | None = None
    location: str | None = None  # where the node landed: in the node.ready event's payload

    @model_validator(mode="before")
    @classmethod
    def _from_parallel_arguments(cls, data: Any) -> Any:
        """Workflow code before named transitions sent ``to_status``, ``event_type`` and
        ``allowed_from`` (an activity it scheduled may run on this worker, or replay)."""
        if not isinstance(data, dict) or "to_status" not in data or "transition" in data:
            return data
        data = dict(data)
        data["transition"] = transition_matching(
            data.pop("to_status"), data.pop("event_type", ""), data.pop("allowed_from", ())
        )
        return data


class TransitionResult(_Model):
    applied: bool
    status: NodeStatus


class ClusterHealthInput(_Model):
    cluster_name: str
    launch_mode: LaunchMode
    refresh: bool = False  # ask SkyPilot to refresh from the cloud (confirming a loss)


class ClusterHealthResult(_Model):
    cluster_status: str
    present: bool


class DownClusterInput(_Model):
    cluster_name: str
    launch_mode: LaunchMode
    timeout_s: float
    cancel_launches: bool = False


class ReconcileScanInput(_Model):
    orphan_grace_s: float | None = None
    max_findings: int = Field(default=200, ge=1, le=2000)  # per kind: bounded payloads


class RecoverNodeInput(_Model):
    """Start a NodeWorkflow again for a live row whose workflow is not running."""

    node_id: str


class RecoverNodeResult(_Model):
    workflow_id: str | None = None  # None: the row was no longer live, or its workflow runs
    mode: str | None = None


class ReconcileScanResult(_Model):
    findings: Findings
    clusters_seen: int
    nodes_seen: int
    cleanup_enabled: bool
    default_mode: LaunchMode
    terminate_timeout_s: float
    heartbeat_timeout_s: float
    retry_backoff_s: float


class RecordDeploymentEventsInput(_Model):
    """A batch of a deployment's events; ``first_sequence`` makes each one's dedupe key."""

    tenant: str
    deployment: str
    workflow_id: str
    generation: str
    first_sequence: int
    events: list[DeploymentEvent]
    desired: int
    serving: int


class RecordDeploymentEventsResult(_Model):
    written: int


class DownClusterResult(_Model):
    already_gone: bool
    cancelled_requests: list[str] = Field(default_factory=list)
