"""The JetStream relay on PostgreSQL and the NATS server at 127.0.0.1:4222.

Each test publishes into a stream of its own (own name, own subject prefix) and deletes it, so
runs never share JetStream's de-duplication state.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import nats
import pytest
from nats.aio.client import Client as NatsClient
from nats.js.client import JetStreamContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.config import load_settings
from controlplane.db.repository import NodeRepository
from controlplane.events.feed import FeedEvent
from controlplane.events.nats_publisher import JetStreamPublisher, ensure_stream
from controlplane.events.relay import RELAY_LOCK, EventRelay, relay_lag, relay_position
from controlplane.lifecycle import READY, TERMINATED, TERMINATING
from starter.health import events_relay_health
from tests.db.test_repository import launched

NATS_URL = os.environ.get("TEST_NATS_URL", "nats://127.0.0.1:4222")


class Crash(Exception):
    """Stands for the process dying: raised after a publish, before the position write."""


class CrashingPublisher:
    """Publishes for real, then 'dies' once ``crash_after`` events went out."""

    def __init__(self, inner: JetStreamPublisher, crash_after: int | None) -> None:
        self.inner = inner
        self.crash_after = crash_after
        self.sent: list[int] = []

    async def publish(self, event: FeedEvent) -> bool:
        stored = await self.inner.publish(event)
        self.sent.append(event.event_id)
        if self.crash_after is not None and len(self.sent) >= self.crash_after:
            raise Crash
        return stored


class Stream:
    def __init__(self, jetstream: JetStreamContext, name: str, prefix: str) -> None:
        self.jetstream = jetstream
        self.name = name
        self.prefix = prefix

    def publisher(self, connection: NatsClient) -> JetStreamPublisher:
        return JetStreamPublisher(
            connection, self.jetstream, stream=self.name, subject_prefix=self.prefix
        )

    async def messages(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(subject, Nats-Msg-Id, body) of every stored message, in stream order."""
        info = await self.jetstream.stream_info(self.name)
        out = []
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            if info.state.messages == 0:
                break
            message = await self.jetstream.get_msg(self.name, seq)
            headers = message.headers or {}
            out.append(
                (str(message.subject), headers["Nats-Msg-Id"], json.loads(message.data or b""))
            )
        return out


@pytest.fixture
async def nats_connection() -> AsyncIterator[NatsClient]:
    try:
        connection = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    except (OSError, nats.errors.NoServersError) as exc:
        pytest.fail(
            f"no NATS server at {NATS_URL} ({exc}); start one with `nats-server -js` "
            "(.ci/run does) or set TEST_NATS_URL",
            pytrace=False,
        )
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def stream(nats_connection: NatsClient) -> AsyncIterator[Stream]:
    tag = uuid.uuid4().hex[:10]
    jetstream = nats_connection.jetstream()
    made = Stream(jetstream, f"TEST_EVENTS_{tag}", f"test{tag}.nodes")
    await ensure_stream(
        jetstream, timedelta(minutes=10), stream=made.name, subject_prefix=made.prefix
    )
    try:
        yield made
    finally:
        await jetstream.delete_stream(made.name)


async def lifecycle(nodes: NodeRepository, tenant: str) -> str:
    node = await launched(nodes, tenant=tenant)
    for transition in (READY, TERMINATING, TERMINATED):
        await nodes.transition(node.node_id, transition)
    return node.node_id


async def lease_holders(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        found = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND ((classid::bigint << 32) | objid::bigint) = :key "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"key": RELAY_LOCK},
        )
    return int(found or 0)


async def drain(relay: EventRelay, engine: AsyncEngine) -> None:
    async with engine.connect() as connection:
        while await relay.relay_batch(connection):
            pass


