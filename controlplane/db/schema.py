"""The tables, as typed SQLAlchemy models: the single description migrations are checked against.

``migrations/versions`` are written by hand; a test compares the migrated database with this
metadata, so the two cannot drift apart silently.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from controlplane.lifecycle import DEADLINE_STATUSES, EventType, LaunchMode, NodeStatus

# Deterministic constraint names, so a later migration can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_name)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _in(column: str, values: Iterable[StrEnum], among: type[StrEnum]) -> str:
    """``column IN (...)``, in the enum's declaration order (a stable text for migrations)."""
    chosen = set(values)
    return f"{column} IN ({', '.join(repr(str(v)) for v in among if v in chosen)})"


# The checks and the deadline index's predicate, from controlplane/lifecycle.py; a test compares
# the migrated database's with these (migrations/ are written by hand and stay as they are).
STATUS_CHECK = _in("status", NodeStatus, NodeStatus)
LAUNCH_MODE_CHECK = _in("launch_mode", LaunchMode, LaunchMode)
EVENT_TYPE_CHECK = _in("event_type", EventType, EventType)
DEADLINE_INDEX_WHERE = _in("status", DEADLINE_STATUSES, NodeStatus)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _now() -> Any:
    return func.now()


class Node(Base):
    """One GPU node: recorded as ``pending`` before anything exists in a cloud."""

    __tablename__ = "nodes"
    __table_args__ = (
        CheckConstraint(LAUNCH_MODE_CHECK, name="launch_mode"),
        CheckConstraint(STATUS_CHECK, name="status"),
        # Small and exact: only rows that can be stuck are in it.
        Index(
            "ix_nodes_deadline",
            "status_deadline_at",
            postgresql_where=text(DEADLINE_INDEX_WHERE),
        ),
    )

    node_id: Mapped[str] = mapped_column(Text, primary_key=True)
    tenant: Mapped[str] = mapped_column(Text, index=True)
    deployment: Mapped[str] = mapped_column(Text)
    replica: Mapped[int] = mapped_column(Integer)
    cluster_name: Mapped[str] = mapped_column(Text, unique=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSONB)
    launch_mode: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, index=True, server_default=NodeStatus.PENDING.value)
    request_id: Mapped[str | None] = mapped_column(Text)
    endpoint: Mapped[str | None] = mapped_column(Text)
    error: Mapped[str | None] = mapped_column(Text)
    workflow_id: Mapped[str] = mapped_column(Text)
    status_deadline_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    ready_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    terminated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NodeEvent(Base):
    """The outbox: append-only (a trigger rejects UPDATE, DELETE and TRUNCATE)."""

    __tablename__ = "node_events"
    __table_args__ = (CheckConstraint(EVENT_TYPE_CHECK, name="event_type"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    node_id: Mapped[str] = mapped_column(Text, ForeignKey("nodes.node_id"), index=True)
    event_type: Mapped[str] = mapped_column(Text)
    from_status: Mapped[str] = mapped_column(Text)
    to_status: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    dedupe_key: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    # The writing transaction's id: the feed's sequencer knows from it which events can no
    # longer appear below what it has seen (controlplane/events/feed.py).
    txid: Mapped[int] = mapped_column(
        BigInteger, index=True, server_default=text("(pg_current_xact_id()::text)::bigint")
    )


class NodeEventFeed(Base):
    """The feed: each event's place in commit order (``seq``), assigned once it is visible."""

    __tablename__ = "node_event_feed"

    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("node_events.id"), unique=True)
    sequenced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class EventFeedState(Base):
    """Named positions: the sequencer's transaction-id horizon, each relay's last seq sent."""

    __tablename__ = "event_feed_state"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class TenantCredential(Base):
    """A tenant's provider credentials, sealed by the vault (AES-256-GCM)."""

    __tablename__ = "tenant_credentials"
    __table_args__ = (PrimaryKeyConstraint("tenant", "provider"),)

    tenant: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    key_id: Mapped[str] = mapped_column(Text)
    nonce: Mapped[bytes] = mapped_column(LargeBinary)
    ciphertext: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


class ModelProbe(Base):
    """The last model probe of a serving node, so any worker can carry on counting failures."""

    __tablename__ = "model_probes"

    node_id: Mapped[str] = mapped_column(Text, ForeignKey("nodes.node_id"), primary_key=True)
    last_probe_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    last_error: Mapped[str | None] = mapped_column(Text)


class LaunchSlot(Base):
    """Launch admission: a row per node waiting for (``granted_at`` NULL) or holding a slot.

    ``budget_key`` names the API server (or the CLI) whose in-flight launches are capped. A
    waiter refreshes ``seen_at`` while it waits; a holder's lease ends at ``expires_at``, so a
    workflow that vanished cannot keep a slot or block the queue.
    """

    __tablename__ = "launch_slots"
    __table_args__ = (Index("ix_launch_slots_queue", "budget_key", "granted_at", "enqueued_at"),)

    node_id: Mapped[str] = mapped_column(Text, ForeignKey("nodes.node_id"), primary_key=True)
    budget_key: Mapped[str] = mapped_column(Text)
    enqueued_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    seen_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())
    granted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DeploymentEventRecord(Base):
    """The deployments' outbox: repairs, replacements, rollouts, degraded/recovered.

    Append-only like ``node_events`` (same trigger function); a deployment event often has no
    node (a rollout, the crash-loop guard), so it has a table of its own rather than a
    nullable ``node_events.node_id`` that every node-event reader would have to handle.
    """

    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_deployment", "tenant", "deployment"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    tenant: Mapped[str] = mapped_column(Text)
    deployment: Mapped[str] = mapped_column(Text)
    generation: Mapped[str] = mapped_column(Text)
    workflow_id: Mapped[str] = mapped_column(Text)
    event_type: Mapped[str] = mapped_column(Text)
    replica: Mapped[int | None] = mapped_column(BigInteger)
    node_id: Mapped[str | None] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    dedupe_key: Mapped[str] = mapped_column(Text, unique=True)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=_now())


# The Core tables, for the repositories' INSERT ... ON CONFLICT and RETURNING statements.
nodes = cast(Table, Node.__table__)
node_events = cast(Table, NodeEvent.__table__)
tenant_credentials = cast(Table, TenantCredential.__table__)
node_event_feed = cast(Table, NodeEventFeed.__table__)
event_feed_state = cast(Table, EventFeedState.__table__)
model_probes = cast(Table, ModelProbe.__table__)
launch_slots = cast(Table, LaunchSlot.__table__)
deployment_events = cast(Table, DeploymentEventRecord.__table__)
