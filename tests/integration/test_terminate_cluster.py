"""ControlPlane.terminate_cluster (TerminateClusterWorkflow): foreign clusters and owned ones."""

from __future__ import annotations

import uuid
from datetime import timedelta

from pydantic import SecretStr

from controlplane import lifecycle
from controlplane.db.repository import NewNode, NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.task import TaskSettings, build_task
from tests.integration.conftest import SIM_TOKEN, Stack, new_spec
from workflows.node import NodeWorkflow

WAIT = timedelta(seconds=30)


async def launch_directly(url: str, cluster_name: str) -> None:
    """Launch a cluster straight on the API server, bypassing this system entirely."""
    async with SkyPilotClient(url, token=SecretStr(SIM_TOKEN)) as sky:
        task = build_task(new_spec(), TaskSettings("http://localhost:8080", "0.11.0", "2.8.0"))
        request_id = await sky.launch(cluster_name, task)
        await sky.wait_for_request(request_id, timeout=30)


async def test_foreign_cluster_is_downed_and_unknown_one_is_already_gone(
    worker: Stack, repo: NodeRepository
) -> None:
    sim = worker.simulator
    name = f"ext-{uuid.uuid4().hex[:8]}"
    # Launched straight on the API server, not by this system: no row, no workflow.
    await launch_directly(sim.url, name)
    assert sim.cluster_status(name) == "UP"
    assert await repo.get_by_cluster(name) is None

    result = await worker.control.terminate_cluster(name, wait=WAIT)
    assert result is not None, "still terminating after the wait"
    assert result.cluster_name == name
    assert result.already_gone is False
    assert result.delegated_to is None
    assert result.node_id is None
    assert result.launch_mode is LaunchMode.API
    assert sim.cluster_status(name) is None
    assert name not in sim.counters()["live_clusters"]

    # Terminating it again (a new run of the same workflow id) finds nothing to down.
    again = await worker.control.terminate_cluster(name, wait=WAIT)
    assert again is not None
    assert again.already_gone is True

    unknown = f"ext-{uuid.uuid4().hex[:8]}"
    result = await worker.control.terminate_cluster(unknown, wait=WAIT)
    assert result is not None
    assert result.cluster_name == unknown
    assert result.already_gone is True
    assert result.delegated_to is None
    assert unknown not in sim.counters()["launch_requests"]


async def test_cluster_of_running_node_is_delegated_to_its_workflow(
    worker: Stack, repo: NodeRepository
) -> None:
    control = worker.control
    spec = new_spec()
    started = await control.launch_node(spec, launch_mode=LaunchMode.API)
    view = await control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=timedelta(seconds=30)
    )
    assert view.status is NodeStatus.RUNNING

    result = await control.terminate_cluster(spec.cluster_name, wait=WAIT)
    assert result is not None
    assert result.delegated_to == started.workflow_id
    assert result.node_id == spec.node_id
    assert result.launch_mode is LaunchMode.API
    assert result.already_gone is False

    handle = worker.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
    final = await handle.result()
    assert final.status is NodeStatus.TERMINATED
    assert spec.cluster_name not in worker.simulator.counters()["live_clusters"]
    assert worker.simulator.counters()["launch_requests"][spec.cluster_name] == 1
    row = await repo.get(spec.node_id)
    assert row is not None
    assert row.status == NodeStatus.TERMINATED.value
    events = [event.event_type for event in await repo.events(spec.node_id)]
    assert events == ["node.launched", "node.ready", "node.terminating", "node.terminated"]


async def test_cluster_left_by_cleanup_failed_node_is_downed(
    worker: Stack, repo: NodeRepository
) -> None:
    sim = worker.simulator
    spec = new_spec()
    # The state a teardown that was never confirmed leaves: the row says cleanup_failed (no
    # live workflow owns it) and the cluster is still up, costing money.
    await repo.record_intent(
        NewNode.from_spec(spec, launch_mode=LaunchMode.API, workflow_id=f"node-{spec.cluster_name}")
    )
    await repo.transition(
        spec.node_id,
        lifecycle.CLEANUP_FAILED,
        error="teardown not confirmed: API server unreachable",
    )
    await launch_directly(sim.url, spec.cluster_name)
    assert sim.cluster_status(spec.cluster_name) == "UP"

    try:
        result = await worker.control.terminate_cluster(spec.cluster_name, wait=WAIT)
        assert result is not None
        assert result.already_gone is False
        assert result.delegated_to is None
        assert sim.cluster_status(spec.cluster_name) is None
    finally:
        # Whatever the outcome, leave no cluster behind in the session's simulator.
        async with SkyPilotClient(sim.url, token=SecretStr(SIM_TOKEN)) as sky:
            await sky.terminate(spec.cluster_name, timeout=30)
