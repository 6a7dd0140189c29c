"""Node rows in a given state, written through the repository as the workflow writes them."""

from __future__ import annotations

import uuid

from controlplane import lifecycle
from controlplane.db.repository import NewNode, NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from tests.support.specs import node_spec


async def serving_node(nodes: NodeRepository, endpoint: str | None = "m:1") -> NewNode:
    """A node of a tenant of its own, recorded, launched and running with ``endpoint``."""
    spec = node_spec(tenant=f"t{uuid.uuid4().hex[:8]}", model="org/model")
    node = NewNode.from_spec(spec, launch_mode=LaunchMode.API, workflow_id=f"node-{spec.node_id}")
    await nodes.record_intent(node)
    for transition in (lifecycle.LAUNCHING, lifecycle.READY):
        await nodes.transition(node.node_id, transition, endpoint=endpoint)
    return node


async def assert_terminated_cleanly(nodes: NodeRepository, node_id: str) -> None:
    """The node's row is terminated, after exactly one launch, ready, terminating, terminated."""
    row = await nodes.get(node_id)
    assert row is not None
    assert row.status == NodeStatus.TERMINATED.value
    events = [event.event_type for event in await nodes.events(node_id)]
    assert events == ["node.launched", "node.ready", "node.terminating", "node.terminated"]
