"""A node whose workflow ended while its row was live (issue 10, path 2), on the real pieces.

An operator's ``temporal workflow terminate`` stands for every way a node workflow can end
early. The reconciler must find the row (its owner workflow is not running) and recover it,
adopting the node or tearing it down (RECONCILE_RECOVER_LIVE); TerminateClusterWorkflow must
down such a cluster itself instead of signalling the dead workflow.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest

from controlplane.config import load_settings
from controlplane.db.engine import create_engine
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import NodeStatus
from starter.api import ControlPlane
from tests.integration.conftest import Stack, new_spec
from worker import create_worker, open_activities
from workflows.models import ReconcileInput, ReconcileReport
from workflows.reconcile import ReconcileWorkflow

WAIT = timedelta(seconds=60)


@contextlib.asynccontextmanager
async def recovering_worker(stack: Stack, mode: str) -> AsyncIterator[ControlPlane]:
    """A worker wired as worker.py wires it: the reconciler can describe workflows."""
    queue = f"rv-{uuid.uuid4().hex[:8]}"
    settings = load_settings(
        {**stack.env, "TEMPORAL_TASK_QUEUE": queue, "RECONCILE_RECOVER_LIVE": mode}
    )
    async with open_activities(settings) as activities:
        activities.reconcile.temporal = stack.client
        async with create_worker(stack.client, settings, activities):
            yield ControlPlane(stack.client, queue)


async def row_status(stack: Stack, node_id: str) -> NodeStatus | None:
    engine = create_engine(stack.settings.database_url or "")
    try:
        row = await NodeRepository(engine).get(node_id)
    finally:
        await engine.dispose()
    return NodeStatus(row.status) if row else None


async def row_cluster(stack: Stack, node_id: str) -> str:
    engine = create_engine(stack.settings.database_url or "")
    try:
        row = await NodeRepository(engine).get(node_id)
    finally:
        await engine.dispose()
    assert row is not None
    return row.cluster_name


async def running_node_whose_workflow_is_terminated(control: ControlPlane) -> tuple[str, str]:
    spec = new_spec()
    started = await control.launch_node(spec)
    view = await control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT
    )
    assert view.status is NodeStatus.RUNNING, view
    await control.client.get_workflow_handle(started.workflow_id).terminate("operator")
    return started.workflow_id, spec.node_id


@pytest.mark.parametrize("mode", ["adopt", "teardown"])
async def test_reconciler_recovers_a_live_row_whose_workflow_ended(stack: Stack, mode: str) -> None:
    async with recovering_worker(stack, mode) as control:
        workflow_id, node_id = await running_node_whose_workflow_is_terminated(control)
        report: ReconcileReport = await control.client.execute_workflow(
            ReconcileWorkflow.run,
            ReconcileInput(cleanup=False),
            id=f"reconcile-{uuid.uuid4().hex[:8]}",
            task_queue=control.task_queue,
            execution_timeout=WAIT,
        )
        assert workflow_id in report.recovered
        assert [f.node_id for f in report.unowned if f.node_id == node_id] == [node_id]
        if mode == "adopt":
            view = await control.wait_for_node(
                workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT
            )
            assert view.status is NodeStatus.RUNNING
            assert stack.simulator.cluster_status(view.cluster_name or "") == "UP"
            answer = await control.terminate_node(workflow_id)
            assert answer.status is NodeStatus.TERMINATED
        else:
            result = await control.client.get_workflow_handle(workflow_id).result()
            assert result["status"] == NodeStatus.TERMINATED.value
            assert stack.simulator.cluster_status(result["cluster_name"]) is None
    assert await row_status(stack, node_id) is NodeStatus.TERMINATED


async def test_terminate_cluster_downs_it_when_the_owner_workflow_is_gone(stack: Stack) -> None:
    async with recovering_worker(stack, "adopt") as control:
        _workflow_id, node_id = await running_node_whose_workflow_is_terminated(control)
        cluster_name = await row_cluster(stack, node_id)
        assert stack.simulator.cluster_status(cluster_name) == "UP"
        result = await control.terminate_cluster(cluster_name, wait=WAIT)
    assert result is not None
    assert result.delegated_to is None
    assert stack.simulator.cluster_status(cluster_name) is None
    assert await row_status(stack, node_id) is NodeStatus.TERMINATED
