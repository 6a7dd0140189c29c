"""API mode reads a launch's log only for a launch still going after ``log_after_s``.

The progress reporter tells nothing of an activity's first second (activities/progress.py), so
a stream opened for a launch that is over by then was an HTTP request for lines nobody would
be told. The log is read from its start, so a launch that does outlast it loses no line.
"""

from __future__ import annotations

import asyncio

import httpx

from controlplane.skypilot.backend import ApiBackend
from controlplane.skypilot.client import SkyPilotClient

LOG = "⚙︎ Launching on AWS us-east-1 (us-east-1a) (A100:1).\n└── Instance is up.\n"


class LaunchServer:
    """``/api/get`` answers SUCCEEDED after ``takes_s``; ``/api/stream`` serves the log."""

    def __init__(self, takes_s: float) -> None:
        self.takes_s = takes_s
        self.streams = 0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/stream":
            self.streams += 1
            return httpx.Response(200, text=LOG, headers={"content-type": "text/plain"})
        if request.url.path == "/api/get":
            await asyncio.sleep(self.takes_s)
            row = {
                "request_id": "req-1",
                "name": "sky.launch",
                "status": "SUCCEEDED",
                "return_value": "[]",
                "error": "null",
                "created_at": 0.0,
                "cluster_name": "c1",
            }
            return httpx.Response(200, json=row)
        return httpx.Response(404, json={"detail": "Not Found"})


async def follow(takes_s: float, log_after_s: float) -> tuple[list[str], int]:
    server = LaunchServer(takes_s)
    lines: list[str] = []
    transport = httpx.MockTransport(server.handler)
    async with SkyPilotClient("http://sky.test", transport=transport) as client:
        await ApiBackend(client).wait_launched(
            "c1", "req-1", timeout=10, on_line=lines.append, log_after_s=log_after_s
        )
    return lines, server.streams


async def test_a_launch_over_before_log_after_s_opens_no_stream() -> None:
    lines, streams = await follow(takes_s=0.0, log_after_s=1.0)
    assert streams == 0
    assert lines == []


async def test_a_launch_still_going_reads_its_whole_log() -> None:
    lines, streams = await follow(takes_s=0.5, log_after_s=0.1)
    assert streams == 1
    assert [line.strip() for line in lines] == [line.strip() for line in LOG.splitlines()]


async def test_log_after_zero_reads_the_log_at_once() -> None:
    _, streams = await follow(takes_s=0.0, log_after_s=0.0)
    assert streams == 1
