"""ReconcileWorkflow against the simulator and Postgres, with every kind of disagreement planted.

Planted: an orphan cluster with our prefix and no row, an orphan whose row ended long ago
(CLI mode), clusters without our prefix, a running row whose cluster is gone (lost), a launching
row past its deadline (stuck), a cleanup_failed row whose cluster still exists, and a healthy
running row with its cluster (a negative control). Other tests share the simulator and the
database, so every assertion looks only at the clusters planted here.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import SecretStr
from temporalio.client import (
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
)
from temporalio.service import RPCError, RPCStatusCode

from controlplane import lifecycle
from controlplane.config import load_settings
from controlplane.db.models import EventRow, NewNode, NodeRow
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import EventType, LaunchMode, NodeStatus
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.task import TaskSettings, build_task
from controlplane.spec import NodeSpec
from starter.api import ControlPlane
from starter.schedules import RECONCILE_SCHEDULE_ID, ensure_reconcile_schedule
from tests.integration.conftest import SIM_TOKEN, Stack
from tests.support.in_process_worker import in_process_worker
from tests.support.specs import node_spec
from workflows.models import Finding, ReconcileInput, ReconcileReport
from workflows.node import NodeWorkflow
from workflows.reconcile import ReconcileWorkflow

TASK_SETTINGS = TaskSettings("http://localhost:8080", "0.11.0", "2.8.0")


@contextlib.asynccontextmanager
async def running_worker(stack: Stack, **overrides: str) -> AsyncIterator[str]:
    """An in-process worker on a fresh task queue, with settings overrides; yields the queue."""
    queue = f"rc-{uuid.uuid4().hex[:8]}"
    settings = load_settings({**stack.env, "TEMPORAL_TASK_QUEUE": queue, **overrides})
    async with in_process_worker(stack.client, settings):
        yield queue


async def reconcile(stack: Stack, queue: str, *, cleanup: bool) -> ReconcileReport:
    return await stack.client.execute_workflow(
        ReconcileWorkflow.run,
        ReconcileInput(cleanup=cleanup),
        id=f"reconcile-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        execution_timeout=timedelta(seconds=90),
    )


def new_spec(tenant: str, deployment: str) -> NodeSpec:
    return node_spec(tenant=tenant, deployment=deployment)


async def launch_directly(sky: SkyPilotClient, name: str) -> None:
    """A cluster launched straight on the API server, behind the control plane's back."""
    task = build_task(new_spec("foreign", "direct"), TASK_SETTINGS)
    request_id = await sky.launch(name, task)
    await sky.wait_for_request(request_id, timeout=30)


# The named transitions from pending to each planted status.
PATHS: dict[NodeStatus, list[lifecycle.Transition]] = {
    NodeStatus.LAUNCHING: [lifecycle.LAUNCHING],
    NodeStatus.RUNNING: [lifecycle.LAUNCHING, lifecycle.READY],
    NodeStatus.TERMINATED: [
        lifecycle.LAUNCHING,
        lifecycle.READY,
        lifecycle.TERMINATING,
        lifecycle.TERMINATED,
    ],
    NodeStatus.CLEANUP_FAILED: [
        lifecycle.LAUNCHING,
        lifecycle.READY,
        lifecycle.TERMINATING,
        lifecycle.CLEANUP_FAILED,
    ],
}


async def plant_row(
    repo: NodeRepository,
    spec: NodeSpec,
    status: NodeStatus,
    *,
    mode: LaunchMode = LaunchMode.API,
    deadline: datetime | None = None,
) -> NodeRow:
    """A row walked to ``status`` through the repository, as the workflow would have left it."""
    row = await repo.record_intent(
        NewNode.from_spec(spec, launch_mode=mode, workflow_id=f"node-{spec.cluster_name}")
    )
    for transition in PATHS[status]:
        result = await repo.transition(
            spec.node_id,
            transition,
            status_deadline_at=deadline if transition is lifecycle.LAUNCHING else None,
        )
        assert result.applied
        row = result.row
    assert row.status == status.value
    return row


