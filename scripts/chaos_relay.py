"""The chaos run's JetStream relay: on in every worker it starts, and the invariant it keeps.

After the kills and restarts, the stream CONTROLPLANE_EVENTS must hold each recorded event
exactly once (keyed by its Nats-Msg-Id, the event id). The stream is deleted when the run
starts: the run's fresh database numbers events from 1 again, and JetStream would drop them as
duplicates of an earlier run's within its duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import nats
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from controlplane.events.nats_publisher import STREAM

NATS_URL = os.environ.get("CHAOS_NATS_URL", "nats://127.0.0.1:4222")
CHECK_NAME = "the JetStream stream holds every event exactly once (relay)"


def relay_env() -> dict[str, str]:
    """What turns the relay on in ``worker.py``."""
    return {"EVENTS_NATS_URL": NATS_URL, "EVENTS_RELAY_POLL_INTERVAL": "500ms"}


async def reset_stream() -> None:
    connection = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    try:
        with contextlib.suppress(NotFoundError):
            await connection.jetstream().delete_stream(STREAM)
    finally:
        await connection.close()


def stream_problems(event_ids: Iterable[int], published: Iterable[int]) -> list[str]:
    """Events missing from the stream, and events stored more than once."""
    counts = Counter(published)
    missing = [f"event {i}: not in the stream" for i in event_ids if counts[i] == 0]
    twice = [f"event {i}: stored {n} times" for i, n in sorted(counts.items()) if n > 1]
    return missing + twice


async def published_ids(jetstream: JetStreamContext) -> list[int]:
    info = await jetstream.stream_info(STREAM)
    if info.state.messages == 0:
        return []
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        message = await jetstream.get_msg(STREAM, seq)
        out.append(int((message.headers or {})["Nats-Msg-Id"]))
    return out


async def relay_check(events: list[dict[str, Any]], timeout_s: float = 120.0) -> dict[str, Any]:
    """Wait (bounded) for the relay to catch up, then compare the stream with ``events``."""
    wanted = [int(e["id"]) for e in events]
    connection = await nats.connect(NATS_URL, connect_timeout=5, max_reconnect_attempts=0)
    try:
        jetstream = connection.jetstream()
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                got = await published_ids(jetstream)
            except NotFoundError:
                got = []
            if set(wanted) <= set(got) or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
    finally:
        await connection.close()
    problems = stream_problems(wanted, got)
    return {"name": CHECK_NAME, "bad": len(problems), "of": len(wanted), "examples": problems[:5]}
