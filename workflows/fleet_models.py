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
    parts (fewer for a small fleet: one per NODES_PER_SHARD serving nodes)."""

    clusters: bool = True
    models: bool = True
    shards: int = Field(default=16, ge=1, le=1024)


class FleetHealthReport(_Model):
    clusters_listed: int = 0
    serving_nodes: int = 0
    status_calls: int = 0  # the cluster list(s), plus one fresh look per suspect
    clusters_changed: list[str] = Field(default_factory=list)
    models_probed: int = 0
    probe_failures: int = 0
    models_changed: list[str] = Field(default_factory=list)
    signal_errors: list[str] = Field(default_factory=list)


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
