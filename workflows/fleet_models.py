"""The pydantic models of fleet health and launch admission: one in and one out each.

Kept beside workflows/models.py so the node lifecycle's models stay as they are; nothing here
is secret.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from controlplane.lifecycle import LaunchMode


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --- signals to a NodeWorkflow ------------------------------------------------------------------
class ModelHealthSignal(_Model):
    """The probes' new verdict on a serving node's model (sent only when it changed)."""

    healthy: bool
    consecutive_failures: int = 0
    detail: str | None = Field(default=None, max_length=1000)


# --- FleetHealthWorkflow ------------------------------------------------------------------------
class FleetHealthInput(_Model):
    """One sweep: the cluster list (``clusters``) and/or the model probes, in up to ``shards``
    parts (fewer for a small fleet: one per NODES_PER_SHARD serving nodes).

    With ``lease_s`` (lease mode) the run instead holds one cluster-monitoring activity and
    exactly ``shards`` probe-monitoring activities for ``lease_s`` seconds, each sweeping every
    interval and signalling the changed nodes itself: a heartbeat is not a history event, so
    the run's events are paid once per lease, whatever the fleet's size or the interval."""

    clusters: bool = True
    models: bool = True
    shards: int = Field(default=16, ge=1, le=1024)
    lease_s: float | None = Field(default=None, gt=0)
    # Lease mode: the sweeps' interval; None (the schedules) reads the worker's
    # NODE_HEALTH_CHECK_INTERVAL / MODEL_PROBE_INTERVAL before each sweep.
    interval_s: float | None = Field(default=None, gt=0)


class FleetHealthReport(_Model):
    clusters_listed: int = 0
    serving_nodes: int = 0
    status_calls: int = 0  # the cluster list(s), plus one fresh look per suspect
    clusters_changed: list[str] = Field(default_factory=list)
    models_probed: int = 0
    probe_failures: int = 0
    models_changed: list[str] = Field(default_factory=list)
    signal_errors: list[str] = Field(default_factory=list)
    # Lease mode only: every monitoring activity's summary, added up.
    sweeps: int = 0
    failed_sweeps: int = 0
    changed: int = 0
    ended_meanwhile: int = 0


# --- activities ---------------------------------------------------------------------------------
class ClusterSweepInput(_Model):
    pass


class ClusterChange(_Model):
    node_id: str
    cluster_name: str
    workflow_id: str
    cluster_status: str


class ClusterSweepResult(_Model):
    clusters_listed: int
    serving_nodes: int
    status_calls: int
    changed: list[ClusterChange] = Field(default_factory=list)


class CountServingInput(_Model):
    pass


class CountServingResult(_Model):
    serving_nodes: int


class ProbeShardInput(_Model):
    shard: int = Field(ge=0)
    shards: int = Field(ge=1)


class ModelChange(_Model):
    node_id: str
    cluster_name: str
    workflow_id: str
    signal: ModelHealthSignal


class ProbeShardResult(_Model):
    probed: int
    failures: int
    changed: list[ModelChange] = Field(default_factory=list)


class MonitorInput(_Model):
    """A lease-mode activity: sweep (every shard ``shard`` of ``shards`` for the probes) until
    ``lease_s`` seconds have passed since the activity's first attempt was scheduled."""

    lease_s: float = Field(gt=0)
    interval_s: float | None = Field(default=None, gt=0)  # None: the worker's setting
    shard: int = Field(default=0, ge=0)
    shards: int = Field(default=1, ge=1)


class MonitorResult(_Model):
    """What one lease of sweeps did (the last attempt's, if a worker died meanwhile)."""

    sweeps: int = 0
    failed_sweeps: int = 0  # logged and skipped: the lease went on
    status_calls: int = 0
    probes: int = 0
    probe_failures: int = 0
    changed: int = 0  # node workflows signalled
    ended_meanwhile: int = 0  # changed nodes whose workflow had ended: noted, not an error
    signal_errors: list[str] = Field(default_factory=list, max_length=100)


class AcquireSlotInput(_Model):
    node_id: str
    launch_mode: LaunchMode
    timeout_s: float = Field(gt=0)


class AcquireSlotResult(_Model):
    """``granted`` False means the launch deadline passed while the node was still queued."""

    granted: bool
    ahead: int = 0
    waited_s: float = 0.0
    budget: int


class ReleaseSlotInput(_Model):
    node_id: str


class ReleaseSlotResult(_Model):
    released: bool
