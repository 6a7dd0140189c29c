"""The serving nodes to probe, one shard at a time, and the probes' running failure counts.

Shards partition the serving nodes by a hash of their node id, so K probe activities on any
workers cover every node exactly once without talking to each other. A shard's results are
written in one statement (one transaction), however many nodes it holds.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from datetime import datetime

from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, ColumnElement, and_, cast, func, select
from sqlalchemy.dialects.postgresql import insert

from controlplane.db.repository import SessionSource, _sessionmaker
from controlplane.db.schema import model_probes, nodes
from controlplane.lifecycle import SERVING_STATUSES


class ProbeTarget(BaseModel):
    """A serving node as a probe needs it: where its model is, and its failures so far."""

    model_config = ConfigDict(frozen=True)

    node_id: str
    cluster_name: str
    workflow_id: str
    status: str
    endpoint: str
    model: str
    ready_at: datetime | None
    consecutive_failures: int = 0


class ProbeRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    node_id: str
    consecutive_failures: int
    last_error: str | None = None


def shard_of(column: ColumnElement[str], shards: int) -> ColumnElement[int]:
    """Postgres's hash of the node id, in 0..shards-1 (the bigint cast avoids abs overflow)."""
    hashed: ColumnElement[int] = func.mod(func.abs(cast(func.hashtext(column), BigInteger)), shards)
    return hashed


class ProbeRepository:
    """The ``model_probes`` table, read beside the serving ``nodes``."""

    def __init__(self, sessions: SessionSource) -> None:
        self._sessions = _sessionmaker(sessions)

    async def shard(self, shard: int, shards: int) -> builtins.list[ProbeTarget]:
        """The serving nodes with an endpoint whose id hashes to ``shard`` of ``shards``."""
        if not 0 <= shard < shards:
            raise ValueError(f"shard must be in 0..{shards - 1}, got {shard}")
        statement = (
            select(
                nodes.c.node_id,
                nodes.c.cluster_name,
                nodes.c.workflow_id,
                nodes.c.status,
                nodes.c.endpoint,
                nodes.c.spec["model"].astext.label("model"),
                nodes.c.ready_at,
                func.coalesce(model_probes.c.consecutive_failures, 0).label("consecutive_failures"),
            )
            .select_from(nodes.outerjoin(model_probes, model_probes.c.node_id == nodes.c.node_id))
            .where(
                and_(
                    nodes.c.status.in_([s.value for s in SERVING_STATUSES]),
                    nodes.c.endpoint.is_not(None),
                    shard_of(nodes.c.node_id, shards) == shard,
                )
            )
            .order_by(nodes.c.node_id)
        )
        async with self._sessions() as session:
            result = await session.execute(statement)
            return [ProbeTarget.model_validate(dict(m)) for m in result.mappings()]

    async def record(self, records: Sequence[ProbeRecord], at: datetime) -> None:
        """Upsert every record in one statement."""
        if not records:
            return
        statement = insert(model_probes).values(
            [
                {
                    "node_id": r.node_id,
                    "last_probe_at": at,
                    "consecutive_failures": r.consecutive_failures,
                    "last_error": r.last_error,
                }
                for r in records
            ]
        )
        statement = statement.on_conflict_do_update(
            index_elements=[model_probes.c.node_id],
            set_={
                "last_probe_at": statement.excluded.last_probe_at,
                "consecutive_failures": statement.excluded.consecutive_failures,
                "last_error": statement.excluded.last_error,
            },
        )
        async with self._sessions() as session, session.begin():
            await session.execute(statement)

    async def get(self, node_id: str) -> ProbeRecord | None:
        statement = select(model_probes).where(model_probes.c.node_id == node_id)
        async with self._sessions() as session:
            found = (await session.execute(statement)).mappings().one_or_none()
        return None if found is None else ProbeRecord.model_validate(dict(found))
