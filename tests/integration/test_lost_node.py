"""A running node whose cluster vanishes (spot preemption) is recorded lost after the fleet
sweep (one cluster list for every node) tells its workflow to look."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from tests.integration.conftest import Stack
from tests.support.fleet import sweeping
from tests.support.specs import new_spec
from workflows.node import NodeWorkflow

# The sweep runs every 2 s here (NODE_HEALTH_CHECK_INTERVAL in the stack): a few sweeps, plus
# the node's own confirmation.
LOST_WITHIN_S = 12.0


async def test_preempted_cluster_marks_running_node_lost(
    worker: Stack, repo: NodeRepository
) -> None:
    assert worker.settings.node_health_check_interval == timedelta(seconds=2)
    spec = new_spec()
    control = worker.control
    started = await control.launch_node(spec, launch_mode=LaunchMode.API)
    view = await control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=timedelta(seconds=30)
    )
    assert view.status is NodeStatus.RUNNING

    assert worker.simulator.preempt(spec.cluster_name)
    preempted_at = time.monotonic()

    handle = worker.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
    async with sweeping(worker.client, worker.settings.temporal_task_queue, every=2.0):
        result = await asyncio.wait_for(handle.result(), timeout=LOST_WITHIN_S)
    assert time.monotonic() - preempted_at < LOST_WITHIN_S
    assert result.status is NodeStatus.LOST
    assert result.error is not None
    assert "TERMINATED" in result.error

    row = await repo.get(spec.node_id)
    assert row is not None
    assert row.status == NodeStatus.LOST.value
    assert row.error == result.error
    events = await repo.events(spec.node_id)
    assert [event.event_type for event in events] == ["node.launched", "node.ready", "node.lost"]
    assert events[-1].payload.get("error") == result.error
    assert spec.cluster_name not in worker.simulator.counters()["live_clusters"]
    assert worker.simulator.counters()["launch_requests"][spec.cluster_name] == 1
