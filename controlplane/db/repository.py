"""Reads and idempotent writes of node rows, their outbox events, and sealed credentials.

Every write is keyed (node id; dedupe key; tenant and provider), so a retried Temporal activity
finds its work done instead of doing it twice. A status change and its event are written in one
transaction under a row lock, so concurrent callers serialise and the outbox never misses or
repeats a change. Results are plain pydantic records, never ORM instances.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterable, Mapping
from datetime import datetime
from enum import Enum
from typing import Any, Final

from pydantic_core import to_jsonable_python
from sqlalchemy import RowMapping, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from controlplane.db.engine import session_factory
from controlplane.db.errors import (
    ClusterNameConflict,
    DedupeKeyConflict,
    InvalidTransition,
    NodeNotFound,
    RepositoryError,
)
from controlplane.db.models import (
    EventRow,
    NewNode,
    NodeRow,
    Sealed,
    SealedRow,
    TransitionOutcome,
)
from controlplane.db.schema import node_events, nodes, tenant_credentials
from controlplane.lifecycle import DEADLINE_STATUSES, LaunchMode, NodeStatus, Transition

__all__ = [
    "UNSET",
    "ClusterNameConflict",
    "CredentialRepository",
    "DedupeKeyConflict",
    "EventRow",
    "InvalidTransition",
    "NewNode",
    "NodeNotFound",
    "NodeRepository",
    "NodeRow",
    "RepositoryError",
    "SealedRow",
    "TransitionOutcome",
]


class _Unset(Enum):
    """Marks an argument that was not passed, as distinct from an explicit None (clear it)."""

    UNSET = "UNSET"


UNSET: Final = _Unset.UNSET

SessionSource = async_sessionmaker[AsyncSession] | AsyncEngine


def _sessionmaker(source: SessionSource) -> async_sessionmaker[AsyncSession]:
    return session_factory(source) if isinstance(source, AsyncEngine) else source


def _given(**values: object) -> dict[str, object]:
    return {name: value for name, value in values.items() if value is not UNSET}


def _node(mapping: RowMapping) -> NodeRow:
    return NodeRow.model_validate(dict(mapping))


def _event(mapping: RowMapping) -> EventRow:
    return EventRow.model_validate(dict(mapping))


class NodeRepository:
    """The ``nodes`` and ``node_events`` tables."""

    def __init__(self, sessions: SessionSource) -> None:
        self._sessions = _sessionmaker(sessions)

    async def record_intent(self, node: NewNode) -> NodeRow:
        """Insert the node as ``pending``, or return the existing row unchanged."""
        values = node.model_dump()
        values.update(
            launch_mode=LaunchMode(node.launch_mode).value,
            spec=to_jsonable_python(node.spec),
            status=NodeStatus.PENDING.value,
        )
        # No conflict target: a clash on cluster_name must not raise mid-transaction either;
        # it shows up below as "no row with this node id".
        statement = insert(nodes).values(**values).on_conflict_do_nothing()
        async with self._sessions() as session, session.begin():
            await session.execute(statement)
            found = await self._select_one(session, nodes.c.node_id == node.node_id)
        if found is None:
            raise ClusterNameConflict(node.node_id, node.cluster_name)
        return found

    async def transition(
        self,
        node_id: str,
        transition: Transition,
        *,
        dedupe_key: str | None = None,
        request_id: str | _Unset | None = UNSET,
        endpoint: str | _Unset | None = UNSET,
        error: str | _Unset | None = UNSET,
        status_deadline_at: datetime | _Unset | None = UNSET,
        payload: Mapping[str, Any] | None = None,
    ) -> TransitionOutcome:
        """Make the named transition (controlplane/lifecycle.py) and append its event, in one
        transaction.

        A retry of a change already made (row in the target status, event with the dedupe key
        present) returns ``applied=False`` and writes nothing. Only the fields passed are set.
        Raises NodeNotFound, InvalidTransition (status neither in the transition's allowed-from
        nor its target) or DedupeKeyConflict (the key belongs to an earlier change), each time
        without writing anything. The default dedupe key, ``"<node_id>:<event_type>"``, fits
        one lifecycle; a node that relaunches needs keys with a generation suffix.
        """
        wanted = transition.target
        kind = transition.event
        key = dedupe_key or f"{node_id}:{kind.value}"
        fields = _given(
            request_id=request_id,
            endpoint=endpoint,
            error=error,
            status_deadline_at=status_deadline_at,
        )
        async with self._sessions() as session, session.begin():
            current = await self._select_one(session, nodes.c.node_id == node_id, for_update=True)
            if current is None:
                raise NodeNotFound(node_id)
            existing = await self._event_by_key(session, key)
            if existing is not None and existing.node_id == node_id and current.status == wanted:
                return TransitionOutcome(applied=False, row=current, event=existing)
            if not transition.allows(NodeStatus(current.status)):
                raise InvalidTransition(node_id, current.status, wanted, transition.allowed_from)
            if existing is not None:
                raise DedupeKeyConflict(node_id, key, wanted)

            values: dict[str, object] = {"status": wanted.value, "updated_at": func.now(), **fields}
            if wanted is NodeStatus.RUNNING and current.ready_at is None:
                values["ready_at"] = func.now()  # once: a recovered unhealthy node keeps it
            if wanted is NodeStatus.TERMINATED and current.status != wanted:
                values["terminated_at"] = func.now()
            updated = await session.execute(
                update(nodes).where(nodes.c.node_id == node_id).values(values).returning(*nodes.c)
            )
            row = _node(updated.mappings().one())

            event_payload: dict[str, Any] = {
                "tenant": row.tenant,
                "deployment": row.deployment,
                "replica": row.replica,
                "cluster_name": row.cluster_name,
            }
            event_payload.update(
                {k: v for k, v in fields.items() if k in ("request_id", "endpoint", "error")}
            )
            event_payload.update(payload or {})
            inserted = await session.execute(
                insert(node_events)
                .values(
                    node_id=node_id,
                    event_type=kind.value,
                    from_status=current.status,
                    to_status=wanted.value,
                    payload=to_jsonable_python(event_payload),
                    dedupe_key=key,
                )
                .on_conflict_do_nothing(index_elements=[node_events.c.dedupe_key])
                .returning(*node_events.c)
            )
            event = inserted.mappings().one_or_none()
            if event is None:
                # Another transaction took the key between our check and our insert: leaving
                # the status change without its event would break the outbox, so undo it.
                raise DedupeKeyConflict(node_id, key, wanted)
            return TransitionOutcome(applied=True, row=row, event=_event(event))

    async def update_fields(
        self,
        node_id: str,
        *,
        request_id: str | _Unset | None = UNSET,
        endpoint: str | _Unset | None = UNSET,
        error: str | _Unset | None = UNSET,
        workflow_id: str | _Unset = UNSET,
        status_deadline_at: datetime | _Unset | None = UNSET,
        launch_mode: str | _Unset = UNSET,
    ) -> NodeRow:
        """Set non-status fields (e.g. the request id as soon as a launch is submitted)."""
        if launch_mode is not UNSET:
            launch_mode = LaunchMode(launch_mode).value
        fields = _given(
            request_id=request_id,
            endpoint=endpoint,
            error=error,
            workflow_id=workflow_id,
            status_deadline_at=status_deadline_at,
            launch_mode=launch_mode,
        )
        if not fields:
            row = await self.get(node_id)
            if row is None:
                raise NodeNotFound(node_id)
            return row
        async with self._sessions() as session, session.begin():
            result = await session.execute(
                update(nodes)
                .where(nodes.c.node_id == node_id)
                .values({**fields, "updated_at": func.now()})
                .returning(*nodes.c)
            )
            found = result.mappings().one_or_none()
        if found is None:
            raise NodeNotFound(node_id)
        return _node(found)

    async def get(self, node_id: str) -> NodeRow | None:
        async with self._sessions() as session:
            return await self._select_one(session, nodes.c.node_id == node_id)

    async def get_by_cluster(self, cluster_name: str) -> NodeRow | None:
        async with self._sessions() as session:
            return await self._select_one(session, nodes.c.cluster_name == cluster_name)

    async def events(self, node_id: str) -> builtins.list[EventRow]:
        """The node's events, oldest first."""
        statement = (
            select(node_events).where(node_events.c.node_id == node_id).order_by(node_events.c.id)
        )
        async with self._sessions() as session:
            result = await session.execute(statement)
            return [_event(m) for m in result.mappings()]

    async def stuck(
        self, now: datetime, statuses: Iterable[str] = DEADLINE_STATUSES
    ) -> builtins.list[NodeRow]:
        """Rows still launching or terminating after their ``status_deadline_at``."""
        wanted = [NodeStatus(status).value for status in statuses]
        statement = (
            select(nodes)
            .where(nodes.c.status.in_(wanted), nodes.c.status_deadline_at < now)
            .order_by(nodes.c.status_deadline_at)
        )
        async with self._sessions() as session:
            result = await session.execute(statement)
            return [_node(m) for m in result.mappings()]

    async def count_by_status(self) -> dict[str, int]:
        """How many nodes are in each status (the nodes-by-state gauge)."""
        statement = select(nodes.c.status, func.count()).group_by(nodes.c.status)
        async with self._sessions() as session:
            result = await session.execute(statement)
            return {str(status): int(count) for status, count in result.all()}

    async def list(
        self,
        tenant: str | None = None,
        statuses: Iterable[str] | None = None,
        limit: int = 1000,
    ) -> builtins.list[NodeRow]:
        """Nodes, oldest first, optionally of one tenant and in some statuses."""
        statement = select(nodes).order_by(nodes.c.created_at, nodes.c.node_id).limit(limit)
        if tenant is not None:
            statement = statement.where(nodes.c.tenant == tenant)
        if statuses is not None:
            statement = statement.where(nodes.c.status.in_([NodeStatus(s).value for s in statuses]))
        async with self._sessions() as session:
            result = await session.execute(statement)
            return [_node(m) for m in result.mappings()]

    @staticmethod
    async def _select_one(
        session: AsyncSession, where: Any, *, for_update: bool = False
    ) -> NodeRow | None:
        statement = select(nodes).where(where)
        if for_update:
            statement = statement.with_for_update()
        found = (await session.execute(statement)).mappings().one_or_none()
        return None if found is None else _node(found)

    @staticmethod
    async def _event_by_key(session: AsyncSession, key: str) -> EventRow | None:
        statement = select(node_events).where(node_events.c.dedupe_key == key)
        found = (await session.execute(statement)).mappings().one_or_none()
        return None if found is None else _event(found)


