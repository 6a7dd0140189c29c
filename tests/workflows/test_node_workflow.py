"""NodeWorkflow's paths on the time-skipping server: launch timeouts, compensation, bounded
terminate, cancellation and duplicate starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowHistory
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment

from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.spec import NodeSpec
from tests.support.specs import node_spec
from tests.workflows.fakes import FakeActivities
from tests.workflows.workers import ALL_WORKFLOWS, running_worker
from workflows.fleet_models import ModelHealthSignal
from workflows.models import NodeView, NodeWorkflowInput, TerminateNodeRequest
from workflows.node import NODE_BUNDLES, NodeWorkflow

SPEC = node_spec(model="org/llama")


async def start(
    env: WorkflowEnvironment,
    task_queue: str,
    spec: NodeSpec = SPEC,
    *,
    launch_mode: LaunchMode | None = None,
    **options: Any,
) -> WorkflowHandle[NodeWorkflow, NodeView]:
    """Start (or attach to) the node's workflow, in ``launch_mode`` (default: the worker's);
    ``options`` go to ``start_workflow``."""
    return await env.client.start_workflow(
        NodeWorkflow.run,
        NodeWorkflowInput(spec=spec, launch_mode=launch_mode),
        id=f"node-{spec.cluster_name}",
        task_queue=task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        **options,
    )


async def wait_status(handle: WorkflowHandle[NodeWorkflow, NodeView], status: NodeStatus) -> None:
    for _ in range(400):
        if (await handle.query(NodeWorkflow.status)).status is status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"node never reached {status}")


@asynccontextmanager
async def node_at(
    env: WorkflowEnvironment,
    task_queue: str,
    fakes: FakeActivities,
    status: NodeStatus,
    spec: NodeSpec = SPEC,
) -> AsyncIterator[WorkflowHandle[NodeWorkflow, NodeView]]:
    """A worker running, the node ``spec`` started and seen at ``status``."""
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue, spec)
        await wait_status(handle, status)
        yield handle


@asynccontextmanager
async def node_stuck_launching(
    env: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[tuple[FakeActivities, WorkflowHandle[NodeWorkflow, NodeView]]]:
    """A node whose cluster never gets ready (wait_ready never answers), seen LAUNCHING."""
    fakes = FakeActivities()
    fakes.behaviour.wait_forever = True
    async with node_at(env, task_queue, fakes, NodeStatus.LAUNCHING) as handle:
        yield fakes, handle


async def run_until_failed(
    env: WorkflowEnvironment, task_queue: str, fakes: FakeActivities
) -> WorkflowFailureError:
    """Start the node on ``fakes`` and wait for its workflow to fail; return the failure."""
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    return failure.value


def events(fakes: FakeActivities) -> list[str]:
    return [event for _, event in fakes.events]


async def test_happy_path_then_terminate(env: WorkflowEnvironment, task_queue: str) -> None:
    fakes = FakeActivities()
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        view = await handle.query(NodeWorkflow.status)
        assert view.endpoint == f"127.0.0.1:8000/{SPEC.cluster_name}"
        response = await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        assert response.status is NodeStatus.TERMINATED
        assert not response.still_terminating
        result = await handle.result()
    assert result.status is NodeStatus.TERMINATED
    assert events(fakes) == ["node.launched", "node.ready", "node.terminating", "node.terminated"]
    assert fakes.launches == 1


async def test_launch_timeout_compensates(env: WorkflowEnvironment, task_queue: str) -> None:
    # Retries never exhaust before the 600 s deadline; only the deadline ends the wait. (A
    # running activity would pause the test server's clock, so the fake retries instead.)
    fakes = FakeActivities(launch_timeout_s=600, max_retries=1000)
    fakes.behaviour.wait_still_running = True
    failure = await run_until_failed(env, task_queue, fakes)
    assert "cleaned up" in str(failure.cause)
    assert "SKYPILOT_LAUNCH_TIMEOUT" in str(failure.cause)
    downs = fakes.calls["down_cluster"]
    assert len(downs) == 1
    assert downs[0].cancel_launches, "compensation must cancel the SkyPilot request"
    assert fakes.statuses() == [NodeStatus.FAILED]
    assert events(fakes) == ["node.launched", "node.failed"]
    assert fakes.rows[SPEC.node_id].error


async def test_failure_after_launch_cleans_up(env: WorkflowEnvironment, task_queue: str) -> None:
    fakes = FakeActivities()
    fakes.behaviour.wait_error = ApplicationError(
        "model never answered", type="ReadinessTimeout", non_retryable=True
    )
    await run_until_failed(env, task_queue, fakes)
    assert len(fakes.calls["down_cluster"]) == 1
    assert fakes.statuses() == [NodeStatus.FAILED]
    assert "model never answered" in (fakes.rows[SPEC.node_id].error or "")


async def test_failure_recording_running_cleans_up(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    fakes.behaviour.transition_error_for = NodeStatus.RUNNING
    await run_until_failed(env, task_queue, fakes)
    assert len(fakes.calls["down_cluster"]) == 1
    assert fakes.statuses() == [NodeStatus.FAILED]


async def test_transient_launch_failure_relaunches(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities(max_retries=2)
    fakes.behaviour.wait_errors = [
        ApplicationError("no capacity", type="ResourcesUnavailableError", non_retryable=True)
    ]
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue)
        await wait_status(handle, NodeStatus.RUNNING)
    assert fakes.launches == 2
    assert events(fakes) == ["node.launched", "node.launched", "node.ready"]
    assert fakes.rows[SPEC.node_id].request_id == "req-2"


async def test_permanent_launch_failure_does_not_relaunch(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities(max_retries=2)
    fakes.behaviour.launch_error = ApplicationError(
        "Cloud access is not set up", type="NoCloudAccessError", non_retryable=True
    )
    failure = await run_until_failed(env, task_queue, fakes)
    assert fakes.launches == 1
    assert "Cloud access is not set up" in str(failure.cause)
    assert len(fakes.calls["down_cluster"]) == 1  # the launch may have landed: clean up anyway
    assert fakes.statuses() == [NodeStatus.FAILED]


async def test_cancellation_during_launch_downs_the_cluster(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with node_stuck_launching(env, task_queue) as (fakes, handle):
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert len(fakes.calls["down_cluster"]) == 1
    assert fakes.calls["down_cluster"][0].cancel_launches
    assert fakes.statuses() == [NodeStatus.FAILED]


async def test_terminate_during_launch_cancels_and_terminates(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with node_stuck_launching(env, task_queue) as (fakes, handle):
        response = await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        result = await handle.result()
    assert response.status is NodeStatus.TERMINATED
    assert result.status is NodeStatus.TERMINATED
    assert fakes.calls["down_cluster"][0].cancel_launches
    assert events(fakes) == ["node.launched", "node.terminating", "node.terminated"]


async def test_terminate_bound_answers_still_terminating_then_finishes(
    local_env: WorkflowEnvironment, task_queue: str
) -> None:
    # On the dev server: the time-skipping server does not fire timers inside update handlers.
    env = local_env
    fakes = FakeActivities(terminate_timeout_s=1.5)
    fakes.behaviour.down_blocks = asyncio.Event()
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        started = asyncio.get_running_loop().time()
        response = await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        assert asyncio.get_running_loop().time() - started < 10
        assert response.still_terminating
        assert response.status is NodeStatus.TERMINATING
        fakes.behaviour.down_blocks.set()  # SkyPilot finally confirms
        result = await handle.result()
    assert result.status is NodeStatus.TERMINATED
    assert events(fakes)[-2:] == ["node.terminating", "node.terminated"]


async def test_unconfirmed_down_is_cleanup_failed_never_terminated(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    fakes.behaviour.down_error = ApplicationError(
        "down refused", type="PermissionDeniedError", non_retryable=True
    )
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        result = await handle.result()
    assert result.status is NodeStatus.CLEANUP_FAILED
    assert "node.terminated" not in events(fakes)
    assert events(fakes)[-1] == "node.cleanup_failed"


async def test_duplicate_start_attaches_and_launches_once(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    async with running_worker(env, task_queue, fakes):
        first = await start(env, task_queue)
        second = await start(env, task_queue)
        await wait_status(first, NodeStatus.RUNNING)
        assert second.result_run_id == first.result_run_id
        await first.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        await first.result()
    assert fakes.launches == 1
    assert len(fakes.calls["record_intent"]) == 1


async def test_second_workflow_for_same_node_launches_nothing(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING):
        other = await env.client.start_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(spec=SPEC),
            id="someone-elses-id",
            task_queue=task_queue,
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await other.result()
    assert "already managed" in str(failure.value.cause)
    assert fakes.launches == 1


async def test_health_check_marks_vanished_cluster_lost(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities(health_interval_s=60)
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        fakes.behaviour.cluster_status = "TERMINATED"
        await handle.signal(NodeWorkflow.check_health)  # as the fleet sweep does on a change
        result = await handle.result()
    assert result.status is NodeStatus.LOST
    assert "TERMINATED" in (result.error or "")
    assert events(fakes)[-1] == "node.lost"
    assert fakes.calls["down_cluster"] == []  # nothing left to down


async def test_bad_input_fails_the_workflow_without_activity(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    async with running_worker(env, task_queue, fakes):
        bad = {
            "spec": {
                "tenant": "acme",
                "model": "m",
                "provider": "moon",
                "region": "r",
                "gpu_type": "A100",
                "gpu_count": 0,
            }
        }
        handle = await env.client.start_workflow(
            "NodeWorkflow", bad, id="bad-input", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    message = str(failure.value.cause)
    assert "provider" in message
    assert "gpu_count" in message
    assert fakes.calls == {}


@pytest.mark.parametrize(
    "workflow_type", ["NodeWorkflow", "DeploymentWorkflow", "TerminateClusterWorkflow"]
)
async def test_missing_input_fails_the_workflow_instead_of_retrying_the_task(
    env: WorkflowEnvironment, task_queue: str, workflow_type: str
) -> None:
    fakes = FakeActivities()
    async with running_worker(env, task_queue, fakes, ALL_WORKFLOWS):
        handle = await env.client.start_workflow(
            workflow_type, id=f"no-input-{workflow_type}", task_queue=task_queue
        )
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert "needs its input as JSON" in str(failure.value.cause)
    assert fakes.calls == {}


# --- fleet health: signals instead of per-node timers; launch admission -----------------------
async def test_a_running_node_checks_nothing_on_its_own(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities(health_interval_s=60)
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        await env.sleep(6 * 3600)  # six hours of health intervals skip by
        assert (await handle.query(NodeWorkflow.status)).status is NodeStatus.RUNNING
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        await handle.result()
    assert fakes.calls["cluster_health"] == []  # the fleet sweep watches the cluster
    history = await handle.fetch_history()
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds()
        for e in history.events
        if e.HasField("timer_started_event_attributes")
    ]
    # The continue-as-new timer and the terminate update's bound: nothing per interval.
    assert sorted(timers) == [300, 24 * 3600]


async def test_model_verdicts_make_the_node_unhealthy_and_healthy_again(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        sick = ModelHealthSignal(healthy=False, consecutive_failures=3, detail="HTTP 503")
        await handle.signal(NodeWorkflow.model_health, sick)
        await wait_status(handle, NodeStatus.UNHEALTHY)
        view = await handle.query(NodeWorkflow.status)
        assert "3 probes" in (view.error or "")
        assert "HTTP 503" in (view.error or "")
        await handle.signal(NodeWorkflow.model_health, ModelHealthSignal(healthy=True))
        await wait_status(handle, NodeStatus.RUNNING)
        assert (await handle.query(NodeWorkflow.status)).error is None
        await handle.signal(NodeWorkflow.model_health, sick)  # a second episode
        await wait_status(handle, NodeStatus.UNHEALTHY)
        await handle.signal(NodeWorkflow.model_health, sick)  # a repeat changes nothing
        response = await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        assert response.status is NodeStatus.TERMINATED
    assert events(fakes)[2:] == [
        "node.unhealthy",
        "node.healthy",
        "node.unhealthy",
        "node.terminating",
        "node.terminated",
    ]


async def test_an_unhealthy_node_whose_cluster_vanished_is_lost(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        await handle.signal(NodeWorkflow.model_health, ModelHealthSignal(healthy=False))
        await wait_status(handle, NodeStatus.UNHEALTHY)
        fakes.behaviour.cluster_status = "STOPPED"
        await handle.signal(NodeWorkflow.check_health)
        result = await handle.result()
    assert result.status is NodeStatus.LOST
    assert len(fakes.calls["down_cluster"]) == 1  # the stopped cluster is downed


async def test_a_queued_launch_waits_pending_with_a_reason_then_launches(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    fakes.behaviour.admission_open = asyncio.Event()
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue)
        for _ in range(200):
            if fakes.calls["acquire_launch_slot"]:
                break
            await asyncio.sleep(0.05)
        view = await handle.query(NodeWorkflow.status)
        assert view.status is NodeStatus.PENDING
        assert view.reason is not None
        assert "SKYPILOT_MAX_INFLIGHT_LAUNCHES" in view.reason
        assert fakes.launches == 0
        assert len(fakes.calls["try_launch_slot"]) == 1  # the first ask found no free slot
        fakes.behaviour.admission_open.set()
        await wait_status(handle, NodeStatus.RUNNING)
        assert (await handle.query(NodeWorkflow.status)).reason is None
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
    assert len(fakes.calls["release_launch_slot"]) == 1  # given back once the launch resolved


async def test_a_launch_never_admitted_fails_at_its_deadline_without_launching(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    # The queued wait heartbeats, so the clock does not skip: the deadline passes in real time.
    fakes = FakeActivities(launch_timeout_s=5)
    fakes.behaviour.admission_open = asyncio.Event()
    await run_until_failed(env, task_queue, fakes)
    assert fakes.launches == 0
    assert fakes.statuses() == [NodeStatus.FAILED]
    assert len(fakes.calls["release_launch_slot"]) == 1  # its place in the queue is given up


async def whole_lifecycle(
    env: WorkflowEnvironment, task_queue: str, fakes: FakeActivities
) -> WorkflowHistory:
    """Launch to running, terminate, and the history of that whole run."""
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        await handle.result()
    return await handle.fetch_history()


async def test_database_steps_are_local_activities(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    history = await whole_lifecycle(env, task_queue, fakes)
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    # Only the SkyPilot steps are on the queue: a free launch slot is granted by the local
    # first ask, so the (possibly long) wait for one never runs.
    assert scheduled == ["launch_cluster", "wait_ready", "down_cluster"]
    assert len(fakes.calls["record_transition"]) == 4  # launched, ready, terminating, terminated
    assert len(fakes.calls["record_intent"]) == 1
    assert len(fakes.calls["try_launch_slot"]) == 1
    assert not fakes.calls["acquire_launch_slot"]


async def test_a_new_run_takes_every_patch_with_one_marker(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    history = await whole_lifecycle(env, task_queue, FakeActivities())
    patches = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    # One marker (and one TemporalChangeVersion upsert) stands for all of the node's patches:
    # a marker each was seven markers and seven visibility writes per lifecycle.
    assert len(patches) == 1, patches
    assert NODE_BUNDLES[0].marker in patches[0].decode()
    upserts = [
        e
        for e in history.events
        if e.HasField("upsert_workflow_search_attributes_event_attributes")
    ]
    assert len(upserts) == 1


async def test_queued_launches_cannot_starve_the_admitted_ones(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """Issue 11: ten nodes, a budget of two and a worker with four activity slots. Waiting for a
    slot must not take the slots the admitted nodes need to launch and give theirs back."""
    fakes = FakeActivities()
    fakes.behaviour.launch_budget = 2
    async with running_worker(env, task_queue, fakes, max_concurrent_activities=4):
        handles = [await start(env, task_queue, node_spec(model=f"org/m{i}")) for i in range(10)]
        for handle in handles:
            await wait_status(handle, NodeStatus.RUNNING)  # bounded: raises if the queue hangs
        for handle in handles:
            await handle.terminate("test over")
    assert fakes.launches == 10
    assert len(fakes.calls["release_launch_slot"]) == 10
