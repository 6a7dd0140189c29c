"""The pydantic models workflows, activities and updates exchange: one in and one out each.

Everything here is plain JSON a person can type into the Temporal web UI, and nothing here is
secret: credentials travel as references and are resolved inside the activity that uses them.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from controlplane.lifecycle import EventType, LaunchMode, NodeStatus
from controlplane.reconcile import Finding, Findings
from controlplane.spec import (
    DeploymentName,
    GpuType,
    ModelId,
    NodeSpec,
    Provider,
    Region,
    TenantId,
)

__all__ = [
    "EventType",
    "Finding",
    "Findings",
    "LaunchMode",
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


class NodeState(_Model):
    """The node as the workflow knows it; carried across continue-as-new."""

    plan: NodePlan
    status: NodeStatus = NodeStatus.PENDING
    request_id: str | None = None
    endpoint: str | None = None
    error: str | None = None
    terminate_reason: str | None = None
    health_check_requested: bool = False  # a check_health not yet served, across continue-as-new


class NodeWorkflowInput(_Model):
    """Start a node. ``launch_mode`` overrides the worker's configured choice for this node."""

    spec: NodeSpec
    launch_mode: LaunchMode | None = None
    resume: NodeState | None = Field(default=None, description="set by continue-as-new only")


class NodeView(_Model):
    """The status query's answer, and the workflow's result."""

    node_id: str
    cluster_name: str
    status: NodeStatus
    launch_mode: LaunchMode | None = None
    endpoint: str | None = None
    request_id: str | None = None
    error: str | None = None


class TerminateNodeRequest(_Model):
    reason: str = Field(default="requested", max_length=500)


class TerminateNodeResponse(_Model):
    """``still_terminating`` means the bound passed; the workflow keeps confirming the down."""

    node_id: str
    status: NodeStatus
    still_terminating: bool


# --- DeploymentWorkflow -------------------------------------------------------------------------
class DeploymentSpec(_Model):
    tenant: TenantId
    model: ModelId
    provider: Provider
    region: Region
    gpu_type: GpuType
    gpu_count: int = Field(ge=1, le=16)
    spot: bool = False
    name: DeploymentName = "default"

    def node(self, replica: int) -> NodeSpec:
        return NodeSpec(
            tenant=self.tenant,
            model=self.model,
            provider=self.provider,
            region=self.region,
            gpu_type=self.gpu_type,
            gpu_count=self.gpu_count,
            spot=self.spot,
            deployment=self.name,
            replica=replica,
        )


class DeploymentInput(_Model):
    deployment: DeploymentSpec
    replicas: int = Field(ge=0, le=100)
    launch_mode: LaunchMode | None = None


class ReplicaView(_Model):
    replica: int
    node_id: str
    cluster_name: str
    workflow_id: str
    status: NodeStatus
    endpoint: str | None = None
    error: str | None = None


class DeploymentView(_Model):
    name: str
    tenant: str
    desired_replicas: int
    terminating: bool
    replicas: list[ReplicaView]


class ScaleDeploymentRequest(_Model):
    replicas: int = Field(ge=0, le=100)


class TerminateDeploymentRequest(_Model):
    reason: str = Field(default="requested", max_length=500)


class ReplicaStatusSignal(_Model):
    replica: int
    status: NodeStatus
    endpoint: str | None = None
    error: str | None = None


# --- TerminateClusterWorkflow -------------------------------------------------------------------
class TerminateClusterInput(_Model):
    """Down a cluster by name, e.g. one this system did not launch (the guide's TerminateNode)."""

    cluster_name: str = Field(pattern=r"^[a-zA-Z]([-_.a-zA-Z0-9]*[a-zA-Z0-9])?$", max_length=100)
    launch_mode: LaunchMode | None = None


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


class CredentialRef(_Model):
    """A pointer to a tenant's stored credential; holds no secret."""

    tenant: str
    provider: str
    key_id: str
    updated_at: datetime | None = None


class CredentialRefResult(_Model):
    ref: CredentialRef | None = None


class LaunchInput(_Model):
    spec: NodeSpec
    cluster_name: str
    node_id: str
    launch_mode: LaunchMode
    credential: CredentialRef | None = None


NOTHING_SUBMITTED = "nothing_submitted"
"""In a launch_cluster error's details: the step proved nothing reached SkyPilot (no launch POST
was sent and no marked request exists), so there is no cluster to clean up."""


class LaunchResult(_Model):
    request_id: str | None = None


class WaitReadyInput(_Model):
    cluster_name: str
    launch_mode: LaunchMode
    request_id: str | None = None
    timeout_s: float


class WaitReadyResult(_Model):
    endpoint: str


class TransitionInput(_Model):
    node_id: str
    to_status: NodeStatus
    event_type: EventType
    allowed_from: list[NodeStatus]
    request_id: str | None = None
    endpoint: str | None = None
    error: str | None = None
    deadline_s: float | None = None
    dedupe_suffix: str | None = None


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


class DownClusterResult(_Model):
    already_gone: bool
    cancelled_requests: list[str] = Field(default_factory=list)
