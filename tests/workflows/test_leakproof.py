"""Issue 10's NodeWorkflow paths, one test each (each failed before its fix).

- path 1: a terminate during a failed launch's cleanup lets the cleanup finish;
- path 2: a database outage longer than the old 15-minute deadline does not fail the workflow;
- path 6: one absent status answer does not mark a running node lost;
- path 8: a launch that proved nothing was submitted is not "cleaned up" into cleanup_failed;
- path 9: an early terminate on a launching row skips the launch; check_health survives
  continue-as-new.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.client import WorkflowFailureError, WorkflowHandle, WorkflowUpdateStage
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from controlplane.lifecycle import FINAL_STATUSES, LaunchMode, NodeStatus
from tests.workflows.fakes import FakeActivities, Row
from tests.workflows.test_node_workflow import (
    SPEC,
    events,
    node_at,
    start,
)
from tests.workflows.workers import running_worker
from workflows.models import (
    NOTHING_SUBMITTED,
    NodePlan,
    NodeState,
    NodeView,
    NodeWorkflowInput,
    TerminateNodeRequest,
)
from workflows.node import NodeWorkflow

FINAL_EVENTS = {f"node.{status.value}" for status in FINAL_STATUSES}


def final_events(fakes: FakeActivities) -> list[str]:
    return [event for event in events(fakes) if event in FINAL_EVENTS]


async def until(check: object, what: str, seconds: float = 20) -> None:
    assert callable(check)
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} never happened")


def seed_row(fakes: FakeActivities, status: NodeStatus, workflow_id: str) -> NodePlan:
    fakes.rows[SPEC.node_id] = Row(
        node_id=SPEC.node_id,
        cluster_name=SPEC.cluster_name,
        workflow_id=workflow_id,
        launch_mode=LaunchMode.API,
        status=status,
        request_id="req-0",
    )
    fakes.clusters.add(SPEC.cluster_name)
    fakes.ever_launched.add(SPEC.cluster_name)
    return NodePlan(
        node_id=SPEC.node_id,
        cluster_name=SPEC.cluster_name,
        launch_mode=LaunchMode.API,
        **fakes.plan_args,
    )


@pytest.mark.parametrize("message", ["update", "signal"])
async def test_terminate_during_cleanup_lets_the_cleanup_finish(
    local_env: WorkflowEnvironment, task_queue: str, message: str
) -> None:
    # On the dev server: the time-skipping server loses an update whose handler only waits.
    env = local_env
    spec = SPEC.model_copy(update={"deployment": f"cleanup-{message}"})
    fakes = FakeActivities()
    fakes.behaviour.wait_error = ApplicationError(
        "model never answered", type="ReadinessTimeout", non_retryable=True
    )
    fakes.behaviour.down_blocks = asyncio.Event()
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue, spec)
        await until(lambda: fakes.calls["down_cluster"], "the compensating down")
        update = None
        if message == "update":
            update = await handle.start_update(
                NodeWorkflow.terminate,
                TerminateNodeRequest(),
                wait_for_stage=WorkflowUpdateStage.ACCEPTED,
            )
        else:
            await handle.signal(NodeWorkflow.request_terminate, TerminateNodeRequest())
        await asyncio.sleep(0.5)
        fakes.behaviour.down_blocks.set()
        result = await asyncio.wait_for(handle.result(), 30)
        if update is not None:
            answer = await asyncio.wait_for(update.result(), 30)
            assert answer.status is NodeStatus.FAILED
            assert not answer.still_terminating
    assert result.status is NodeStatus.FAILED
    assert fakes.statuses() == [NodeStatus.FAILED]
    assert final_events(fakes) == ["node.failed"]
    assert not fakes.clusters


async def test_database_outage_longer_than_the_old_deadline_does_not_fail_the_node(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    # Every database step (local activities) is refused for 20 minutes of server time: longer
    # than the old 15-minute schedule-to-close. The retries' backoffs are workflow timers
    # (local_retry_threshold), so the test server skips them; before, they slept in the
    # workflow task in real time and this test hung for 20 real minutes.
    fakes = FakeActivities()
    fakes.behaviour.db_outage = timedelta(minutes=20)
    fakes.settle_s = 0.3  # the terminate cancels the launch: no completion in its task
    async with running_worker(env, task_queue, fakes):
        began = await env.get_current_time()
        handle = await start(env, task_queue)
        await handle.signal(NodeWorkflow.request_terminate, TerminateNodeRequest())
        result = await asyncio.wait_for(handle.result(), 60)
        outage = await env.get_current_time() - began
    assert outage > timedelta(minutes=20)
    assert result.status is NodeStatus.TERMINATED
    assert final_events(fakes) == ["node.terminated"]
    assert not fakes.clusters


async def test_one_absent_answer_does_not_mark_the_node_lost(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities(health_interval_s=60)
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        fakes.behaviour.cluster_status_answers = ["TERMINATED"]  # a reset API server answers once
        await handle.signal(NodeWorkflow.check_health)
        await until(lambda: len(fakes.calls["cluster_health"]) >= 2, "the confirming look")
        assert (await handle.query(NodeWorkflow.status)).status is NodeStatus.RUNNING
        assert fakes.calls["cluster_health"][1].refresh, "the confirmation refreshes"
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        result = await handle.result()
    assert result.status is NodeStatus.TERMINATED
    assert "node.lost" not in events(fakes)


async def test_confirmed_loss_is_recorded_after_a_second_look(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities(health_interval_s=60)
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        fakes.clusters.clear()  # really gone
        await handle.signal(NodeWorkflow.check_health)  # as the fleet sweep does on a change
        result = await handle.result()
    assert result.status is NodeStatus.LOST
    assert [c.refresh for c in fakes.calls["cluster_health"]] == [False, True, True]
    assert final_events(fakes) == ["node.lost"]


async def test_the_second_look_waits_the_configured_few_seconds(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """Issue 11: `lost` within a sweep interval + 5 s, so the second look waits
    NODE_LOST_SECOND_LOOK (the plan's lost_second_look_s), not min(30 s, the health interval)."""
    fakes = FakeActivities(health_interval_s=60)
    fakes.plan_args["lost_second_look_s"] = 2.0
    async with node_at(env, task_queue, fakes, NodeStatus.RUNNING) as handle:
        fakes.clusters.clear()
        await handle.signal(NodeWorkflow.check_health)
        result = await handle.result()
    assert result.status is NodeStatus.LOST
    history = await handle.fetch_history()
    timers = [
        e.timer_started_event_attributes.start_to_fire_timeout.ToSeconds()
        for e in history.events
        if e.HasField("timer_started_event_attributes")
    ]
    assert 2 in timers
    assert 30 not in timers


async def test_nothing_submitted_means_nothing_to_clean_up(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    fakes.behaviour.launch_error = ApplicationError(
        "Service account authentication disabled (operation=validate, http=401)",
        NOTHING_SUBMITTED,
        type="AuthenticationError",
        non_retryable=True,
    )
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert "authentication disabled" in str(failure.value.cause)
    assert fakes.calls["down_cluster"] == []
    assert fakes.statuses() == [NodeStatus.FAILED]
    assert "authentication disabled" in (fakes.rows[SPEC.node_id].error or "")
    assert final_events(fakes) == ["node.failed"]


async def test_early_terminate_on_a_launching_row_does_not_wait_for_the_launch(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    fakes.behaviour.wait_forever = True  # a launch resumed here would never finish
    workflow_id = f"node-{SPEC.cluster_name}"
    seed_row(fakes, NodeStatus.LAUNCHING, workflow_id)
    async with running_worker(env, task_queue, fakes):
        handle: WorkflowHandle[NodeWorkflow, NodeView] = await env.client.start_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(spec=SPEC),
            id=workflow_id,
            task_queue=task_queue,
            start_signal="request_terminate",
            start_signal_args=[TerminateNodeRequest(reason="recovered by the reconciler")],
        )
        result = await asyncio.wait_for(handle.result(), 20)
    assert result.status is NodeStatus.TERMINATED
    assert fakes.launches == 0
    assert fakes.calls["down_cluster"][0].cancel_launches
    assert final_events(fakes) == ["node.terminated"]
    assert not fakes.clusters


async def test_check_health_request_survives_continue_as_new(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities(health_interval_s=3600)
    workflow_id = f"node-{SPEC.cluster_name}"
    plan = seed_row(fakes, NodeStatus.RUNNING, workflow_id)
    resume = NodeState.model_validate(
        {"plan": plan, "status": NodeStatus.RUNNING, "health_check_requested": True}
    )
    async with running_worker(env, task_queue, fakes):
        handle = await env.client.start_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(spec=SPEC, resume=resume),
            id=workflow_id,
            task_queue=task_queue,
        )
        await until(lambda: fakes.calls["cluster_health"], "the carried health check", 10)
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        await handle.result()
    assert final_events(fakes) == ["node.terminated"]
