"""Plain typed records that cross the database boundary (no SQLAlchemy here).

Repositories return these instead of ORM instances, so Temporal activities can return them and
workflows can import them without pulling in a database driver.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from controlplane.cluster_names import CLUSTER_PREFIX
from controlplane.lifecycle import LaunchMode
from controlplane.spec import NodeSpec


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, from_attributes=True)


class NewNode(_Record):
    """What ``record_intent`` writes: a node before anything exists in a cloud."""

    node_id: str = Field(min_length=1)
    tenant: str = Field(min_length=1)
    deployment: str = Field(min_length=1)
    replica: int = Field(ge=0)
    cluster_name: str = Field(min_length=1)
    spec: dict[str, Any]
    launch_mode: LaunchMode
    workflow_id: str = Field(min_length=1)
    status_deadline_at: datetime | None = None

    @classmethod
    def from_spec(
        cls,
        spec: NodeSpec,
        *,
        launch_mode: LaunchMode,
        workflow_id: str,
        cluster_name_prefix: str = CLUSTER_PREFIX,
        status_deadline_at: datetime | None = None,
    ) -> NewNode:
        """The row ``record_intent`` writes; the cluster is named under the installation's
        CLUSTER_NAME_PREFIX."""
        return cls(
            node_id=spec.node_id,
            tenant=spec.tenant,
            deployment=spec.deployment,
            replica=spec.replica,
            cluster_name=spec.cluster_name_for(cluster_name_prefix),
            spec=spec.model_dump(mode="json"),
            launch_mode=launch_mode,
            workflow_id=workflow_id,
            status_deadline_at=status_deadline_at,
        )


class NodeRow(_Record):
    """A ``nodes`` row. Status and launch mode are plain strings, as stored."""

    node_id: str
    tenant: str
    deployment: str
    replica: int
    cluster_name: str
    spec: dict[str, Any]
    launch_mode: str
    status: str
    request_id: str | None
    endpoint: str | None
    error: str | None
    workflow_id: str
    status_deadline_at: datetime | None
    created_at: datetime
    updated_at: datetime
    ready_at: datetime | None
    terminated_at: datetime | None


class EventRow(_Record):
    """A ``node_events`` row: one status change, as other services read it."""

    id: int
    node_id: str
    event_type: str
    from_status: str
    to_status: str
    payload: dict[str, Any]
    dedupe_key: str
    created_at: datetime


class TransitionOutcome(_Record):
    """What the repository did with a transition: the row as it is now, and the event it
    appended. ``applied`` is False when a retried transition found its work already done.
    (The activity's smaller, history-safe answer is ``workflows.models.TransitionResult``.)"""

    applied: bool
    row: NodeRow
    event: EventRow | None


class Sealed(_Record):
    """An AES-256-GCM ciphertext and what is needed to open it (with the right key)."""

    key_id: str
    nonce: bytes = Field(repr=False)
    ciphertext: bytes = Field(repr=False)


class SealedRow(Sealed):
    """A ``tenant_credentials`` row: sealed credentials of one tenant for one provider."""

    tenant: str
    provider: str
    created_at: datetime
    updated_at: datetime


class CredentialRef(_Record):
    """A non-secret pointer to stored credentials, safe for workflow history.

    The one definition: the credential store returns it and workflows carry it to the launch.
    """

    model_config = ConfigDict(frozen=True, from_attributes=True, extra="forbid")

    tenant: str
    provider: str
    key_id: str
    updated_at: datetime | None = None  # always set by the store; optional on the wire
