"""Repair in place on the time-skipping server: an unhealthy model is restarted on its own
cluster (the restart_model activity, SkyPilot exec) before anything is replaced; a standalone
node whose repairs all fail stays unhealthy and keeps its GPU; a deployment replaces it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from controlplane.lifecycle import NodeStatus
from tests.workflows.fakes import FakeActivities
from tests.workflows.test_deployment_controller import deployment_running, running, until
from tests.workflows.test_node_workflow import SPEC, node_at
from workflows.deployment import DeploymentWorkflow
from workflows.fleet_models import ModelHealthSignal
from workflows.models import NodeView, TerminateDeploymentRequest, TerminateNodeRequest
from workflows.node import NodeWorkflow

SICK = ModelHealthSignal(healthy=False, consecutive_failures=3, detail="HTTP 503")


async def wait_view(
    env: WorkflowEnvironment, handle: WorkflowHandle[NodeWorkflow, NodeView], check: object
) -> NodeView:
    assert callable(check)
    for _ in range(300):
        view = await handle.query(NodeWorkflow.status)
        if check(view):
            return view
        await env.sleep(30)
    raise AssertionError(f"never happened; last view {view}")


@asynccontextmanager
async def sick_node(
    env: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[tuple[FakeActivities, WorkflowHandle[NodeWorkflow, NodeView]]]:
    """A running node just told its model is unhealthy (three probes failed)."""
    fakes = FakeActivities()
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        await handle.signal(NodeWorkflow.model_health, SICK)
        yield fakes, handle


async def test_unhealthy_node_is_restarted_in_place(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with sick_node(env, task_queue) as (fakes, handle):
        await wait_view(env, handle, lambda v: v.repairs == 1)
        restart = fakes.calls["restart_model"][0]
        assert restart.cluster_name == SPEC.cluster_name
        await handle.signal(NodeWorkflow.model_health, ModelHealthSignal(healthy=True))
        view = await wait_view(env, handle, lambda v: v.status is NodeStatus.RUNNING)
        assert view.repairs == 1
        assert not view.repair_exhausted
        assert fakes.launches == 1, "repaired in place, not relaunched"
        assert not fakes.calls["down_cluster"], "the cluster (and its GPU) was kept"
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())


async def test_standalone_node_whose_repairs_fail_stays_unhealthy(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with sick_node(env, task_queue) as (fakes, handle):
        view = await wait_view(env, handle, lambda v: v.repair_exhausted)
        assert view.status is NodeStatus.UNHEALTHY
        assert len(fakes.calls["restart_model"]) == 3  # RepairPolicy.attempts
        assert "3 restart(s) in place" in (view.error or "")
        assert not fakes.calls["down_cluster"]
        await env.sleep(3600)
        assert len(fakes.calls["restart_model"]) == 3, "kept restarting after exhaustion"
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())


async def test_replica_repaired_in_place_then_replaced_when_repair_fails(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with deployment_running(env, task_queue, 2) as (fakes, handle, view):
        first, second = (
            env.client.get_workflow_handle_for(NodeWorkflow.run, r.workflow_id)
            for r in view.replicas
        )
        await first.signal(NodeWorkflow.model_health, SICK)
        await wait_view(env, first, lambda v: v.repairs == 1)
        await first.signal(NodeWorkflow.model_health, ModelHealthSignal(healthy=True))
        await until(
            env,
            handle,
            lambda v: "deployment.replica_repaired" in [e.event_type for e in v.recent_events],
            "a repaired event",
        )
        assert fakes.launches == 2, "the repaired replica was not re-provisioned"
        await second.signal(NodeWorkflow.model_health, SICK)  # this one never recovers
        view = await until(
            env,
            handle,
            lambda v: running(2)(v) and v.replicas[1].status.final,
            "the broken replica replaced",
            step=30,
        )
        assert view.replicas[0].status is NodeStatus.RUNNING
        assert view.replicas[0].repairs == 1
        assert fakes.launches == 3
        await asyncio.sleep(0)
        await handle.execute_update(DeploymentWorkflow.terminate, TerminateDeploymentRequest())
        await handle.result()
