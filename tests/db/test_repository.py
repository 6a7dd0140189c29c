"""NodeRepository against a real PostgreSQL: idempotent writes, one event per change, the outbox."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane import lifecycle
from controlplane.db import migrate
from controlplane.db.repository import (
    ClusterNameConflict,
    DedupeKeyConflict,
    InvalidTransition,
    NewNode,
    NodeNotFound,
    NodeRepository,
)
from controlplane.db.schema import Base, node_events, nodes
from controlplane.lifecycle import LaunchMode, NodeStatus
from devtools.devstack import ServerDatabases
from tests.support.processes import run_text
from tests.support.specs import node_spec


def new_node(**overrides: object) -> NewNode:
    spec = node_spec(tenant=f"t{uuid.uuid4().hex[:8]}", model="meta-llama/Llama-3.1-8B-Instruct")
    node = NewNode.from_spec(spec, launch_mode=LaunchMode.API, workflow_id=f"node-{spec.node_id}")
    return node.model_copy(update=overrides)


async def count(engine: AsyncEngine, table_name: str, node_id: str) -> int:
    table = nodes if table_name == "nodes" else node_events
    async with engine.connect() as connection:
        result = await connection.execute(
            select(func.count()).select_from(table).where(table.c.node_id == node_id)
        )
        return int(result.scalar_one())


async def recorded(repo: NodeRepository, **overrides: object) -> NewNode:
    """A ``new_node`` whose intent is recorded (its row PENDING, one event)."""
    node = new_node(**overrides)
    await repo.record_intent(node)
    return node


async def launched(repo: NodeRepository, **overrides: object) -> NewNode:
    node = await recorded(repo, **overrides)
    await repo.transition(
        node.node_id,
        lifecycle.LAUNCHING,
    )
    return node


async def test_record_intent_is_idempotent(nodes: NodeRepository, engine: AsyncEngine) -> None:
    node = new_node()
    first = await nodes.record_intent(node)
    second = await nodes.record_intent(node.model_copy(update={"workflow_id": "someone-else"}))

    assert first.status == NodeStatus.PENDING
    assert second == first  # the existing row, unchanged
    assert second.workflow_id == node.workflow_id
    assert first.spec["model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert await count(engine, "nodes", node.node_id) == 1
    assert await count(engine, "node_events", node.node_id) == 0


async def test_cluster_name_belonging_to_another_node_is_refused(nodes: NodeRepository) -> None:
    first = new_node()
    await nodes.record_intent(first)
    with pytest.raises(ClusterNameConflict, match=first.cluster_name):
        await nodes.record_intent(new_node(cluster_name=first.cluster_name))


async def test_transition_writes_status_fields_and_event(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    node = new_node()
    created = await nodes.record_intent(node)
    deadline = datetime.now(UTC) + timedelta(minutes=10)

    result = await nodes.transition(
        node.node_id,
        lifecycle.LAUNCHING,
        request_id="req-1",
        status_deadline_at=deadline,
        payload={"via_api": True},
    )

    assert result.applied
    row = await nodes.get(node.node_id)
    assert row is not None
    assert row == result.row
    assert row.status == "launching"
    assert row.request_id == "req-1"
    assert row.status_deadline_at == deadline
    assert row.updated_at >= created.updated_at
    assert row.endpoint is None
    assert row.ready_at is None
    events = await nodes.events(node.node_id)
    assert [(e.event_type, e.from_status, e.to_status) for e in events] == [
        ("node.launched", "pending", "launching")
    ]
    assert events[0] == result.event
    assert events[0].dedupe_key == f"{node.node_id}:node.launched"
    assert events[0].payload == {
        "tenant": node.tenant,
        "deployment": node.deployment,
        "replica": node.replica,
        "cluster_name": node.cluster_name,
        "request_id": "req-1",
        "via_api": True,
    }


async def test_transition_sets_only_the_fields_passed(nodes: NodeRepository) -> None:
    node = await launched(nodes)
    await nodes.update_fields(node.node_id, request_id="req-7", error="first attempt failed")

    result = await nodes.transition(
        node.node_id,
        lifecycle.READY,
        endpoint="http://10.0.0.1:8000",
        error=None,  # explicitly cleared
        status_deadline_at=None,
    )

    row = result.row
    assert row.request_id == "req-7"  # not passed: kept
    assert row.error is None
    assert row.endpoint == "http://10.0.0.1:8000"
    assert row.ready_at is not None
    assert row.terminated_at is None


async def test_terminated_sets_terminated_at(nodes: NodeRepository) -> None:
    node = await launched(nodes)
    await nodes.transition(node.node_id, lifecycle.TERMINATING_LAUNCH)
    result = await nodes.transition(node.node_id, lifecycle.TERMINATED)
    assert result.row.terminated_at is not None


async def test_retried_transition_changes_nothing(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    node = await launched(nodes)
    before = await nodes.get(node.node_id)

    again = await nodes.transition(
        node.node_id,
        lifecycle.LAUNCHING,
        request_id="a-retry-must-not-write-this",
    )

    assert not again.applied
    assert again.row == before
    assert again.event is not None
    assert again.event.to_status == "launching"
    assert await count(engine, "node_events", node.node_id) == 1


async def test_invalid_transition_raises_and_writes_nothing(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    node = new_node()
    before = await nodes.record_intent(node)

    with pytest.raises(InvalidTransition) as caught:
        await nodes.transition(
            node.node_id,
            lifecycle.READY,
            endpoint="http://x",
        )

    message = str(caught.value)
    assert node.node_id in message
    assert "'pending'" in message
    assert "'running'" in message
    assert caught.value.current == "pending"
    assert await nodes.get(node.node_id) == before
    assert await count(engine, "node_events", node.node_id) == 0


async def test_unknown_node_raises_not_found(nodes: NodeRepository) -> None:
    with pytest.raises(NodeNotFound):
        await nodes.transition(
            "no-such-node",
            lifecycle.LAUNCHING,
        )
    with pytest.raises(NodeNotFound):
        await nodes.update_fields("no-such-node", request_id="x")


async def test_status_and_event_commit_together(nodes: NodeRepository, engine: AsyncEngine) -> None:
    """The event insert fails after the row update: the update must roll back with it."""
    node = new_node()
    before = await nodes.record_intent(node)

    with pytest.raises(DBAPIError):
        await nodes.transition(
            node.node_id,
            lifecycle.LAUNCHING,
            request_id="req-1",
            payload={"note": "\u0000"},  # PostgreSQL's jsonb rejects NUL characters
        )

    assert await nodes.get(node.node_id) == before
    assert await count(engine, "node_events", node.node_id) == 0


async def test_reused_dedupe_key_is_refused_without_writing(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    node = await launched(nodes)
    before = await nodes.get(node.node_id)

    with pytest.raises(DedupeKeyConflict):
        await nodes.transition(
            node.node_id,
            lifecycle.FAILED,
            dedupe_key=f"{node.node_id}:node.launched",
        )

    assert await nodes.get(node.node_id) == before
    assert await count(engine, "node_events", node.node_id) == 1


async def test_concurrent_identical_transitions_write_one_event(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    node = new_node()
    await nodes.record_intent(node)

    results = await asyncio.gather(
        *(
            nodes.transition(
                node.node_id,
                lifecycle.LAUNCHING,
            )
            for _ in range(2)
        )
    )

    assert sorted(r.applied for r in results) == [False, True]
    assert await count(engine, "node_events", node.node_id) == 1


async def test_concurrent_conflicting_transitions_one_wins(
    nodes: NodeRepository, engine: AsyncEngine
) -> None:
    node = await launched(nodes)

    results = await asyncio.gather(
        # Neither may follow the other (both final; neither's allowed-from has the other).
        nodes.transition(node.node_id, lifecycle.FAILED),
        nodes.transition(node.node_id, lifecycle.CLEANUP_FAILED),
        return_exceptions=True,
    )

    assert sum(isinstance(r, InvalidTransition) for r in results) == 1
    assert await count(engine, "node_events", node.node_id) == 2  # launched + the winner


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE node_events SET payload = '{}'::jsonb WHERE node_id = :node_id",
        "DELETE FROM node_events WHERE node_id = :node_id",
        "TRUNCATE node_events CASCADE",
    ],
)
async def test_events_are_append_only(
    nodes: NodeRepository, engine: AsyncEngine, statement: str
) -> None:
    node = await launched(nodes)

    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as connection:
            await connection.execute(text(statement), {"node_id": node.node_id})

    assert await count(engine, "node_events", node.node_id) == 1


async def test_stuck_finds_rows_past_their_deadline(nodes: NodeRepository) -> None:
    now = datetime.now(UTC)
    past, future = now - timedelta(minutes=1), now + timedelta(minutes=10)
    late = await launched(nodes)
    await nodes.update_fields(late.node_id, status_deadline_at=past)
    on_time = await launched(nodes)
    await nodes.update_fields(on_time.node_id, status_deadline_at=future)
    running = await launched(nodes)
    await nodes.transition(
        running.node_id,
        lifecycle.READY,
        status_deadline_at=past,
    )
    ending = await launched(nodes)
    await nodes.transition(
        ending.node_id,
        lifecycle.TERMINATING_LAUNCH,
        status_deadline_at=past,
    )

    found = {row.node_id for row in await nodes.stuck(now)}

    ours = {late.node_id, on_time.node_id, running.node_id, ending.node_id}
    assert found & ours == {late.node_id, ending.node_id}


async def test_lookups(nodes: NodeRepository) -> None:
    first = await launched(nodes)
    second = new_node(tenant=first.tenant, cluster_name=f"cpn-second-{uuid.uuid4().hex[:8]}")
    await nodes.record_intent(second)

    by_cluster = await nodes.get_by_cluster(first.cluster_name)
    assert by_cluster is not None
    assert by_cluster.node_id == first.node_id
    assert await nodes.get_by_cluster("cpn-nothing-here") is None
    assert await nodes.get("nothing-here") is None
    all_of_tenant = await nodes.list(tenant=first.tenant)
    assert [r.node_id for r in all_of_tenant] == [first.node_id, second.node_id]
    pending = await nodes.list(tenant=first.tenant, statuses=["pending"])
    assert [r.node_id for r in pending] == [second.node_id]
    assert len(await nodes.list(tenant=first.tenant, limit=1)) == 1


async def test_migrated_database_is_at_head_and_matches_schema(
    database_url: str, engine: AsyncEngine
) -> None:
    result = migrate.status(database_url)
    assert result.ok, result.describe()
    assert result.current == (migrate.head_revision(),)

    # compare_metadata skips CHECK constraints and triggers; compare their names directly.
    expected = {
        (table.name, constraint.name)
        for table in Base.metadata.tables.values()
        for constraint in table.constraints
    }
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT conrelid::regclass::text, conname FROM pg_constraint "
                "WHERE conrelid::regclass::text IN ('nodes', 'node_events', 'tenant_credentials', "
                "'node_event_feed', 'event_feed_state', 'model_probes', 'launch_slots', "
                "'deployment_events')"
            )
        )
        actual = {(table, name) for table, name in rows}
        triggers = await connection.execute(
            text(
                "SELECT tgname FROM pg_trigger "
                "WHERE tgrelid = 'node_events'::regclass AND NOT tgisinternal"
            )
        )
        trigger_names = {name for (name,) in triggers}
    assert actual == expected
    assert trigger_names == {
        "node_events_no_update_or_delete",
        "node_events_no_truncate",
        "node_events_notify",
    }


def _db_command(url: str, command: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "DATABASE_"))}
    env["DATABASE_URL"] = url
    return run_text([sys.executable, "-m", "controlplane.db", command], env=env)


async def test_check_command_fails_until_migrated(databases: ServerDatabases) -> None:
    url = await databases.create(migrated=False)

    before = _db_command(url, "check")
    assert before.returncode == 1, before
    assert "migrate" in before.stderr

    migrated = _db_command(url, "migrate")
    assert migrated.returncode == 0, migrated
    assert f"to {migrate.head_revision()}" in migrated.stdout

    after = _db_command(url, "check")
    assert after.returncode == 0, after
    assert "at head" in after.stdout

    again = _db_command(url, "migrate")
    assert again.returncode == 0
    assert "nothing to do" in again.stdout


async def test_downgrade_to_base_and_back(databases: ServerDatabases) -> None:
    url = await databases.create(migrated=True)
    migrate.downgrade(url, "base")
    assert migrate.status(url).current == ()
    migrate.upgrade(url)
    assert migrate.status(url).ok


def test_bad_database_url_exits_2_naming_the_variable() -> None:
    result = _db_command("mysql://user:hunter2@host/db", "migrate")
    assert result.returncode == 2
    assert "DATABASE_URL" in result.stderr
    assert "hunter2" not in result.stderr + result.stdout
