"""A deployment heals itself on the real pieces (dev server, simulator, Postgres, worker):
one cluster preempted, one model crashed, one model hung; back at 3 healthy replicas with
exactly 3 live clusters, the broken models restarted in place on the clusters they had."""

from __future__ import annotations

import time
import uuid

from pydantic import SecretStr

from controlplane.lifecycle import NodeStatus
from controlplane.skypilot.client import SkyPilotClient
from tests.integration.conftest import SIM_TOKEN
from tests.integration.test_fleet_health import Fleet, until
from tests.integration.test_fleet_health import fleet as fleet  # the fixture
from tests.support.fleet import sweeping
from tests.support.replicas import named
from tests.support.specs import deployment_spec
from workflows.models import DeploymentPolicy, DeploymentSpec, DeploymentView

HEALED_WITHIN_S = 120.0  # detection (probes, sweep) + restart in place + one replacement launch


def spec() -> DeploymentSpec:
    return deployment_spec(name=f"heal-{uuid.uuid4().hex[:8]}")


def healthy(view: DeploymentView) -> bool:
    live = [r for r in view.replicas if not r.status.final]
    return len(live) == 3 and all(r.status is NodeStatus.RUNNING for r in live)


async def live_clusters(fleet: Fleet, names: set[str]) -> set[str]:
    async with SkyPilotClient(fleet.stack.simulator.url, token=SecretStr(SIM_TOKEN)) as sky:
        return {record.name for record in await sky.status(None) if record.name in names}


async def test_preempted_crashed_and_hung_replicas_heal_back_to_three(fleet: Fleet) -> None:
    control, sim = fleet.control, fleet.stack.simulator
    workflow_id = await control.launch_deployment(
        spec(), 3, policy=DeploymentPolicy(backoff_initial_s=1, backoff_max_s=5)
    )
    await until(lambda: _view_is(control, workflow_id, healthy), 60, "the deployment at 3 running")
    before = await control.deployment_status(workflow_id)
    preempted, crashed, hung = before.replicas
    async with sweeping(fleet.stack.client, fleet.task_queue, every=1.0):
        started = time.monotonic()
        assert sim.preempt(named(preempted))
        assert sim.model_fault(named(crashed), "crash")
        assert sim.model_fault(named(hung), "hang")

        async def back_at_three() -> bool:
            view = await control.deployment_status(workflow_id)
            by_replica = {r.replica: r for r in view.replicas}
            return (
                healthy(view)
                and by_replica[preempted.replica].status.final
                and by_replica[crashed.replica].repairs >= 1
                and by_replica[hung.replica].repairs >= 1
            )

        await until(back_at_three, HEALED_WITHIN_S, "back at 3 healthy replicas")
        took = time.monotonic() - started
    print(f"healed in {took:.1f}s (bound {HEALED_WITHIN_S:.0f}s)")
    view = await control.deployment_status(workflow_id)
    by_replica = {r.replica: r for r in view.replicas}
    live = {named(r) for r in view.replicas if not r.status.final}
    assert await live_clusters(fleet, {named(r) for r in view.replicas}) == live
    assert len(live) == 3
    for repaired in (crashed, hung):  # restarted in place: same cluster, same node
        now = by_replica[repaired.replica]
        assert now.status is NodeStatus.RUNNING
        assert now.cluster_name == repaired.cluster_name
        assert (sim.exec_jobs(named(repaired)) or 0) >= 1
    assert named(crashed) in live
    assert {r.location for r in view.replicas if not r.status.final} == {"aws/us-east-1"}
    recorded = await fleet.nodes.events(view.replicas[-1].node_id)  # the replacement's events
    ready = [e for e in recorded if e.event_type == "node.ready"]
    assert ready[0].payload["location"] == "aws/us-east-1"
    assert by_replica[preempted.replica].status is NodeStatus.LOST
    events = [e.event_type.value for e in view.recent_events]
    assert "deployment.replica_repaired" in events
    assert "deployment.replica_replaced" in events
    final = await control.terminate_deployment(workflow_id)
    assert all(r.status.final for r in final.replicas)


async def _view_is(control: object, workflow_id: str, check: object) -> bool:
    from starter.api import ControlPlane

    assert isinstance(control, ControlPlane)
    assert callable(check)
    return bool(check(await control.deployment_status(workflow_id)))


async def test_a_launch_fails_over_to_the_next_candidate_location(fleet: Fleet) -> None:
    """One launch request, ordered alternatives: the first has no capacity, the node lands on
    the second and records it."""
    sim = fleet.stack.simulator
    candidates = spec().model_copy(
        update={"fallback_locations": ({"provider": "gcp", "region": "us-central1"},)}
    )
    sim.set_faults(unavailable_locations=["aws/us-east-1"])
    try:
        workflow_id = await fleet.control.launch_deployment(
            DeploymentSpec.model_validate(candidates.model_dump()), 1
        )
        await until(
            lambda: _view_is(fleet.control, workflow_id, lambda v: v.serving_replicas == 1),
            60,
            "a replica running",
        )
    finally:
        sim.set_faults(unavailable_locations=[])
    view = await fleet.control.deployment_status(workflow_id)
    assert view.replicas[0].location == "gcp/us-central1"
    assert sim.counters()["launch_requests"][named(view.replicas[0])] == 1
    await fleet.control.terminate_deployment(workflow_id)