@dataclass
class Planted:
    orphan: str  # cpn-..., no row
    orphan_with_history: str  # cpn-..., its row terminated long ago (CLI mode)
    foreign: list[str]  # not our prefix
    lost: NodeRow  # running, no cluster
    stuck: NodeRow  # launching, deadline passed, no cluster
    cleanup_failed: NodeRow  # cleanup_failed, cluster still UP
    healthy: NodeRow  # running, cluster UP: no finding

    @property
    def rows(self) -> list[NodeRow]:
        return [self.lost, self.stuck, self.cleanup_failed, self.healthy]

    @property
    def clusters(self) -> set[str]:
        """Every cluster name planted here, present in the simulator or not."""
        return {
            self.orphan,
            self.orphan_with_history,
            *self.foreign,
            *(row.cluster_name for row in self.rows),
        }

    @property
    def live_clusters(self) -> list[str]:
        """The clusters planted in the simulator."""
        return [
            self.orphan,
            self.orphan_with_history,
            *self.foreign,
            self.cleanup_failed.cluster_name,
            self.healthy.cluster_name,
        ]


@pytest.fixture
async def planted(stack: Stack, repo: NodeRepository) -> AsyncIterator[Planted]:
    tenant = f"rc{uuid.uuid4().hex[:6]}"
    suffix = uuid.uuid4().hex[:8]
    past = datetime.now(UTC) - timedelta(hours=1)
    history_spec = new_spec(tenant, "history")
    await plant_row(repo, history_spec, NodeStatus.TERMINATED, mode=LaunchMode.CLI)
    cleanup_spec = new_spec(tenant, "cleanup")
    healthy_spec = new_spec(tenant, "healthy")
    plan = Planted(
        orphan=f"cpn-orphan-{suffix}",
        orphan_with_history=history_spec.cluster_name,
        foreign=[f"ext-{suffix}", f"cpnx-{suffix}"],
        lost=await plant_row(repo, new_spec(tenant, "lost"), NodeStatus.RUNNING),
        stuck=await plant_row(repo, new_spec(tenant, "stuck"), NodeStatus.LAUNCHING, deadline=past),
        cleanup_failed=await plant_row(repo, cleanup_spec, NodeStatus.CLEANUP_FAILED),
        healthy=await plant_row(repo, healthy_spec, NodeStatus.RUNNING),
    )
    async with SkyPilotClient(stack.simulator.url, token=SecretStr(SIM_TOKEN)) as sky:
        for name in plan.live_clusters:
            await launch_directly(sky, name)
        try:
            yield plan
        finally:
            for name in plan.live_clusters:  # whatever the test left behind
                if stack.simulator.cluster_status(name) is not None:
                    await sky.terminate(name, timeout=30)
            # Leave no live-looking rows for later reconciles of this session.
            for row, steps in (
                (plan.healthy, [lifecycle.TERMINATING, lifecycle.TERMINATED]),
                (plan.stuck, [lifecycle.FAILED]),
            ):
                for transition in steps:
                    await repo.transition(row.node_id, transition)


def mine(findings: list[Finding], plan: Planted) -> dict[str, Finding]:
    return {f.cluster_name: f for f in findings if f.cluster_name in plan.clusters}


async def snapshot(
    repo: NodeRepository, plan: Planted
) -> dict[str, tuple[NodeRow | None, list[EventRow]]]:
    return {
        row.node_id: (await repo.get(row.node_id), await repo.events(row.node_id))
        for row in plan.rows
    }


