"""Fleet health on the real pieces: a crashed or hung model makes its node unhealthy and a
recovered one makes it running again (one-shot sweeps and a lease); the schedules run leases;
launches beyond the budget wait their turn, queued."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta

import pytest
from temporalio.client import (
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
)
from temporalio.service import RPCError

from controlplane.config import load_settings
from controlplane.db.engine import create_engine
from controlplane.db.launch_slots import LaunchSlotRepository
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.metrics import Metrics
from starter.api import ControlPlane
from starter.schedules import (
    CLUSTER_SWEEP_SCHEDULE_ID,
    MODEL_PROBE_SCHEDULE_ID,
    ensure_fleet_health_schedules,
)
from tests.integration.conftest import Stack, new_spec
from tests.support.fleet import sweep_once, sweeping
from worker import create_worker, open_activities
from workflows.fleet_health import FleetHealthWorkflow
from workflows.fleet_models import FleetHealthInput

PROBES = {
    "MODEL_PROBE_INTERVAL": "1s",
    "MODEL_PROBE_TIMEOUT": "500ms",
    "MODEL_PROBE_THRESHOLD": "2",
    "MODEL_PROBE_STARTUP_GRACE": "0s",
    "MODEL_PROBE_CHECK_MODELS": "true",
}
READY = timedelta(seconds=30)
# interval x threshold, plus the sweep's own run and the workflow's transition, on a busy box.
DETECTED_WITHIN_S = 1.0 * 2 + 10.0


@dataclass
class Fleet:
    stack: Stack
    control: ControlPlane
    metrics: Metrics
    nodes: NodeRepository
    slots: LaunchSlotRepository
    task_queue: str


@pytest.fixture
async def fleet(stack: Stack, request: pytest.FixtureRequest) -> AsyncIterator[Fleet]:
    extra: dict[str, str] = getattr(request, "param", {})
    settings = load_settings({**stack.env, **PROBES, **extra})
    metrics = Metrics()
    engine = create_engine(settings.database_url or "")
    try:
        async with (
            open_activities(settings, metrics) as activities,
            create_worker(stack.client, settings, activities),
        ):
            yield Fleet(
                stack,
                ControlPlane(stack.client, settings.temporal_task_queue),
                metrics,
                NodeRepository(engine),
                LaunchSlotRepository(engine),
                settings.temporal_task_queue,
            )
    finally:
        await engine.dispose()


async def until(check: Callable[[], object], timeout: float, what: str) -> float:
    started = time.monotonic()
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what} not within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def status_of(fleet: Fleet, workflow_id: str) -> NodeStatus:
    return (await fleet.control.node_status(workflow_id)).status


def probe_failures(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "controlplane_model_probe_failures_total", {"reason": reason}
    )
    return value or 0.0


@pytest.mark.parametrize(("fault", "reason"), [("crash", "bad_status"), ("hang", "timeout")])
async def test_a_broken_model_makes_its_node_unhealthy_and_recovery_running_again(
    fleet: Fleet, fault: str, reason: str
) -> None:
    spec = new_spec()
    started = await fleet.control.launch_node(spec, launch_mode=LaunchMode.API)
    view = await fleet.control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=READY
    )
    assert view.status is NodeStatus.RUNNING
    sim = fleet.stack.simulator
    async with sweeping(fleet.stack.client, fleet.task_queue, every=1.0):
        assert sim.model_fault(spec.cluster_name, fault)
        took = await until(
            lambda: _is(fleet, started.workflow_id, NodeStatus.UNHEALTHY),
            DETECTED_WITHIN_S,
            "node.unhealthy",
        )
        print(f"{fault} detected in {took:.1f}s")
        assert sim.cluster_status(spec.cluster_name) == "UP"  # the cluster was never touched
        view = await fleet.control.node_status(started.workflow_id)
        assert view.error is not None
        assert "probes in a row" in view.error
        assert probe_failures(fleet.metrics, reason) >= 2

        assert sim.model_fault(spec.cluster_name, None)
        await until(
            lambda: _is(fleet, started.workflow_id, NodeStatus.RUNNING),
            DETECTED_WITHIN_S,
            "node.healthy",
        )
    row = await fleet.nodes.get(spec.node_id)
    assert row is not None
    assert row.status == NodeStatus.RUNNING.value
    kinds = [e.event_type for e in await fleet.nodes.events(spec.node_id)]
    assert kinds == ["node.launched", "node.ready", "node.unhealthy", "node.healthy"]
    answer = await fleet.control.terminate_node(started.workflow_id)
    assert answer.status is NodeStatus.TERMINATED


async def _is(fleet: Fleet, workflow_id: str, status: NodeStatus) -> bool:
    return await status_of(fleet, workflow_id) is status


async def test_a_healthy_fleet_costs_one_cluster_list_per_sweep(fleet: Fleet) -> None:
    specs = [new_spec() for _ in range(3)]
    started = [await fleet.control.launch_node(s, launch_mode=LaunchMode.API) for s in specs]
    for one in started:
        await fleet.control.wait_for_node(
            one.workflow_id, until={NodeStatus.RUNNING}, timeout=READY
        )
    sim = fleet.stack.simulator
    before = sim.counters()["calls"]
    report = await sweep_once(fleet.stack.client, fleet.task_queue, FleetHealthInput(shards=2))
    after = sim.counters()["calls"]
    # One list for the fleet; a fresh look only at clusters that looked changed (rows other
    # tests left behind in this shared database), never at these healthy ones.
    assert after.get("POST /status", 0) - before.get("POST /status", 0) == report.status_calls
    assert 1 <= report.status_calls <= 1 + report.serving_nodes - len(specs)
    assert report.serving_nodes >= 3
    assert report.models_probed >= 3
    mine = {s.cluster_name for s in specs}
    assert not mine & set(report.clusters_changed)
    assert not mine & set(report.models_changed)
    for one in started:
        await fleet.control.terminate_node(one.workflow_id)


@pytest.mark.parametrize(
    "fleet",
    [{"SKYPILOT_MAX_INFLIGHT_LAUNCHES": "1", "SKYPILOT_LAUNCH_TIMEOUT": "60s"}],
    indirect=True,
)
async def test_launches_beyond_the_budget_wait_queued_in_order(fleet: Fleet) -> None:
    sim = fleet.stack.simulator
    sim.set_timings(launch_delay_s=1.5)
    try:
        specs = [new_spec() for _ in range(3)]
        started = []
        for spec in specs:
            started.append(await fleet.control.launch_node(spec, launch_mode=LaunchMode.API))
            await asyncio.sleep(0.3)  # a clear arrival order
        queued = await fleet.control.node_status(started[2].workflow_id)
        assert queued.status is NodeStatus.PENDING
        assert queued.reason is not None
        assert "queued" in queued.reason
        peak = 0
        ready_order: list[str] = []
        deadline = time.monotonic() + 60
        while len(ready_order) < 3 and time.monotonic() < deadline:
            peak = max(peak, await fleet.slots.in_flight(f"api:{sim.url}"))
            for one in started:
                view = await fleet.control.node_status(one.workflow_id)
                if view.status is NodeStatus.RUNNING and one.workflow_id not in ready_order:
                    ready_order.append(one.workflow_id)
            await asyncio.sleep(0.1)
        assert ready_order == [one.workflow_id for one in started]  # first come, first served
        assert peak == 1
        assert await fleet.slots.in_flight(f"api:{sim.url}") == 0  # every slot given back
    finally:
        sim.set_timings(launch_delay_s=0.5)
    for one in started:
        await fleet.control.terminate_node(one.workflow_id)


async def test_a_lease_finds_a_crashed_model_and_a_preempted_cluster_and_signals_them(
    fleet: Fleet,
) -> None:
    """Lease mode, as the schedules run it: the sweeps at the worker's own intervals
    (MODEL_PROBE_INTERVAL, NODE_HEALTH_CHECK_INTERVAL) inside the activities, which signal."""
    specs = [new_spec() for _ in range(3)]
    started = [await fleet.control.launch_node(s, launch_mode=LaunchMode.API) for s in specs]
    for one in started:
        await fleet.control.wait_for_node(
            one.workflow_id, until={NodeStatus.RUNNING}, timeout=READY
        )
    sick, gone, ended = specs
    sick_id, gone_id, ended_id = (one.workflow_id for one in started)
    # A node whose workflow an operator ended: its row still says running.
    await fleet.stack.client.get_workflow_handle(ended_id).terminate(reason="test")
    sim = fleet.stack.simulator
    run = await fleet.stack.client.start_workflow(
        FleetHealthWorkflow.run,
        FleetHealthInput(shards=2, lease_s=20),
        id=f"fleet-health-lease-{uuid.uuid4().hex[:8]}",
        task_queue=fleet.task_queue,
    )
    assert sim.model_fault(sick.cluster_name, "crash")
    assert sim.preempt(gone.cluster_name)
    assert sim.preempt(ended.cluster_name)
    await until(
        lambda: _is(fleet, sick_id, NodeStatus.UNHEALTHY), DETECTED_WITHIN_S, "node.unhealthy"
    )
    view = await fleet.control.wait_for_node(gone_id, until=set(), timeout=READY)
    assert view.status is NodeStatus.LOST
    report = await run.result()  # the lease ends; the ended workflow was no error
    assert report.sweeps > 2
    assert report.changed >= 2  # the sick model, the lost cluster
    assert report.ended_meanwhile >= 1  # the terminated node's workflow
    assert report.signal_errors == []
    assert report.failed_sweeps == 0
    kinds = [e.event_type for e in await fleet.nodes.events(sick.node_id)]
    # (then the node restarts its model in place, and the next probes find it healthy)
    assert kinds[:3] == ["node.launched", "node.ready", "node.unhealthy"]
    await fleet.control.terminate_node(sick_id)


async def test_the_fleet_health_schedules_start_a_lease_mode_run_every_lease(stack: Stack) -> None:
    client = stack.client
    queue = stack.settings.temporal_task_queue
    handles = [
        client.get_schedule_handle(i) for i in (CLUSTER_SWEEP_SCHEDULE_ID, MODEL_PROBE_SCHEDULE_ID)
    ]
    for handle in handles:
        with contextlib.suppress(RPCError):  # a worker-process test of this session made one
            await handle.delete()
    lease = timedelta(minutes=30)
    try:
        made = await ensure_fleet_health_schedules(client, queue, lease=lease, shards=4)
        # Started at once: the first fire is up to a lease away.
        assert set(made.values()) == {"created, started"}
        again = await ensure_fleet_health_schedules(client, queue, lease=lease, shards=4)
        assert set(again.values()) == {"updated"}  # a run in flight: none more
        inputs = []
        for handle in handles:
            described = await handle.describe()
            assert len(described.info.running_actions) == 1
            schedule = described.schedule
            assert schedule.spec.intervals == [ScheduleIntervalSpec(every=lease)]
            # The next run starts as the previous ends: no fleet left unswept for a lease.
            assert schedule.policy.overlap is ScheduleOverlapPolicy.BUFFER_ONE
            action = schedule.action
            assert isinstance(action, ScheduleActionStartWorkflow)
            assert action.workflow == "FleetHealthWorkflow"
            [input] = await client.data_converter.decode(action.args, [FleetHealthInput])
            inputs.append(input)
        assert inputs == [
            FleetHealthInput(clusters=True, models=False, lease_s=1800),
            FleetHealthInput(clusters=False, models=True, shards=4, lease_s=1800),
        ]
    finally:
        for handle in handles:
            for running in (await handle.describe()).info.running_actions:
                assert isinstance(running, ScheduleActionExecutionStartWorkflow)
                run = client.get_workflow_handle(
                    running.workflow_id, run_id=running.first_execution_run_id
                )
                with contextlib.suppress(RPCError):  # ended already
                    await run.terminate(reason="test over")
            await handle.delete()