async def test_killed_between_publish_and_position_write_loses_and_duplicates_nothing(
    engine: AsyncEngine, nodes: NodeRepository, nats_connection: NatsClient, stream: Stream
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    name = f"relay:test-{uuid.uuid4().hex[:8]}"
    node_ids = [await lifecycle(nodes, tenant) for _ in range(3)]
    ours = {e.id for n in node_ids for e in await nodes.events(n)}

    dying = CrashingPublisher(stream.publisher(nats_connection), crash_after=5)
    relay = EventRelay(engine, dying, batch_size=8, name=name)
    async with engine.connect() as connection:
        with pytest.raises(Crash):
            await relay.relay_batch(connection)
        assert await relay_position(connection, name) == 0  # the position was never written

    restarted = EventRelay(engine, stream.publisher(nats_connection), batch_size=8, name=name)
    await drain(restarted, engine)

    messages = [m for m in await stream.messages() if m[0].split(".")[2] == tenant]
    ids = [int(str(body["event_id"])) for _, _, body in messages]
    assert sorted(ids) == sorted(ours)  # every event of ours, once
    assert len(ids) == len(set(ids))
    cursors = [int(str(body["cursor"])) for _, _, body in messages]
    assert cursors == sorted(cursors)  # commit order
    for node_id in node_ids:
        kinds = [s.rsplit(".", 1)[1] for s, _, body in messages if body["node_id"] == node_id]
        assert kinds == ["launched", "ready", "terminating", "terminated"]
    subject, msg_id, body = messages[0]
    assert subject == f"{stream.prefix}.{tenant}.launched"
    assert body["event_id"] == int(msg_id)
    assert body["type"] == "node.launched"
    assert set(body) >= {"cursor", "tenant", "deployment", "from_status", "to_status", "at"}


async def test_lag_counts_what_is_not_yet_published(
    engine: AsyncEngine, nodes: NodeRepository, nats_connection: NatsClient, stream: Stream
) -> None:
    name = f"relay:test-{uuid.uuid4().hex[:8]}"
    relay = EventRelay(engine, stream.publisher(nats_connection), batch_size=500, name=name)
    await drain(relay, engine)
    async with engine.connect() as connection:
        assert (await relay_lag(connection, name)).events == 0
    await lifecycle(nodes, f"t{uuid.uuid4().hex[:8]}")
    async with engine.connect() as connection:
        lag = await relay_lag(connection, name)
    assert lag.events == 4
    assert lag.seconds >= 0
    await drain(relay, engine)
    async with engine.connect() as connection:
        assert (await relay_lag(connection, name)).events == 0


async def test_only_one_relay_holds_the_lease(
    engine: AsyncEngine, nodes: NodeRepository, nats_connection: NatsClient, stream: Stream
) -> None:
    name = f"relay:test-{uuid.uuid4().hex[:8]}"
    tenant = f"t{uuid.uuid4().hex[:8]}"
    first = EventRelay(engine, stream.publisher(nats_connection), name=name, poll_interval_s=0.2)
    second = EventRelay(engine, stream.publisher(nats_connection), name=name, poll_interval_s=0.2)
    tasks = [asyncio.create_task(first.run()), asyncio.create_task(second.run())]
    try:
        await lifecycle(nodes, tenant)
        for _ in range(3):
            assert await lease_holders(engine) <= 1
            await asyncio.sleep(0.3)
        assert await lease_holders(engine) == 1
        for _ in range(100):
            if len([m for m in await stream.messages() if m[0].split(".")[2] == tenant]) == 4:
                break
            await asyncio.sleep(0.2)
        mine = [m for m in await stream.messages() if m[0].split(".")[2] == tenant]
        assert [m[0].rsplit(".", 1)[1] for m in mine] == [
            "launched",
            "ready",
            "terminating",
            "terminated",
        ]
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_health_reports_the_relay_lag_when_it_is_on(
    database_url: str, engine: AsyncEngine, nodes: NodeRepository
) -> None:
    await lifecycle(nodes, f"t{uuid.uuid4().hex[:8]}")
    settings = load_settings({"EVENTS_NATS_URL": NATS_URL, "DATABASE_URL": database_url})
    report = await events_relay_health(settings)
    async with engine.connect() as connection:
        expected = await relay_lag(connection)  # nothing relays under the default name here
    assert report["ok"] is True
    assert report["enabled"] is True
    assert report["lag_events"] == expected.events >= 4
    assert report["lag_seconds"] > 0
