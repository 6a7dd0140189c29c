"""`python -m starter events` and `usage` as processes, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from controlplane import lifecycle
from controlplane.db.repository import NodeRepository
from starter.feed import EventStream
from tests.db.test_event_feed import FEED_EVENT_FIELDS
from tests.db.test_repository import launched, recorded
from tests.support.processes import run_text

REPO = Path(__file__).resolve().parents[2]


def environment(database_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "DATABASE_"))}
    env["DATABASE_URL"] = database_url
    env["TEMPORAL_ADDRESS"] = "127.0.0.1:1"  # never needed: these commands read Postgres only
    return env


def starter(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return run_text(
        [sys.executable, "-m", "starter", *args], env=environment(database_url), timeout=120
    )


def lines(result: subprocess.CompletedProcess[str]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


async def run_through(nodes: NodeRepository, node_id: str) -> None:
    for transition in (lifecycle.READY, lifecycle.TERMINATING, lifecycle.TERMINATED):
        await nodes.transition(node_id, transition)


async def test_events_prints_json_lines_and_resumes_from_a_cursor(
    database_url: str, nodes: NodeRepository
) -> None:
    node = await launched(nodes)
    await run_through(nodes, node.node_id)

    first = lines(starter(database_url, "events", "--node", node.node_id))
    assert [line["type"] for line in first] == [
        "node.launched",
        "node.ready",
        "node.terminating",
        "node.terminated",
    ]
    assert set(first[0]) == FEED_EVENT_FIELDS
    assert first[0]["tenant"] == node.tenant
    since = str(first[1]["cursor"])
    rest = lines(starter(database_url, "events", "--node", node.node_id, "--since", since))
    assert rest == first[2:]
    limited = lines(starter(database_url, "events", "--tenant", node.tenant, "--limit", "1"))
    assert limited == first[:1]
    ready = lines(starter(database_url, "events", "--node", node.node_id, "--type", "ready"))
    assert [line["event_id"] for line in ready] == [first[1]["event_id"]]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["events", "--since", "yesterday"], "--since"),
        (["events", "--since", "-3"], "--since"),
        (["events", "--type", "exploded"], "--type"),
        (["events", "--limit", "0"], "--limit"),
        (["usage", "--from", "last tuesday"], "--from"),
        (["usage", "--by", "colour"], "--by"),
        (["usage", "--from", "2026-02-01", "--to", "2026-01-01"], "--from"),
    ],
)
def test_bad_input_is_exit_2_naming_the_option(
    database_url: str, args: list[str], named: str
) -> None:
    result = starter(database_url, *args)
    assert result.returncode == 2, result
    assert named in json.loads(result.stderr)["error"]


async def test_follow_prints_an_event_committed_after_it_started(
    database_url: str, nodes: NodeRepository
) -> None:
    node = await recorded(nodes)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "starter",
        "events",
        "--node",
        node.node_id,
        "--follow",
        "--limit",
        "1",
        cwd=REPO,
        env=environment(database_url),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(2.0)  # let it start and wait
        assert process.returncode is None
        await nodes.transition(
            node.node_id,
            lifecycle.LAUNCHING,
        )
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err
    [line] = [json.loads(text) for text in out.decode().splitlines()]
    assert (line["node_id"], line["type"]) == (node.node_id, "node.launched")


async def test_the_python_api_iterates_with_a_cursor(
    database_url: str, nodes: NodeRepository
) -> None:
    node = await launched(nodes)
    await run_through(nodes, node.node_id)
    async with EventStream(database_url) as stream:
        seen = [e.type async for e in stream.events(node_id=node.node_id, limit=2)]
        assert seen == ["node.launched", "node.ready"]
        resumed = [e.type async for e in stream.events(stream.cursor, node_id=node.node_id)]
    assert resumed == ["node.terminating", "node.terminated"]


async def test_usage_reports_json_for_a_tenant(database_url: str, nodes: NodeRepository) -> None:
    node = await launched(nodes)
    await run_through(nodes, node.node_id)
    result = starter(database_url, "usage", "--tenant", node.tenant, "--by", "gpu_type")
    report = json.loads(result.stdout)
    [row] = report["rows"]
    assert (row["tenant"], row["gpu_type"], row["nodes"]) == (node.tenant, "A100", 1)
    assert row["gpu_seconds"] > 0
    assert row["counting_at_end"] == 0
