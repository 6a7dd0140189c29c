"""Events out on the real stack: a lifecycle with the relay on, read back from the pull feed
and from the JetStream stream; and the GPU usage of that lifecycle.

The relay runs in the worker as ``worker.py`` runs it (``open_activities`` starts it when
EVENTS_NATS_URL is set). The stream CONTROLPLANE_EVENTS is deleted first: event ids restart in
the session's fresh database, and JetStream would otherwise drop them as duplicates of an
earlier run's.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import nats
import pytest
from nats.js.errors import NotFoundError

from controlplane.config import load_settings
from controlplane.db.engine import create_engine
from controlplane.events.nats_publisher import STREAM, SUBJECT_PREFIX
from controlplane.events.usage import GroupBy, load_usage_inputs, summarise
from controlplane.lifecycle import NodeStatus
from starter.feed import EventStream
from tests.db.test_event_relay import NATS_URL, Stream
from tests.integration.conftest import Stack, new_spec
from worker import create_worker, open_activities

LIFECYCLE = ["node.launched", "node.ready", "node.terminating", "node.terminated"]


@pytest.fixture
async def fresh_stream() -> AsyncIterator[Stream]:
    try:
        connection = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    except (OSError, nats.errors.NoServersError) as exc:
        pytest.fail(f"no NATS server at {NATS_URL} ({exc}); start `nats-server -js`", pytrace=False)
    jetstream = connection.jetstream()
    with contextlib.suppress(NotFoundError):
        await jetstream.delete_stream(STREAM)
    try:
        yield Stream(jetstream, STREAM, SUBJECT_PREFIX)
    finally:
        await connection.close()


@pytest.fixture
async def relaying_worker(stack: Stack, fresh_stream: Stream) -> AsyncIterator[Stack]:
    stack.env.update(EVENTS_NATS_URL=NATS_URL, EVENTS_RELAY_POLL_INTERVAL="500ms")
    stack.settings = load_settings(stack.env)
    async with (
        open_activities(stack.settings) as activities,
        create_worker(stack.client, stack.settings, activities),
    ):
        yield stack


async def published(
    stream: Stream, node_id: str, count: int
) -> list[tuple[str, str, dict[str, Any]]]:
    """The node's messages in the stream, once ``count`` arrived (bounded wait)."""
    for _ in range(120):
        with contextlib.suppress(NotFoundError):
            mine = [m for m in await stream.messages() if m[2]["node_id"] == node_id]
            if len(mine) >= count:
                await asyncio.sleep(1.0)  # anything extra (a duplicate) would arrive by now
                return [m for m in await stream.messages() if m[2]["node_id"] == node_id]
        await asyncio.sleep(0.5)
    raise AssertionError(f"the relay did not publish {count} events of {node_id}")


async def test_lifecycle_events_reach_the_feed_and_the_stream_once_each_in_order(
    relaying_worker: Stack, fresh_stream: Stream
) -> None:
    stack = relaying_worker
    spec = new_spec()
    started = await stack.control.launch_node(spec)
    view = await stack.control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=timedelta(seconds=60)
    )
    assert view.status is NodeStatus.RUNNING
    response = await stack.control.terminate_node(started.workflow_id)
    assert response.status is NodeStatus.TERMINATED

    database_url = stack.settings.database_url or ""
    async with EventStream(database_url) as feed:
        from_feed = [e async for e in feed.events(node_id=spec.node_id)]
    assert [e.type for e in from_feed] == LIFECYCLE

    messages = await published(fresh_stream, spec.node_id, len(LIFECYCLE))
    assert [subject for subject, _, _ in messages] == [
        f"controlplane.nodes.{spec.tenant}.{kind.removeprefix('node.')}" for kind in LIFECYCLE
    ]
    assert [int(msg_id) for _, msg_id, _ in messages] == [e.event_id for e in from_feed]
    assert [body for _, _, body in messages] == [e.model_dump(mode="json") for e in from_feed]

    # The usage of that lifecycle: from node.launched until node.terminated, one A100.
    engine = create_engine(database_url)
    try:
        inputs = await load_usage_inputs(engine, tenant=spec.tenant, end=datetime.now(UTC))
    finally:
        await engine.dispose()
    rows = summarise(inputs, start=None, end=datetime.now(UTC), by=GroupBy.DEPLOYMENT)
    [row] = [r for r in rows if r.group == spec.deployment]
    billed = (from_feed[-1].at - from_feed[0].at).total_seconds()
    assert row.nodes == 1
    assert row.gpu_seconds == pytest.approx(billed * spec.gpu_count)
    assert row.node_hours == pytest.approx(billed / 3600)
    assert row.counting_at_end == 0
    assert 0 < billed < 120
