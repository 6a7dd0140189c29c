"""Node rows in a given state, written through the repository as the workflow writes them."""

from __future__ import annotations

import uuid

from controlplane import lifecycle
from controlplane.db.repository import NewNode, NodeRepository
from controlplane.lifecycle import LaunchMode
from tests.support.specs import node_spec


async def serving_node(nodes: NodeRepository, endpoint: str | None = "m:1") -> NewNode:
    """A node of a tenant of its own, recorded, launched and running with ``endpoint``."""
    spec = node_spec(tenant=f"t{uuid.uuid4().hex[:8]}", model="org/model")
    node = NewNode.from_spec(spec, launch_mode=LaunchMode.API, workflow_id=f"node-{spec.node_id}")
    await nodes.record_intent(node)
    for transition in (lifecycle.LAUNCHING, lifecycle.READY):
        await nodes.transition(node.node_id, transition, endpoint=endpoint)
    return node