async def test_reconcile_reports_then_cleans_exactly_what_was_planted(
    stack: Stack, repo: NodeRepository, planted: Planted
) -> None:
    sim = stack.simulator
    plan = planted
    for name in plan.live_clusters:
        assert sim.cluster_status(name) == "UP", name
    before = await snapshot(repo, plan)

    # With the default grace (15 min) the fresh clusters may still be recording their rows.
    async with running_worker(stack) as queue:
        graced = await reconcile(stack, queue, cleanup=False)
    assert mine(graced.orphans, plan) == {}
    assert set(mine(graced.lost, plan)) == {plan.lost.cluster_name}
    # Our own cleanup_failed teardown is always retried (issue 10): it is always safe.
    assert set(mine(graced.cleanup_failed, plan)) == {plan.cleanup_failed.cluster_name}
    assert mine(graced.cleanup_failed, plan)[plan.cleanup_failed.cluster_name].detail == (
        "cluster still listed"
    )
    assert [c for c in graced.cleaned if c in plan.clusters] == [plan.cleanup_failed.cluster_name]

    async with running_worker(stack, RECONCILE_ORPHAN_GRACE="1ms") as queue:
        report = await reconcile(stack, queue, cleanup=False)
        assert report.cleanup_enabled is False
        assert [c for c in report.cleaned if c in plan.clusters] == []
        assert report.cleanup_errors == []
        assert report.clusters_seen >= len(plan.live_clusters) - 1  # cleanup_failed: downed

        orphans = mine(report.orphans, plan)
        assert set(orphans) == {plan.orphan, plan.orphan_with_history}
        assert orphans[plan.orphan].node_id is None
        assert orphans[plan.orphan].launch_mode is None
        assert "no node row" in orphans[plan.orphan].detail
        history = orphans[plan.orphan_with_history]
        assert history.launch_mode == LaunchMode.CLI.value
        assert history.node_id is not None
        assert "terminated" in history.detail

        lost = mine(report.lost, plan)
        assert set(lost) == {plan.lost.cluster_name}
        assert lost[plan.lost.cluster_name].node_id == plan.lost.node_id
        assert lost[plan.lost.cluster_name].launch_mode == LaunchMode.API.value

        stuck = mine(report.stuck, plan)
        assert set(stuck) == {plan.stuck.cluster_name}
        assert stuck[plan.stuck.cluster_name].node_id == plan.stuck.node_id
        assert "launching" in stuck[plan.stuck.cluster_name].detail

        assert mine(report.cleanup_failed, plan) == {}  # confirmed by the first run

        # Otherwise a report only: every other cluster still there, every other row as it was.
        for name in plan.live_clusters:
            if name != plan.cleanup_failed.cluster_name:
                assert sim.cluster_status(name) == "UP", name
        assert sim.cluster_status(plan.cleanup_failed.cluster_name) is None
        unchanged = await snapshot(repo, plan)
        confirmed = unchanged.pop(plan.cleanup_failed.node_id)
        assert unchanged == {k: v for k, v in before.items() if k != plan.cleanup_failed.node_id}

        cleaned = await reconcile(stack, queue, cleanup=True)

    assert cleaned.cleanup_enabled is True
    assert [e for e in cleaned.cleanup_errors if any(c in e for c in plan.clusters)] == []
    assert set(mine(cleaned.orphans, plan)) == {plan.orphan, plan.orphan_with_history}
    assert {c for c in cleaned.cleaned if c in plan.clusters} == {
        plan.orphan,
        plan.orphan_with_history,
        plan.lost.cluster_name,
    }
    assert mine(cleaned.cleanup_failed, plan) == {}  # confirmed by the report-only run
    # Orphans and the cleanup_failed cluster are gone; the rest is still running.
    for name in (plan.orphan, plan.orphan_with_history, plan.cleanup_failed.cluster_name):
        assert sim.cluster_status(name) is None, name
    for name in (*plan.foreign, plan.healthy.cluster_name):
        assert sim.cluster_status(name) == "UP", name

    after = await snapshot(repo, plan)
    assert after[plan.cleanup_failed.node_id] == confirmed
    row, events = after[plan.cleanup_failed.node_id]
    assert row is not None
    assert row.status == NodeStatus.TERMINATED.value
    assert row.terminated_at is not None
    assert [e.event_type for e in events] == [
        *(e.event_type for e in before[plan.cleanup_failed.node_id][1]),
        EventType.TERMINATED.value,
    ]
    row, events = after[plan.lost.node_id]
    assert row is not None
    assert row.status == NodeStatus.LOST.value
    assert events[-1].event_type == EventType.LOST.value
    assert len(events) == len(before[plan.lost.node_id][1]) + 1
    # Stuck rows belong to their own workflows; healthy ones have nothing to reconcile.
    assert after[plan.stuck.node_id] == before[plan.stuck.node_id]
    assert after[plan.healthy.node_id] == before[plan.healthy.node_id]


