"""Publishing feed events to NATS JetStream, de-duplicated by event id.

Stream ``CONTROLPLANE_EVENTS`` on ``controlplane.nodes.>``; each event goes to
``controlplane.nodes.<tenant>.<type without "node.">`` with its feed JSON as the body and
``Nats-Msg-Id: <event id>``, so a republish after a crash is dropped by JetStream's
de-duplication (within the stream's duplicate window) instead of stored twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Final

import nats
from nats.aio.client import Client as NatsClient
from nats.js.api import StreamConfig
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from controlplane.events.feed import FeedEvent

STREAM: Final = "CONTROLPLANE_EVENTS"
SUBJECT_PREFIX: Final = "controlplane.nodes"


def subject_for(event: FeedEvent, prefix: str = SUBJECT_PREFIX) -> str:
    """``controlplane.nodes.acme.ready`` (tenant ids are subject-safe: see spec.TenantId)."""
    return f"{prefix}.{event.tenant}.{event.short_type}"


class JetStreamPublisher:
    """Publishes one event at a time and waits for JetStream's ack (so order is kept)."""

    def __init__(
        self,
        connection: NatsClient,
        jetstream: JetStreamContext,
        *,
        stream: str = STREAM,
        subject_prefix: str = SUBJECT_PREFIX,
    ) -> None:
        self.connection = connection
        self.jetstream = jetstream
        self.stream = stream
        self.subject_prefix = subject_prefix

    async def publish(self, event: FeedEvent) -> bool:
        """Publish; True if stored, False if JetStream recognised it as a duplicate."""
        ack = await self.jetstream.publish(
            subject_for(event, self.subject_prefix),
            event.model_dump_json().encode(),
            stream=self.stream,
            headers={"Nats-Msg-Id": str(event.event_id)},
        )
        return not ack.duplicate


async def ensure_stream(
    jetstream: JetStreamContext,
    duplicate_window: timedelta,
    *,
    stream: str = STREAM,
    subject_prefix: str = SUBJECT_PREFIX,
) -> None:
    """Create the stream if it is missing; an existing one is left as its operator set it."""
    try:
        await jetstream.stream_info(stream)
    except NotFoundError:
        await jetstream.add_stream(
            StreamConfig(
                name=stream,
                subjects=[f"{subject_prefix}.>"],
                duplicate_window=duplicate_window.total_seconds(),
            )
        )


@contextlib.asynccontextmanager
async def open_publisher(
    url: str,
    *,
    duplicate_window: timedelta,
    connect_timeout_s: float = 5.0,
    stream: str = STREAM,
    subject_prefix: str = SUBJECT_PREFIX,
) -> AsyncIterator[JetStreamPublisher]:
    """Connect, make sure the stream exists, and drain the connection on the way out."""
    connection = await nats.connect(
        url,
        connect_timeout=connect_timeout_s,
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        name="controlplane-event-relay",
    )
    try:
        jetstream = connection.jetstream()
        await ensure_stream(
            jetstream, duplicate_window, stream=stream, subject_prefix=subject_prefix
        )
        yield JetStreamPublisher(
            connection, jetstream, stream=stream, subject_prefix=subject_prefix
        )
    finally:
        await connection.close()
