"""Launch admission in Postgres: at most N launches in flight per API server, across workers.

A node asks for a slot before it submits its launch and gives it back when the launch
resolves. Every ask runs in one short transaction under an advisory lock on the budget's key,
so concurrent workers serialise per API server and nobody else waits. Nodes that cannot have a
slot yet wait in arrival order (``enqueued_at``, then node id): a slot goes to the first
waiters only. Leases expire, and a waiter that stopped asking is dropped, so a workflow that
vanished can neither keep a slot nor block the queue.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, delete, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert

from controlplane.db.repository import SessionSource, _sessionmaker
from controlplane.db.schema import launch_slots


class Admission(BaseModel):
    """The answer to one ask: granted, or the place in the queue (0 = next)."""

    model_config = ConfigDict(frozen=True)

    granted: bool
    ahead: int
    in_flight: int
    enqueued_at: datetime
    granted_at: datetime | None = None


class LaunchSlotRepository:
    """The ``launch_slots`` table."""

    def __init__(self, sessions: SessionSource) -> None:
        self._sessions = _sessionmaker(sessions)

    async def try_acquire(
        self,
        node_id: str,
        budget_key: str,
        *,
        budget: int,
        lease: timedelta,
        waiter_ttl: timedelta,
    ) -> Admission:
        """Take a slot if one is free and nobody queued earlier wants it; else stay queued.

        Idempotent: a node that holds a slot gets it again (its lease renewed), a node already
        queued keeps its place.
        """
        if budget < 1:
            raise ValueError(f"budget must be at least 1, got {budget}")
        table = launch_slots
        async with self._sessions() as session, session.begin():
            await session.execute(select(func.pg_advisory_xact_lock(func.hashtext(budget_key))))
            # clock_timestamp(), not now(): taken under the lock, so arrival order is lock order.
            now = (await session.execute(select(func.clock_timestamp()))).scalar_one()
            await session.execute(
                delete(table).where(
                    table.c.budget_key == budget_key,
                    or_(
                        and_(table.c.granted_at.is_not(None), table.c.expires_at < now),
                        and_(table.c.granted_at.is_(None), table.c.seen_at < now - waiter_ttl),
                    ),
                )
            )
            upsert = insert(table).values(
                node_id=node_id, budget_key=budget_key, enqueued_at=now, seen_at=now
            )
            await session.execute(
                upsert.on_conflict_do_update(
                    index_elements=[table.c.node_id], set_={"seen_at": now}
                )
            )
            mine = (
                (await session.execute(select(table).where(table.c.node_id == node_id)))
                .mappings()
                .one()
            )
            in_flight = (
                await session.execute(
                    select(func.count()).where(
                        table.c.budget_key == budget_key, table.c.granted_at.is_not(None)
                    )
                )
            ).scalar_one()
            if mine["granted_at"] is not None:
                await session.execute(
                    update(table).where(table.c.node_id == node_id).values(expires_at=now + lease)
                )
                return Admission(
                    granted=True,
                    ahead=0,
                    in_flight=int(in_flight),
                    enqueued_at=mine["enqueued_at"],
                    granted_at=mine["granted_at"],
                )
            ahead = (
                await session.execute(
                    select(func.count()).where(
                        table.c.budget_key == budget_key,
                        table.c.granted_at.is_(None),
                        or_(
                            table.c.enqueued_at < mine["enqueued_at"],
                            and_(
                                table.c.enqueued_at == mine["enqueued_at"],
                                table.c.node_id < node_id,
                            ),
                        ),
                    )
                )
            ).scalar_one()
            if in_flight + ahead < budget:
                await session.execute(
                    update(table)
                    .where(table.c.node_id == node_id)
                    .values(granted_at=now, expires_at=now + lease)
                )
                return Admission(
                    granted=True,
                    ahead=0,
                    in_flight=int(in_flight) + 1,
                    enqueued_at=mine["enqueued_at"],
                    granted_at=now,
                )
            return Admission(
                granted=False,
                ahead=int(ahead),
                in_flight=int(in_flight),
                enqueued_at=mine["enqueued_at"],
            )

    async def release(self, node_id: str) -> bool:
        """Give the slot (or the place in the queue) back; False if there was none."""
        statement = (
            delete(launch_slots)
            .where(launch_slots.c.node_id == node_id)
            .returning(launch_slots.c.node_id)
        )
        async with self._sessions() as session, session.begin():
            return (await session.execute(statement)).first() is not None

    async def in_flight(self, budget_key: str) -> int:
        statement = select(func.count()).where(
            launch_slots.c.budget_key == budget_key, launch_slots.c.granted_at.is_not(None)
        )
        async with self._sessions() as session:
            return int((await session.execute(statement)).scalar_one())
