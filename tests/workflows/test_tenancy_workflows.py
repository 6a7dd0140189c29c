"""The tenant boundary inside the workflows, on the time-skipping server with fake activities.

TerminateClusterWorkflow asked for a tenant refuses any cluster that is not one of that
tenant's nodes, before it signals or downs anything; DeploymentWorkflow starts its replicas
under ids that carry the whole node id, and shows the cluster name the worker chose.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from controlplane.lifecycle import LaunchMode, NodeStatus
from tests.support.specs import deployment_spec
from tests.workflows.fakes import FakeActivities, Row
from tests.workflows.test_node_workflow import SPEC, start, wait_status
from tests.workflows.workers import ALL_WORKFLOWS, running_worker, start_deployment
from workflows.deployment import DeploymentWorkflow, legacy_node_workflow_id
from workflows.models import (
    DeploymentInput,
    DeploymentView,
    NodePlan,
    NodeState,
    NodeWorkflowInput,
    TerminateClusterInput,
    TerminateClusterResult,
    TerminateDeploymentRequest,
    TerminateNodeRequest,
)
from workflows.node import NodeWorkflow
from workflows.terminate import TerminateClusterWorkflow


async def terminate_cluster(
    env: WorkflowEnvironment, task_queue: str, name: str, tenant: str | None
) -> TerminateClusterResult:
    return await env.client.execute_workflow(
        TerminateClusterWorkflow.run,
        TerminateClusterInput(cluster_name=name, tenant=tenant),
        id=f"terminate-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


async def test_a_tenant_cannot_terminate_another_tenants_cluster(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    async with running_worker(env, task_queue, fakes, ALL_WORKFLOWS):
        node = await start(env, task_queue)  # tenant "acme"
        await wait_status(node, NodeStatus.RUNNING)

        # Without time skipping: the refusal needs no timer, and skipping ahead while it runs
        # would race the running node through its continue-as-new timers.
        with env.auto_time_skipping_disabled(), pytest.raises(WorkflowFailureError) as refused:
            await terminate_cluster(env, task_queue, SPEC.cluster_name, tenant="globex")
        cause = refused.value.cause
        assert isinstance(cause, ApplicationError)
        assert cause.type == "ClusterNotFound"
        said = str(cause).replace(SPEC.cluster_name, "<the name asked for>")
        assert "acme" not in said
        assert SPEC.node_id not in said
        assert node.id not in said
        assert fakes.calls["down_cluster"] == []
        assert (await node.query(NodeWorkflow.status)).status is NodeStatus.RUNNING

        done = await terminate_cluster(env, task_queue, SPEC.cluster_name, tenant="acme")
        assert done.delegated_to == node.id
        assert (await node.result()).status is NodeStatus.TERMINATED


async def test_a_tenant_cannot_terminate_a_cluster_nobody_recorded(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    fakes.rows["ended"] = Row(
        node_id="ended",
        cluster_name="cpn-acme-ended-0",
        workflow_id="node-ended",
        launch_mode=LaunchMode.API,
        status=NodeStatus.CLEANUP_FAILED,
        tenant="acme",
    )
    async with running_worker(env, task_queue, fakes, ALL_WORKFLOWS):
        with pytest.raises(WorkflowFailureError) as refused:
            await terminate_cluster(env, task_queue, "cpn-unrecorded-0", tenant="acme")
        assert isinstance(refused.value.cause, ApplicationError)
        assert refused.value.cause.type == "ClusterNotFound"
        assert fakes.calls["down_cluster"] == []

        # The tenant's own cleanup_failed cluster is downed and its row finished.
        done = await terminate_cluster(env, task_queue, "cpn-acme-ended-0", tenant="acme")
        assert done.node_id == "ended"
        assert fakes.rows["ended"].status is NodeStatus.TERMINATED
        # Without a tenant (an operator), any cluster is downed, as before.
        await terminate_cluster(env, task_queue, "cpn-unrecorded-0", tenant=None)
    assert [c.cluster_name for c in fakes.calls["down_cluster"]] == [
        "cpn-acme-ended-0",
        "cpn-unrecorded-0",
    ]


async def test_deployment_replicas_get_full_node_id_workflow_ids(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    deployment = deployment_spec(model="org/llama", name="blue")
    async with running_worker(env, task_queue, fakes, ALL_WORKFLOWS):
        handle = await start_deployment(
            env,
            task_queue,
            DeploymentInput(deployment=deployment, replicas=2),
            id=f"deployment-{uuid.uuid4().hex[:8]}",
        )

        async def running() -> DeploymentView:
            for _ in range(400):
                view = await handle.query(DeploymentWorkflow.status)
                if len(view.replicas) == 2 and all(
                    r.status is NodeStatus.RUNNING for r in view.replicas
                ):
                    return view
                await asyncio.sleep(0.05)
            raise AssertionError("replicas never ran")

        view = await running()
        for replica in view.replicas:
            spec = deployment.node(replica.replica, generation=view.generation)
            assert replica.workflow_id == f"node-{spec.node_id}"
            assert replica.cluster_name == fakes.rows[spec.node_id].cluster_name
        await handle.execute_update(DeploymentWorkflow.terminate, TerminateDeploymentRequest())
        await handle.result()


async def test_a_resumed_node_keeps_the_cluster_name_in_its_plan(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """Continue-as-new carries the plan: a node named under the old scheme is never renamed."""
    fakes = FakeActivities()
    plan = NodePlan(
        node_id=SPEC.node_id,
        cluster_name=SPEC.legacy_cluster_name,
        launch_mode=LaunchMode.API,
        **fakes.plan_args,
    )
    fakes.rows[SPEC.node_id] = Row(
        node_id=SPEC.node_id,
        cluster_name=SPEC.legacy_cluster_name,
        workflow_id=legacy_node_workflow_id(SPEC),
        launch_mode=LaunchMode.API,
        status=NodeStatus.RUNNING,
        tenant=SPEC.tenant,
    )
    async with running_worker(env, task_queue, fakes, ALL_WORKFLOWS):
        handle = await env.client.start_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(spec=SPEC, resume=NodeState(plan=plan, status=NodeStatus.RUNNING)),
            id=legacy_node_workflow_id(SPEC),
            task_queue=task_queue,
        )
        view = await handle.query(NodeWorkflow.status)
        assert view.cluster_name == SPEC.legacy_cluster_name
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        await handle.result()
    assert fakes.calls["record_intent"] == []
    assert [c.cluster_name for c in fakes.calls["down_cluster"]] == [SPEC.legacy_cluster_name]
