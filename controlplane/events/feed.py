"""The pull feed over ``node_events``: every event exactly once, in commit order, by cursor.

Event ids are BIGSERIAL: assigned at insert, visible only at commit, so transactions commit out
of id order and ``WHERE id > last_seen`` skips the late one. Instead, a *sequencer* gives each
event a ``seq`` (its cursor) once its transaction is visible, in the order it saw them commit.
Passes are serialised by a transaction-level advisory lock and commit whole, so readers always
see a gap-free prefix of ``seq``: a consumer resuming after cursor C gets each later event once.

Which events might still be missing? Each event records its writer's transaction id
(``txid``). Every transaction older than the snapshot's ``xmin`` has ended, so its events were
visible to the pass that read that ``xmin`` first; the next pass only looks at ``txid >=``
that horizon. A long transaction elsewhere only widens the scan; it never stalls the feed.

Any reader runs a pass before reading (``read``), so the feed needs no relay to be current.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg
from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.db.schema import node_event_feed, node_events, nodes

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key that serialises sequencer passes (any process may run one).
SEQUENCER_LOCK: Final = 0x63_70_66_65_65_64_01  # "cpfeed" + 1
SEQUENCER_STATE: Final = "sequencer"
NOTIFY_CHANNEL: Final = "node_events"
DEFAULT_PAGE: Final = 500

_SEQUENCE = text(
    """
    INSERT INTO node_event_feed (seq, event_id)
    SELECT (SELECT coalesce(max(seq), 0) FROM node_event_feed)
           + row_number() OVER (ORDER BY e.id),
           e.id
    FROM node_events e
    WHERE e.txid >= :horizon
      AND NOT EXISTS (SELECT 1 FROM node_event_feed f WHERE f.event_id = e.id)
    ORDER BY e.id
    """
)
_ADVANCE = text(
    """
    INSERT INTO event_feed_state (name, position) VALUES (:name, :position)
    ON CONFLICT (name) DO UPDATE
    SET position = greatest(event_feed_state.position, excluded.position), updated_at = now()
    """
)


class FeedEvent(BaseModel):
    """One line of the feed: what ``starter events`` prints and the relay publishes."""

    model_config = ConfigDict(frozen=True)

    cursor: int
    event_id: int
    node_id: str
    tenant: str
    deployment: str
    type: str
    from_status: str
    to_status: str
    at: datetime
    data: dict[str, Any]

    @property
    def short_type(self) -> str:
        """``launched`` for ``node.launched``: the last token of the NATS subject."""
        return self.type.removeprefix("node.")


@dataclass(frozen=True)
class FeedFilter:
    """Optional filters; None matches everything."""

    tenant: str | None = None
    node_id: str | None = None
    type: str | None = None


async def sequence_pending(connection: AsyncConnection) -> int:
    """Give every newly visible event its ``seq``; returns how many. Commits the pass."""
    async with committing(connection):
        await connection.execute(select(func.pg_advisory_xact_lock(SEQUENCER_LOCK)))
        # Read before the INSERT's snapshot: everything older has ended, so the INSERT sees it.
        xmin = await connection.scalar(
            text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint")
        )
        horizon = await connection.scalar(
            text("SELECT position FROM event_feed_state WHERE name = :name"),
            {"name": SEQUENCER_STATE},
        )
        result = await connection.execute(_SEQUENCE, {"horizon": int(horizon or 0)})
        await connection.execute(_ADVANCE, {"name": SEQUENCER_STATE, "position": int(xmin)})
    return int(result.rowcount or 0)


async def read_after(
    connection: AsyncConnection,
    since: int,
    *,
    where: FeedFilter | None = None,
    limit: int = DEFAULT_PAGE,
) -> list[FeedEvent]:
    """Sequenced events with ``cursor > since``, oldest first (no sequencing pass)."""
    where = where or FeedFilter()
    statement = (
        select(
            node_event_feed.c.seq,
            node_events.c.id,
            node_events.c.node_id,
            nodes.c.tenant,
            nodes.c.deployment,
            node_events.c.event_type,
            node_events.c.from_status,
            node_events.c.to_status,
            node_events.c.created_at,
            node_events.c.payload,
        )
        .select_from(
            node_event_feed.join(node_events, node_events.c.id == node_event_feed.c.event_id).join(
                nodes, nodes.c.node_id == node_events.c.node_id
            )
        )
        .where(node_event_feed.c.seq > since)
        .order_by(node_event_feed.c.seq)
        .limit(limit)
    )
    if where.tenant is not None:
        statement = statement.where(nodes.c.tenant == where.tenant)
    if where.node_id is not None:
        statement = statement.where(node_events.c.node_id == where.node_id)
    if where.type is not None:
        statement = statement.where(node_events.c.event_type == where.type)
    async with committing(connection):
        rows = (await connection.execute(statement)).all()
    return [
        FeedEvent(
            cursor=row.seq,
            event_id=row.id,
            node_id=row.node_id,
            tenant=row.tenant,
            deployment=row.deployment,
            type=row.event_type,
            from_status=row.from_status,
            to_status=row.to_status,
            at=row.created_at,
            data=dict(row.payload),
        )
        for row in rows
    ]


@contextlib.asynccontextmanager
async def committing(connection: AsyncConnection) -> AsyncIterator[None]:
    """A transaction on ``connection`` that commits on the way out (or rolls back)."""
    if connection.in_transaction():
        await connection.commit()
    async with connection.begin():
        yield


class EventFeed:
    """The feed on an engine: ``read`` a page after a cursor, or ``follow`` for ever."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def read(
        self, since: int = 0, *, where: FeedFilter | None = None, limit: int = DEFAULT_PAGE
    ) -> list[FeedEvent]:
        async with self.engine.connect() as connection:
            await sequence_pending(connection)
            return await read_after(connection, since, where=where, limit=limit)

    async def events(
        self,
        since: int = 0,
        *,
        where: FeedFilter | None = None,
        follow: bool = False,
        limit: int | None = None,
        poll_interval_s: float = 5.0,
    ) -> AsyncGenerator[FeedEvent, None]:
        """Every event after ``since``; with ``follow``, then wait for more, for ever.

        Waiting wakes on NOTIFY (a trigger fires at each commit of events) or, if LISTEN is not
        available (e.g. behind a transaction-pooling proxy), every ``poll_interval_s``.
        """
        cursor, given = since, 0
        async with contextlib.AsyncExitStack() as stack:
            wake = (
                await stack.enter_async_context(listen(self.engine, NOTIFY_CHANNEL))
                if follow
                else None
            )
            while limit is None or given < limit:
                if wake is not None:
                    wake.clear()  # before reading, so a commit during the read is not missed
                page_size = DEFAULT_PAGE if limit is None else min(DEFAULT_PAGE, limit - given)
                page = await self.read(cursor, where=where, limit=page_size)
                for event in page:
                    yield event
                    given += 1
                if page:
                    cursor = page[-1].cursor
                if len(page) == page_size:
                    continue
                if wake is None:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), poll_interval_s)


@contextlib.asynccontextmanager
async def listen(engine: AsyncEngine, channel: str) -> AsyncIterator[asyncio.Event]:
    """An Event set on each NOTIFY on ``channel``; never set if LISTEN fails (polling only)."""
    woken = asyncio.Event()

    def notified(*_: object) -> None:
        woken.set()

    async with engine.connect() as connection:
        raw: Any = None
        try:
            raw = (await connection.get_raw_connection()).driver_connection
            await raw.add_listener(channel, notified)
        except (*DATABASE_ERRORS, asyncpg.PostgresError) as exc:
            log.warning("LISTEN %s failed (%s): falling back to polling", channel, _describe(exc))
            raw = None
        try:
            yield woken
        finally:
            if raw is not None and not raw.is_closed():
                with contextlib.suppress(*DATABASE_ERRORS, asyncpg.PostgresError):
                    await raw.remove_listener(channel, notified)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DATABASE_ERRORS):
        return summarize_database_error(exc)
    return f"{type(exc).__name__}: {exc}"