async def test_schedule_is_created_then_updated(stack: Stack) -> None:
    client = stack.client
    queue = stack.settings.temporal_task_queue
    handle = client.get_schedule_handle(RECONCILE_SCHEDULE_ID)
    with contextlib.suppress(RPCError):  # a worker-process test of this session made one
        await handle.delete()
    try:
        assert await ensure_reconcile_schedule(client, queue, timedelta(minutes=5)) == "created"
        assert await ensure_reconcile_schedule(client, queue, timedelta(minutes=7)) == "updated"
        described = await handle.describe()
        schedule = described.schedule
        assert schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(minutes=7))]
        assert schedule.policy.overlap is ScheduleOverlapPolicy.SKIP
        action = schedule.action
        assert isinstance(action, ScheduleActionStartWorkflow)
        assert action.workflow == "ReconcileWorkflow"
        assert action.task_queue == queue
        assert not schedule.state.paused
    finally:
        await handle.delete()
    with pytest.raises(RPCError) as gone:
        await handle.describe()
    assert gone.value.status is RPCStatusCode.NOT_FOUND


async def test_ensure_schedule_keeps_an_operators_pause(stack: Stack) -> None:
    client = stack.client
    queue = stack.settings.temporal_task_queue
    handle = client.get_schedule_handle(RECONCILE_SCHEDULE_ID)
    with contextlib.suppress(RPCError):
        await handle.delete()
    try:
        assert await ensure_reconcile_schedule(client, queue, timedelta(minutes=5)) == "created"
        await handle.pause(note="incident 42: reconciler paused by on-call")
        # A worker restarts (worker.serve calls this at every start), with a new interval.
        assert await ensure_reconcile_schedule(client, queue, timedelta(minutes=7)) == "updated"
        schedule = (await handle.describe()).schedule
        assert schedule.spec.intervals == [ScheduleIntervalSpec(every=timedelta(minutes=7))]
        assert schedule.state.paused, "a worker start unpaused the reconciler"
        assert schedule.state.note == "incident 42: reconciler paused by on-call"
    finally:
        await handle.delete()


@pytest.mark.filterwarnings("ignore::temporalio.workflow.UnfinishedUpdateHandlersWarning")
async def test_reconciler_marking_a_live_node_lost_leaves_its_workflow_consistent(
    stack: Stack, repo: NodeRepository
) -> None:
    spec = new_spec(f"rc{uuid.uuid4().hex[:6]}", "live")
    # The node's own health check (60 s by default) must not beat the reconciler to it.
    async with running_worker(
        stack,
        RECONCILE_ORPHAN_GRACE="1ms",
        NODE_HEALTH_CHECK_INTERVAL="1h",
        FLEET_HEALTH_LEASE="1h",
    ) as queue:
        control = ControlPlane(stack.client, queue)
        started = await control.launch_node(spec, launch_mode=LaunchMode.API)
        view = await control.wait_for_node(
            started.workflow_id, until={NodeStatus.RUNNING}, timeout=timedelta(seconds=30)
        )
        assert view.status is NodeStatus.RUNNING
        assert stack.simulator.preempt(spec.cluster_name)  # the cluster vanishes

        report = await reconcile(stack, queue, cleanup=True)
        assert spec.cluster_name in {f.cluster_name for f in report.lost}
        assert spec.cluster_name in report.cleaned
        # The reconciler asks the live workflow to check now; the workflow records the loss
        # once confirmed (a refreshed status, then a second look 30 s later: issue 10).
        view = await control.wait_for_node(
            started.workflow_id, until={NodeStatus.LOST}, timeout=timedelta(seconds=60)
        )
        assert view.status is NodeStatus.LOST
        row = await repo.get(spec.node_id)
        assert row is not None
        assert row.status == NodeStatus.LOST.value

        # The owner asks for teardown: the node is gone already, so it should just end lost.
        response = await asyncio.wait_for(control.terminate_node(started.workflow_id), 30)
        assert response.status is NodeStatus.LOST
        handle = stack.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
        result = await asyncio.wait_for(handle.result(), 30)
        assert result.status is NodeStatus.LOST
    events = [e.event_type for e in await repo.events(spec.node_id)]
    assert events == [EventType.LAUNCHED, EventType.READY, EventType.LOST]
