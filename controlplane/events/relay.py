"""The relay: feed events to a publisher (JetStream), in commit order, with a durable position.

It runs inside the worker, not as a Temporal workflow. One relay at a time holds a Postgres
session advisory lock (the *lease*) on its own connection and does all its reads and position
writes on that connection: if the worker dies or the connection drops, the lock goes with it
and another worker's relay takes over. A workflow would cost an activity (and history events)
per batch for what is one loop over one table; the lease gives the same "exactly one runner"
with none of that.

Per batch: run a sequencing pass, read events after the stored position, publish each (waiting
for the ack, so order is kept), then store the last cursor. A crash between a publish and the
position write republishes those events on restart; their ``Nats-Msg-Id`` (the event id) makes
JetStream drop the copies. Nothing is lost: the position only moves past acknowledged events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Final, Protocol

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.events.feed import (
    NOTIFY_CHANNEL,
    FeedEvent,
    committing,
    listen,
    read_after,
    sequence_pending,
)

log = logging.getLogger(__name__)

#: pg_try_advisory_lock key of the relay lease (session level, on the relay's connection).
RELAY_LOCK: Final = 0x63_70_66_65_65_64_02  # "cpfeed" + 2
RELAY_STATE: Final = "relay:jetstream"

_POSITION = text("SELECT position FROM event_feed_state WHERE name = :name")
_STORE = text(
    """
    INSERT INTO event_feed_state (name, position) VALUES (:name, :position)
    ON CONFLICT (name) DO UPDATE
    SET position = greatest(event_feed_state.position, excluded.position), updated_at = now()
    """
)
_LAG = text(
    """
    SELECT count(*) AS events,
           coalesce(extract(epoch FROM now() - min(e.created_at)), 0) AS seconds
    FROM node_event_feed f JOIN node_events e ON e.id = f.event_id
    WHERE f.seq > coalesce((SELECT position FROM event_feed_state WHERE name = :name), 0)
    """
)


class Publisher(Protocol):
    async def publish(self, event: FeedEvent) -> bool: ...


class LagObserver(Protocol):
    def set_relay_lag(self, events: int, seconds: float) -> None: ...


@dataclass(frozen=True)
class RelayLag:
    """Events sequenced but not yet published, and the age of the oldest of them."""

    events: int
    seconds: float


async def relay_position(connection: AsyncConnection, name: str = RELAY_STATE) -> int:
    async with committing(connection):
        position = await connection.scalar(_POSITION, {"name": name})
    return int(position or 0)


async def relay_lag(connection: AsyncConnection, name: str = RELAY_STATE) -> RelayLag:
    """How far the relay is behind the feed (runs a sequencing pass first)."""
    await sequence_pending(connection)
    async with committing(connection):
        row = (await connection.execute(_LAG, {"name": name})).one()
    return RelayLag(events=int(row.events), seconds=max(0.0, float(row.seconds)))


class EventRelay:
    """Moves feed events to ``publisher``; ``run`` until cancelled, ``relay_batch`` once."""

    def __init__(
        self,
        engine: AsyncEngine,
        publisher: Publisher,
        *,
        batch_size: int = 100,
        poll_interval_s: float = 5.0,
        observer: LagObserver | None = None,
        name: str = RELAY_STATE,
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.observer = observer
        self.name = name

    async def relay_batch(self, connection: AsyncConnection) -> int:
        """Publish up to one batch after the stored position; returns how many were sent."""
        await sequence_pending(connection)
        position = await relay_position(connection, self.name)
        events = await read_after(connection, position, limit=self.batch_size)
        for event in events:
            await self.publisher.publish(event)
        if events:
            async with committing(connection):
                await connection.execute(_STORE, {"name": self.name, "position": events[-1].cursor})
        return len(events)

    async def run(self) -> None:
        """Hold the lease and relay for ever; on any failure, back off and start again."""
        while True:
            try:
                await self._run_with_lease()
            except asyncio.CancelledError:
                raise
            except DATABASE_ERRORS as exc:
                log.warning("event relay: database error (%s)", summarize_database_error(exc))
            except Exception as exc:  # noqa: BLE001 - a NATS outage must not stop the worker
                log.warning("event relay: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.poll_interval_s)

    async def _run_with_lease(self) -> None:
        async with self.engine.connect() as connection:
            try:
                held = await connection.scalar(select(func.pg_try_advisory_lock(RELAY_LOCK)))
                await connection.commit()
                if not held:
                    log.debug("event relay: another process holds the lease")
                    return
                log.info("event relay: lease acquired, relaying from the feed")
                await self._relay_while_held(connection)
            finally:
                # Never hand a connection that holds the lease back to the pool.
                await connection.invalidate()

    async def _relay_while_held(self, connection: AsyncConnection) -> None:
        async with listen(self.engine, NOTIFY_CHANNEL) as wake:
            while True:
                wake.clear()
                sent = await self.relay_batch(connection)
                if self.observer is not None:
                    lag = await relay_lag(connection, self.name)
                    self.observer.set_relay_lag(lag.events, lag.seconds)
                if sent == self.batch_size:
                    continue
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), self.poll_interval_s)
