"""FleetHealthWorkflow on the time-skipping server with fake activities: it signals only the
changed nodes, survives a failed shard and a node workflow that has ended, and sizes its shards
by the fleet."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from controlplane.lifecycle import NodeStatus
from tests.workflows.fakes import FakeActivities
from tests.workflows.test_node_workflow import SPEC, start, wait_status
from workflows.fleet_health import FleetHealthWorkflow
from workflows.fleet_models import (
    ClusterChange,
    ClusterSweepInput,
    ClusterSweepResult,
    CountServingInput,
    CountServingResult,
    FleetHealthInput,
    ModelChange,
    ModelHealthSignal,
    ProbeShardInput,
    ProbeShardResult,
)
from workflows.node import NodeWorkflow


class FakeFleet:
    def __init__(self, serving: int, changed_cluster: str | None, sick_node: str | None) -> None:
        self.serving = serving
        self.changed_cluster = changed_cluster
        self.sick_node = sick_node
        self.shards: list[ProbeShardInput] = []

    @activity.defn(name="sweep_clusters")
    async def sweep_clusters(self, input: ClusterSweepInput) -> ClusterSweepResult:
        changed = [
            ClusterChange(
                node_id="gone",
                cluster_name="cpn-gone",
                workflow_id="node-cpn-gone",
                cluster_status="TERMINATED",
            )
        ]
        if self.changed_cluster:
            changed.append(
                ClusterChange(
                    node_id=SPEC.node_id,
                    cluster_name=self.changed_cluster,
                    workflow_id=f"node-{self.changed_cluster}",
                    cluster_status="TERMINATED",
                )
            )
        return ClusterSweepResult(
            clusters_listed=5, serving_nodes=self.serving, status_calls=3, changed=changed
        )

    @activity.defn(name="count_serving_nodes")
    async def count_serving_nodes(self, input: CountServingInput) -> CountServingResult:
        return CountServingResult(serving_nodes=self.serving)

    @activity.defn(name="probe_model_shard")
    async def probe_model_shard(self, input: ProbeShardInput) -> ProbeShardResult:
        self.shards.append(input)
        if input.shard == 0:
            raise ApplicationError("database away", non_retryable=True)
        changed = []
        if self.sick_node and input.shard == 1:
            changed.append(
                ModelChange(
                    node_id=SPEC.node_id,
                    cluster_name=SPEC.cluster_name,
                    workflow_id=self.sick_node,
                    signal=ModelHealthSignal(healthy=False, consecutive_failures=3, detail="503"),
                )
            )
        return ProbeShardResult(probed=10, failures=3, changed=changed)

    def all(self) -> list[Any]:
        return [self.sweep_clusters, self.count_serving_nodes, self.probe_model_shard]


async def sweep(env: WorkflowEnvironment, queue: str, input: FleetHealthInput) -> Any:
    return await env.client.execute_workflow(
        FleetHealthWorkflow.run, input, id=f"fleet-{uuid.uuid4().hex[:6]}", task_queue=queue
    )


def node_and_fleet_worker(
    env: WorkflowEnvironment, task_queue: str, nodes: FakeActivities, fleet: FakeFleet
) -> Worker:
    """A worker for node workflows and the sweep, with the nodes' and the fleet's fakes."""
    return Worker(
        env.client,
        task_queue=task_queue,
        workflows=[NodeWorkflow, FleetHealthWorkflow],
        activities=[*nodes.all(), *fleet.all()],
    )


async def test_changed_models_are_signalled_and_a_failed_shard_is_only_reported(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    nodes = FakeActivities()
    fleet = FakeFleet(serving=600, changed_cluster=None, sick_node=f"node-{SPEC.cluster_name}")
    async with (
        node_and_fleet_worker(env, task_queue, nodes, fleet),
        nodes.admission_worker(env.client, task_queue),
    ):
        handle = await start(env, task_queue)
        await wait_status(handle, NodeStatus.RUNNING)
        report = await sweep(env, task_queue, FleetHealthInput(clusters=False, shards=4))
        await wait_status(handle, NodeStatus.UNHEALTHY)
    assert sorted(s.shard for s in fleet.shards) == [0, 1, 2]  # 600 nodes: 3 of at most 4
    assert {s.shards for s in fleet.shards} == {3}
    assert report.models_probed == 20  # the two shards that answered
    assert report.models_changed == [SPEC.cluster_name]
    assert report.clusters_changed == []


async def test_a_changed_cluster_is_signalled_and_an_ended_workflow_is_only_reported(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    nodes = FakeActivities()
    fleet = FakeFleet(serving=2, changed_cluster=SPEC.cluster_name, sick_node=None)
    async with (
        node_and_fleet_worker(env, task_queue, nodes, fleet),
        nodes.admission_worker(env.client, task_queue),
    ):
        handle = await start(env, task_queue)
        await wait_status(handle, NodeStatus.RUNNING)
        nodes.behaviour.cluster_status = "TERMINATED"
        report = await sweep(env, task_queue, FleetHealthInput(models=False))
        result = await handle.result()
    assert result.status is NodeStatus.LOST  # the node confirmed and recorded it itself
    assert report.clusters_changed == [SPEC.cluster_name]
    assert len(report.signal_errors) == 1
    assert "node-cpn-gone" in report.signal_errors[0]
    assert report.status_calls == 3
    assert fleet.shards == []  # models=False


async def test_an_empty_fleet_probes_nothing(env: WorkflowEnvironment, task_queue: str) -> None:
    fleet = FakeFleet(serving=0, changed_cluster=None, sick_node=None)
    async with Worker(
        env.client, task_queue=task_queue, workflows=[FleetHealthWorkflow], activities=fleet.all()
    ):
        report = await sweep(env, task_queue, FleetHealthInput(clusters=False))
    assert fleet.shards == []
    assert report.models_probed == 0
