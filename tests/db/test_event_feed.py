"""The pull feed on PostgreSQL: out-of-id-order commits skip nothing, repeat nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from controlplane import lifecycle
from controlplane.db.repository import NodeRepository
from controlplane.db.schema import node_events
from controlplane.events.feed import EventFeed, FeedFilter
from controlplane.lifecycle import EventType
from tests.db.test_repository import launched, new_node, recorded

T = TypeVar("T")

# A feed event's fields, as consumers read them (the feed API and `python -m starter events`).
FEED_EVENT_FIELDS = {
    "cursor",
    "event_id",
    "node_id",
    "tenant",
    "deployment",
    "type",
    "from_status",
    "to_status",
    "at",
    "data",
}


async def insert_event(connection: AsyncConnection, node_id: str, key: str) -> int:
    """What ``NodeRepository.transition`` writes, in a transaction the test commits itself."""
    result = await connection.execute(
        insert(node_events)
        .values(
            node_id=node_id,
            event_type=EventType.LAUNCHED.value,
            from_status="pending",
            to_status="launching",
            payload={},
            dedupe_key=key,
        )
        .returning(node_events.c.id)
    )
    return int(result.scalar_one())


async def naive_read(engine: AsyncEngine, last_seen: int, node_ids: set[str]) -> list[int]:
    """Today's way to consume the outbox: ``WHERE id > last_seen``."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            select(node_events.c.id, node_events.c.node_id)
            .where(node_events.c.id > last_seen)
            .order_by(node_events.c.id)
        )
        return [row.id for row in rows if row.node_id in node_ids]


async def two_nodes(nodes: NodeRepository) -> tuple[str, str]:
    first, second = new_node(), new_node()
    await nodes.record_intent(first)
    await nodes.record_intent(second)
    return first.node_id, second.node_id


async def commit_out_of_id_order(
    engine: AsyncEngine, a: str, b: str, read: Callable[[], Awaitable[T]]
) -> tuple[int, int, T]:
    """Insert id X (open), then X+1 (committed), ``read``, then commit X. Returns X, X+1, read."""
    async with engine.connect() as slow, engine.connect() as fast:
        await slow.begin()
        early = await insert_event(slow, a, f"{a}:slow")
        await fast.begin()
        late = await insert_event(fast, b, f"{b}:fast")
        await fast.commit()
        seen = await read()
        await slow.commit()
    return early, late, seen


async def test_id_cursor_skips_an_event_committed_late(
    engine: AsyncEngine, nodes: NodeRepository
) -> None:
    a, b = await two_nodes(nodes)
    early, late, seen = await commit_out_of_id_order(
        engine, a, b, lambda: naive_read(engine, 0, {a, b})
    )

    assert early < late
    assert seen == [late]  # the consumer's cursor is now `late`...
    assert await naive_read(engine, late, {a, b}) == []  # ...and `early` is never seen


async def test_feed_delivers_an_event_committed_late_exactly_once(
    engine: AsyncEngine, nodes: NodeRepository
) -> None:
    feed = EventFeed(engine)
    a, b = await two_nodes(nodes)
    cursor = max([0, *(e.cursor for e in await feed.read(0, limit=100_000))])
    got: list[int] = []

    async def read_page() -> None:
        nonlocal cursor
        page = await feed.read(cursor)
        got.extend(e.event_id for e in page)
        cursor = page[-1].cursor

    early, late, _ = await commit_out_of_id_order(engine, a, b, read_page)
    page = await feed.read(cursor)
    got += [e.event_id for e in page]
    assert got == [late, early]  # commit order, each once
    assert await feed.read(page[-1].cursor) == []


async def test_concurrent_transitions_reach_concurrent_readers_once_each(
    engine: AsyncEngine, nodes: NodeRepository
) -> None:
    feed = EventFeed(engine)
    start = max([0, *(e.cursor for e in await feed.read(0, limit=100_000))])
    tenant = f"t{uuid.uuid4().hex[:8]}"
    created = [await launched(nodes, tenant=tenant) for _ in range(12)]
    done = asyncio.Event()

    async def move(node_id: str) -> None:
        for transition in (lifecycle.READY, lifecycle.TERMINATING, lifecycle.TERMINATED):
            await nodes.transition(node_id, transition)

    async def consume() -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        cursor = start
        while True:
            finished = done.is_set()
            page = await feed.read(cursor, where=FeedFilter(tenant=tenant), limit=7)
            out += [(e.node_id, e.type) for e in page]
            if page:
                cursor = page[-1].cursor
            elif finished:
                return out

    readers = [asyncio.create_task(consume()) for _ in range(3)]
    await asyncio.gather(*(move(n.node_id) for n in created))
    done.set()
    results = await asyncio.gather(*readers)

    expected = ["node.launched", "node.ready", "node.terminating", "node.terminated"]
    for result in results:
        assert len(result) == len(set(result)) == 4 * len(created)
        for node in created:
            assert [t for n, t in result if n == node.node_id] == expected


async def test_feed_lines_carry_the_fields_and_filters_apply(
    engine: AsyncEngine, nodes: NodeRepository
) -> None:
    node = await launched(nodes)
    feed = EventFeed(engine)
    [event] = await feed.read(0, where=FeedFilter(node_id=node.node_id))
    assert event.model_dump().keys() == FEED_EVENT_FIELDS
    assert (event.tenant, event.deployment, event.type) == (
        node.tenant,
        node.deployment,
        "node.launched",
    )
    assert (event.from_status, event.to_status) == ("pending", "launching")
    assert event.data["cluster_name"] == node.cluster_name
    assert await feed.read(0, where=FeedFilter(node_id=node.node_id, type="node.ready")) == []
    assert await feed.read(event.cursor, where=FeedFilter(node_id=node.node_id)) == []


async def test_follow_wakes_on_notify_not_on_a_poll(
    engine: AsyncEngine, nodes: NodeRepository
) -> None:
    node = await recorded(nodes)
    feed = EventFeed(engine)
    stream = feed.events(
        0, where=FeedFilter(node_id=node.node_id), follow=True, poll_interval_s=3600
    )
    first = asyncio.ensure_future(anext(stream))
    await asyncio.sleep(0.5)
    assert not first.done()
    await nodes.transition(
        node.node_id,
        lifecycle.LAUNCHING,
    )
    event = await asyncio.wait_for(first, 30)  # the poll would take an hour
    assert event.type == "node.launched"
    await stream.aclose()
