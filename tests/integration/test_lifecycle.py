"""A node's whole life on the real pieces, in API mode and in CLI mode."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.db.engine import create_engine
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from tests.integration.conftest import Stack, new_spec
from workflows.node import NodeWorkflow


@pytest.mark.parametrize("mode", [LaunchMode.API, LaunchMode.CLI])
async def test_happy_path(worker: Stack, mode: LaunchMode) -> None:
    spec = new_spec()
    control = worker.control
    started = await control.launch_node(spec, launch_mode=mode)
    view = await control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=timedelta(seconds=60)
    )
    assert view.status is NodeStatus.RUNNING
    assert view.launch_mode is mode
    assert view.endpoint is not None
    assert spec.cluster_name in view.endpoint
    assert spec.cluster_name in worker.simulator.counters()["live_clusters"]

    response = await control.terminate_node(started.workflow_id)
    assert response.status is NodeStatus.TERMINATED
    assert not response.still_terminating
    result = await worker.client.get_workflow_handle_for(
        NodeWorkflow.run, started.workflow_id
    ).result()
    assert result.status is NodeStatus.TERMINATED

    counters = worker.simulator.counters()
    assert counters["launch_requests"][spec.cluster_name] == 1
    assert spec.cluster_name not in counters["live_clusters"]
    engine = create_engine(worker.settings.database_url or "")
    try:
        repo = NodeRepository(engine)
        row = await repo.get(spec.node_id)
        assert row is not None
        assert row.status == "terminated"
        assert row.launch_mode == mode.value
        assert row.endpoint == view.endpoint
        events = [e.event_type for e in await repo.events(spec.node_id)]
    finally:
        await engine.dispose()
    assert events == ["node.launched", "node.ready", "node.terminating", "node.terminated"]
