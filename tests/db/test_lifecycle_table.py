"""The repository and the migrated schema follow controlplane/lifecycle.py's state machine."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.db.repository import InvalidTransition, NodeRepository
from controlplane.lifecycle import (
    DEADLINE_STATUSES,
    TRANSITIONS,
    EventType,
    LaunchMode,
    NodeStatus,
    Transition,
)
from tests.db.test_repository import new_node


def _paths() -> dict[NodeStatus, list[Transition]]:
    """The shortest walk of named transitions from pending to each status."""
    paths: dict[NodeStatus, list[Transition]] = {NodeStatus.PENDING: []}
    frontier = [NodeStatus.PENDING]
    while frontier:
        status = frontier.pop(0)
        for t in TRANSITIONS.values():
            if status in t.allowed_from and t.target not in paths:
                paths[t.target] = [*paths[status], t]
                frontier.append(t.target)
    return paths


PATHS = _paths()


async def _row_in(nodes: NodeRepository, status: NodeStatus) -> str:
    node = new_node()
    await nodes.record_intent(node)
    for step in PATHS[status]:
        assert (await nodes.transition(node.node_id, step)).applied
    return node.node_id


def test_every_status_has_a_path() -> None:
    assert set(PATHS) == set(NodeStatus)


@pytest.mark.parametrize("transition", list(TRANSITIONS.values()), ids=list(TRANSITIONS))
async def test_a_transition_is_made_from_its_allowed_statuses_and_refused_from_others(
    nodes: NodeRepository, transition: Transition
) -> None:
    for status in NodeStatus:
        node_id = await _row_in(nodes, status)
        before, events = await nodes.get(node_id), await nodes.events(node_id)
        key = f"{node_id}:{transition.name}:check"
        if transition.allows(status):  # a row already in the target is not refused either
            result = await nodes.transition(node_id, transition, dedupe_key=key)
            assert result.applied, status
            assert result.row.status == transition.target
            assert result.event is not None
            assert (result.event.event_type, result.event.from_status) == (
                transition.event.value,
                status.value,
            )
            continue
        with pytest.raises(InvalidTransition) as caught:
            await nodes.transition(node_id, transition, dedupe_key=key)
        assert (caught.value.current, caught.value.wanted) == (status, transition.target)
        assert await nodes.get(node_id) == before
        assert await nodes.events(node_id) == events


def _quoted(definition: str) -> list[str]:
    return re.findall(r"'([^']*)'::text", definition)


async def test_the_migrated_checks_allow_exactly_the_lifecycles_values(
    engine: AsyncEngine,
) -> None:
    """Migrations are written by hand: their checks must list what lifecycle.py defines."""
    async with engine.connect() as connection:
        checks: dict[str, str] = dict(
            (
                await connection.execute(
                    text(
                        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE conname IN ('ck_nodes_status', 'ck_nodes_launch_mode', "
                        "'ck_node_events_event_type')"
                    )
                )
            ).all()
        )
        index = (
            await connection.execute(text("SELECT pg_get_indexdef('ix_nodes_deadline'::regclass)"))
        ).scalar_one()
    assert sorted(_quoted(checks["ck_nodes_status"])) == sorted(NodeStatus)
    assert sorted(_quoted(checks["ck_nodes_launch_mode"])) == sorted(LaunchMode)
    assert sorted(_quoted(checks["ck_node_events_event_type"])) == sorted(EventType)
    assert sorted(_quoted(index.split(" WHERE ", 1)[1])) == sorted(DEADLINE_STATUSES)