class CredentialRepository:
    """The ``tenant_credentials`` table. It stores and returns sealed bytes only."""

    def __init__(self, sessions: SessionSource) -> None:
        self._sessions = _sessionmaker(sessions)

    async def put(self, tenant: str, provider: str, sealed: Sealed) -> SealedRow:
        """Insert or replace the tenant's credentials for the provider."""
        statement = insert(tenant_credentials).values(
            tenant=tenant,
            provider=provider,
            key_id=sealed.key_id,
            nonce=sealed.nonce,
            ciphertext=sealed.ciphertext,
        )
        upsert = statement.on_conflict_do_update(
            index_elements=[tenant_credentials.c.tenant, tenant_credentials.c.provider],
            set_={
                "key_id": statement.excluded.key_id,
                "nonce": statement.excluded.nonce,
                "ciphertext": statement.excluded.ciphertext,
                "updated_at": func.now(),
            },
        ).returning(*tenant_credentials.c)
        async with self._sessions() as session, session.begin():
            result = await session.execute(upsert)
            return SealedRow.model_validate(dict(result.mappings().one()))

    async def get(self, tenant: str, provider: str) -> SealedRow | None:
        statement = select(tenant_credentials).where(
            tenant_credentials.c.tenant == tenant, tenant_credentials.c.provider == provider
        )
        async with self._sessions() as session:
            found = (await session.execute(statement)).mappings().one_or_none()
        return None if found is None else SealedRow.model_validate(dict(found))

    async def all(self) -> builtins.list[SealedRow]:
        """Every row, ordered by tenant and provider."""
        statement = select(tenant_credentials).order_by(
            tenant_credentials.c.tenant, tenant_credentials.c.provider
        )
        async with self._sessions() as session:
            result = await session.execute(statement)
            return [SealedRow.model_validate(dict(m)) for m in result.mappings()]

    async def replace_ciphertext(
        self,
        tenant: str,
        provider: str,
        old_key_id: str,
        new: Sealed,
        *,
        old_nonce: bytes | None = None,
    ) -> bool:
        """Compare-and-swap: replace only if the row is still sealed as read.

        Returns False (and changes nothing) when the row vanished or was re-sealed meanwhile,
        so a rotation never overwrites a concurrent ``put``.
        """
        conditions = [
            tenant_credentials.c.tenant == tenant,
            tenant_credentials.c.provider == provider,
            tenant_credentials.c.key_id == old_key_id,
        ]
        if old_nonce is not None:
            conditions.append(tenant_credentials.c.nonce == old_nonce)
        statement = (
            update(tenant_credentials)
            .where(*conditions)
            .values(
                key_id=new.key_id,
                nonce=new.nonce,
                ciphertext=new.ciphertext,
                updated_at=func.now(),
            )
            .returning(tenant_credentials.c.tenant)
        )
        async with self._sessions() as session, session.begin():
            result = await session.execute(statement)
            return result.first() is not None

    async def delete(self, tenant: str, provider: str) -> bool:
        """Remove the row; False when there was none."""
        statement = (
            delete(tenant_credentials)
            .where(tenant_credentials.c.tenant == tenant, tenant_credentials.c.provider == provider)
            .returning(tenant_credentials.c.tenant)
        )
        async with self._sessions() as session, session.begin():
            result = await session.execute(statement)
            return result.first() is not None
