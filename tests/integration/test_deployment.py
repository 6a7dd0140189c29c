"""DeploymentWorkflow end to end: launch 2 replicas, scale to 3, scale to 1, terminate."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from contextlib import suppress

from temporalio.service import RPCError

from controlplane.config import load_settings
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer
from starter.api import ControlPlane
from tests.integration.conftest import SIM_TOKEN, Stack
from tests.support.specs import deployment_spec
from worker import create_worker, open_activities
from workflows.deployment import DeploymentWorkflow
from workflows.models import DeploymentSpec, DeploymentView


def new_deployment() -> DeploymentSpec:
    return deployment_spec(name=f"it-{uuid.uuid4().hex[:8]}")


def statuses(view: DeploymentView) -> dict[int, NodeStatus]:
    return {replica.replica: replica.status for replica in view.replicas}


async def wait_deployment(
    control: ControlPlane,
    workflow_id: str,
    done: Callable[[DeploymentView], bool],
    what: str,
    timeout: float = 30.0,
) -> DeploymentView:
    deadline = time.monotonic() + timeout
    view = await control.deployment_status(workflow_id)
    while not done(view):
        if time.monotonic() > deadline:
            raise AssertionError(f"{workflow_id}: not {what} within {timeout}s: {statuses(view)}")
        await asyncio.sleep(0.3)
        view = await control.deployment_status(workflow_id)
    return view


async def test_deployment_launch_scale_and_terminate(worker: Stack, repo: NodeRepository) -> None:
    control = worker.control
    sim = worker.simulator
    spec = new_deployment()
    workflow_id = await control.launch_deployment(spec, 2, launch_mode=LaunchMode.API)

    # --- 2 replicas running -------------------------------------------------------------------
    view = await wait_deployment(
        control,
        workflow_id,
        lambda v: statuses(v) == {0: NodeStatus.RUNNING, 1: NodeStatus.RUNNING},
        "2 replicas running",
    )
    assert view.desired_replicas == 2
    assert not view.terminating
    for item in view.replicas:
        # A deployment's generation (new for a reused name) is part of its nodes' identity.
        node = spec.node(item.replica, generation=view.generation)
        assert item.cluster_name == node.cluster_name
        assert item.workflow_id == f"node-{node.node_id}"
        assert item.endpoint
        assert item.cluster_name in item.endpoint

    # --- scale to 3 ---------------------------------------------------------------------------
    scaled = await control.scale_deployment(workflow_id, 3)
    assert scaled.desired_replicas == 3
    assert sorted(statuses(scaled)) == [0, 1, 2]
    view = await wait_deployment(
        control,
        workflow_id,
        lambda v: statuses(v) == dict.fromkeys(range(3), NodeStatus.RUNNING),
        "3 replicas running",
    )
    clusters = {item.replica: item.cluster_name for item in view.replicas}
    assert len(set(clusters.values())) == 3
    live = sim.counters()["live_clusters"]
    assert all(name in live for name in clusters.values()), (clusters, live)

    # --- scale to 1: the two newest replicas go ------------------------------------------------
    scaled = await control.scale_deployment(workflow_id, 1)
    assert scaled.desired_replicas == 1
    view = await wait_deployment(
        control,
        workflow_id,
        lambda v: (
            statuses(v)
            == {0: NodeStatus.RUNNING, 1: NodeStatus.TERMINATED, 2: NodeStatus.TERMINATED}
        ),
        "scaled down to replica 0",
    )
    live = sim.counters()["live_clusters"]
    assert clusters[0] in live
    assert clusters[1] not in live
    assert clusters[2] not in live
    for replica in (1, 2):
        row = await repo.get(spec.node(replica, generation=view.generation).node_id)
        assert row is not None
        assert row.status == NodeStatus.TERMINATED.value
    row = await repo.get(spec.node(0, generation=view.generation).node_id)
    assert row is not None
    assert row.status == NodeStatus.RUNNING.value

    # --- terminate ----------------------------------------------------------------------------
    final = await control.terminate_deployment(workflow_id)
    assert final.terminating
    assert final.desired_replicas == 0
    assert all(item.status.final for item in final.replicas), statuses(final)
    handle = worker.client.get_workflow_handle_for(DeploymentWorkflow.run, workflow_id)
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert statuses(result) == dict.fromkeys(range(3), NodeStatus.TERMINATED)

    live = sim.counters()["live_clusters"]
    assert not [name for name in clusters.values() if name in live], live
    launches = sim.counters()["launch_requests"]
    assert [launches.get(name) for name in clusters.values()] == [1, 1, 1]
    for replica in range(3):
        node_id = spec.node(replica, generation=result.generation).node_id
        row = await repo.get(node_id)
        assert row is not None
        assert row.status == NodeStatus.TERMINATED.value
        events = [event.event_type for event in await repo.events(node_id)]
        assert events == ["node.launched", "node.ready", "node.terminating", "node.terminated"]


async def test_scale_down_while_launching_tears_the_dropped_replica_down(stack: Stack) -> None:
    # Launches take 3 s; the heartbeat timeout is the product default (30 s, so heartbeats are
    # flushed every 24 s): a cancel requested mid-wait reaches the activity only after it ended.
    async with SimulatorServer(
        SimConfig(
            port=0,
            launch_delay_s=3.0,
            model_warmup_s=0.3,
            down_delay_s=0.2,
            service_account_tokens=[SIM_TOKEN],
        )
    ) as sim:
        settings = load_settings(
            {**stack.env, "SKYPILOT_API_SERVER_URL": sim.url, "NODE_HEARTBEAT_TIMEOUT": "30s"}
        )
        control = stack.control
        spec = new_deployment()
        workflow_id = ""
        replicas: list[str] = []
        async with (
            open_activities(settings) as activities,
            create_worker(stack.client, settings, activities),
        ):
            try:
                workflow_id = await control.launch_deployment(spec, 2, launch_mode=LaunchMode.API)
                launching = await wait_deployment(
                    control,
                    workflow_id,
                    lambda v: statuses(v) == dict.fromkeys(range(2), NodeStatus.LAUNCHING),
                    "2 replicas launching",
                )
                dropped = spec.node(1, generation=launching.generation)
                replicas = [r.workflow_id for r in launching.replicas]
                await asyncio.sleep(0.5)  # both replicas are inside wait_ready now
                assert sim.cluster_status(dropped.cluster_name) == "INIT"
                await control.scale_deployment(workflow_id, 1)

                view = await wait_deployment(
                    control,
                    workflow_id,
                    lambda v: statuses(v)[1].final,
                    "replica 1 final after the scale-down",
                    timeout=15,
                )
                assert statuses(view)[0] is NodeStatus.RUNNING
                assert sim.cluster_status(dropped.cluster_name) is None
            finally:
                if workflow_id:  # leave nothing running in the session's Temporal server
                    replicas = [f"node-{spec.node(r).node_id}" for r in range(2)]
                    for wid in (workflow_id, *replicas):
                        with suppress(RPCError):
                            await stack.client.get_workflow_handle(wid).terminate("test over")
