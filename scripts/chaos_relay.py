"""The chaos run's JetStream relay: on in every worker it starts, and the invariant it keeps.

After the kills and restarts, the stream CONTROLPLANE_EVENTS must hold each recorded event
exactly once (keyed by its Nats-Msg-Id, the event id). The run starts a NATS server of its own
(``nats-server -js`` on a free loopback port, its store in the run's directory) when one is on
PATH: the shared one at CHAOS_NATS_URL (default 127.0.0.1:4222) holds the same stream for the
relay's tests, which delete and refill it while a long run goes on. With the shared one, the
stream is deleted when the run starts: the run's fresh database numbers events from 1 again, and
JetStream would drop them as duplicates of an earlier run's within its duplicate window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nats
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from controlplane.events.nats_publisher import STREAM
from devtools.devstack import Process, free_port, port_open, spawn

NATS_URL = os.environ.get("CHAOS_NATS_URL", "nats://127.0.0.1:4222")
CHECK_NAME = "the JetStream stream holds every event exactly once (relay)"


def start_private_nats(home: Path) -> tuple[Process | None, str]:
    """A NATS server with JetStream for this run only, or (None, the shared URL) without one."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        return None, NATS_URL
    port = free_port()
    argv = [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(home / "nats")]
    process = spawn("nats", argv, home / "nats.log")
    deadline = time.monotonic() + 30
    while not port_open(port):
        if process.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"nats-server did not start\n{(home / 'nats.log').read_text()}")
        time.sleep(0.05)
    return process, f"nats://127.0.0.1:{port}"


def relay_env(url: str) -> dict[str, str]:
    """What turns the relay on in ``worker.py``."""
    return {"EVENTS_NATS_URL": url, "EVENTS_RELAY_POLL_INTERVAL": "500ms"}


async def reset_stream(url: str) -> None:
    connection = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
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


async def relay_check(
    url: str, events: list[dict[str, Any]], timeout_s: float = 120.0
) -> dict[str, Any]:
    """Wait (bounded) for the relay to catch up, then compare the stream with ``events``."""
    wanted = [int(e["id"]) for e in events]
    connection = await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0)
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
