"""DeploymentWorkflow as a controller, on the time-skipping server with fake activities:
replacement of what is lost, counting, serialization, continue-as-new, generations, the
crash-loop guard and backoff, rolling updates and rollback, spot fallback."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError, WorkflowUpdateStage
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from controlplane.lifecycle import NodeStatus
from controlplane.spec import NodeSpec
from tests.support.replicas import named
from tests.support.specs import deployment_spec
from tests.workflows.fakes import FakeActivities
from tests.workflows.workers import DEPLOYMENT_WORKFLOWS, running_worker, start_deployment
from workflows.deployment import DeploymentWorkflow
from workflows.models import (
    DeploymentInput,
    DeploymentPolicy,
    DeploymentSpec,
    DeploymentView,
    ReplicaStatusSignal,
    ReplicaView,
    ScaleDeploymentRequest,
    TerminateDeploymentRequest,
    UpdateDeploymentRequest,
)
from workflows.node import NodeWorkflow

SPEC = deployment_spec(model="org/llama", name="blue")
POLICY = DeploymentPolicy(backoff_initial_s=10, backoff_max_s=40, crash_loop_threshold=3)
Handle = WorkflowHandle[DeploymentWorkflow, DeploymentView]


def worker(
    env: WorkflowEnvironment, task_queue: str, fakes: FakeActivities
) -> AbstractAsyncContextManager[Worker]:
    """The node and deployment workflows with ``fakes``."""
    return running_worker(env, task_queue, fakes, DEPLOYMENT_WORKFLOWS)


async def deploy(
    env: WorkflowEnvironment,
    task_queue: str,
    replicas: int,
    *,
    spec: DeploymentSpec = SPEC,
    policy: DeploymentPolicy = POLICY,
) -> Handle:
    return await start_deployment(
        env,
        task_queue,
        DeploymentInput(deployment=spec, replicas=replicas, policy=policy),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


async def until(
    env: WorkflowEnvironment,
    handle: Handle,
    check: Callable[[DeploymentView], bool],
    what: str,
    *,
    step: float = 2.0,
    rounds: int = 300,
) -> DeploymentView:
    """Poll the status query, letting workflow time pass between polls."""
    for _ in range(rounds):
        view = await handle.query(DeploymentWorkflow.status)
        if check(view):
            return view
        await env.sleep(step)
    raise AssertionError(f"{what} never happened; last view: {view.model_dump_json(indent=1)}")


def running(count: int) -> Callable[[DeploymentView], bool]:
    def check(view: DeploymentView) -> bool:
        live = [r for r in view.replicas if not r.status.final]
        up = [r for r in live if r.status is NodeStatus.RUNNING]
        return len(up) == count and len(live) == count

    return check


def rollout_phase(phase: str) -> Callable[[DeploymentView], bool]:
    def check(view: DeploymentView) -> bool:
        return view.rollout is not None and view.rollout.phase == phase

    return check


async def deploy_running(
    env: WorkflowEnvironment,
    task_queue: str,
    replicas: int,
    *,
    spec: DeploymentSpec = SPEC,
    policy: DeploymentPolicy = POLICY,
) -> tuple[Handle, DeploymentView]:
    """A deployment of ``replicas`` (``spec`` under ``policy``), once all of them run."""
    handle = await deploy(env, task_queue, replicas, spec=spec, policy=policy)
    return handle, await until(env, handle, running(replicas), f"{replicas} running")


@asynccontextmanager
async def deployment_running(
    env: WorkflowEnvironment,
    task_queue: str,
    replicas: int,
    fakes: FakeActivities | None = None,
    *,
    spec: DeploymentSpec = SPEC,
    policy: DeploymentPolicy = POLICY,
) -> AsyncIterator[tuple[FakeActivities, Handle, DeploymentView]]:
    """A worker on ``fakes`` (default: new ones) and a deployment of ``replicas``, all of
    them running: yields the fakes, the deployment's handle and that first running view."""
    fakes = fakes or FakeActivities()
    async with worker(env, task_queue, fakes):
        handle, view = await deploy_running(env, task_queue, replicas, spec=spec, policy=policy)
        yield fakes, handle, view


async def finish(handle: Handle) -> None:
    """Terminate the deployment and wait for its workflow to end."""
    await handle.execute_update(DeploymentWorkflow.terminate, TerminateDeploymentRequest())
    await handle.result()


async def lose(env: WorkflowEnvironment, fakes: FakeActivities, replica: ReplicaView) -> None:
    """Preempt a replica's cluster and have its NodeWorkflow notice now."""
    fakes.behaviour.cluster_statuses[named(replica)] = "TERMINATED"
    await env.client.get_workflow_handle(replica.workflow_id).signal(NodeWorkflow.check_health)


async def test_lost_replica_is_replaced(env: WorkflowEnvironment, task_queue: str) -> None:
    async with deployment_running(env, task_queue, 3) as (fakes, handle, view):
        lost = view.replicas[1]
        await lose(env, fakes, lost)
        view = await until(
            env,
            handle,
            lambda v: running(3)(v) and any(r.status is NodeStatus.LOST for r in v.replicas),
            "a replacement for the lost replica",
        )
        assert {r.replica for r in view.replicas if r.status is NodeStatus.RUNNING} == {0, 2, 3}
        assert view.serving_replicas == 3
        assert "deployment.replica_replaced" in fakes.deployment_events
        await finish(handle)


async def test_terminating_replicas_do_not_count(env: WorkflowEnvironment, task_queue: str) -> None:
    async with deployment_running(env, task_queue, 3) as (fakes, handle, _):
        fakes.behaviour.down_blocks = asyncio.Event()  # teardowns stay in `terminating`
        await handle.execute_update(DeploymentWorkflow.scale, ScaleDeploymentRequest(replicas=1))
        await until(
            env,
            handle,
            lambda v: sum(r.status is NodeStatus.TERMINATING for r in v.replicas) == 2,
            "two replicas terminating",
        )
        await handle.execute_update(DeploymentWorkflow.scale, ScaleDeploymentRequest(replicas=3))
        fakes.behaviour.down_blocks.set()
        view = await until(env, handle, running(3), "back at 3 running")
        assert len(view.replicas) == 5
        await finish(handle)


async def test_no_replica_starts_after_terminate(env: WorkflowEnvironment, task_queue: str) -> None:
    """A scale accepted before a terminate, another queued after it: none may start replicas
    once the terminate is accepted, and the deployment must end with every replica final."""
    fakes = FakeActivities()
    handle = await deploy(env, task_queue, 2)  # no worker yet: the messages queue up in order
    requests = []
    for request in (
        handle.execute_update(DeploymentWorkflow.scale, ScaleDeploymentRequest(replicas=3)),
        handle.execute_update(DeploymentWorkflow.terminate, TerminateDeploymentRequest()),
        handle.execute_update(DeploymentWorkflow.scale, ScaleDeploymentRequest(replicas=5)),
    ):
        requests.append(asyncio.create_task(request))
        await asyncio.sleep(0.5)
    async with worker(env, task_queue, fakes):
        answers = await asyncio.gather(*requests, return_exceptions=True)
        result = await asyncio.wait_for(handle.result(), 60)
    assert isinstance(answers[2], WorkflowUpdateFailedError), answers[2]
    assert all(r.status.final for r in result.replicas)
    assert len(fakes.calls["record_intent"]) <= 3, "a replica started after terminate"
    assert not [r for r in fakes.rows.values() if not r.status.final]


async def test_continues_as_new_carrying_the_replica_table(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    policy = POLICY.model_copy(update={"history_limit": 100})
    async with worker(env, task_queue, fakes):
        handle = await deploy(env, task_queue, 2, policy=policy)
        first_run = (await handle.describe()).run_id
        await until(env, handle, running(2), "2 running")
        for replicas in (3, 2, 3, 2, 3):  # each scale adds history
            await handle.execute_update(
                DeploymentWorkflow.scale, ScaleDeploymentRequest(replicas=replicas)
            )
            await until(env, handle, running(replicas), f"{replicas} running")
        latest = env.client.get_workflow_handle_for(DeploymentWorkflow.run, handle.id)
        assert (await latest.describe()).run_id != first_run, "never continued as new"
        view = await until(env, latest, running(3), "3 running after continue-as-new")
        assert len({r.workflow_id for r in view.replicas}) == len(view.replicas)
        launched = len(fakes.calls["record_intent"])
        await latest.execute_update(DeploymentWorkflow.terminate, TerminateDeploymentRequest())
        result = await latest.result()
    assert all(r.status.final for r in result.replicas)
    assert len(fakes.calls["record_intent"]) == launched, "continue-as-new relaunched"
    assert not [r for r in fakes.rows.values() if not r.status.final], "a child was left running"


async def test_replica_numbers_have_no_999_cap(env: WorkflowEnvironment, task_queue: str) -> None:
    spec = SPEC.node(1000)
    assert spec.replica == 1000
    assert spec.cluster_name.endswith("-1000")
    assert len(NodeSpec.model_validate({**spec.model_dump(), "replica": 10**12}).cluster_name) <= 40


async def test_name_reused_after_terminate_is_a_new_generation(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    async with worker(env, task_queue, fakes):
        first, old = await deploy_running(env, task_queue, 1)
        await finish(first)
        second, new = await deploy_running(env, task_queue, 1)
        assert new.generation != old.generation
        assert new.replicas[0].node_id != old.replicas[0].node_id
        await finish(second)


async def test_crash_loop_guard_degrades_keeps_healthy_and_scale_clears_it(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with deployment_running(env, task_queue, 2) as (fakes, handle, view):
        fakes.behaviour.failing_models.add(SPEC.model)  # every replacement crashes on start
        await lose(env, fakes, view.replicas[0])
        view = await until(env, handle, lambda v: v.degraded, "degraded", step=5)
        assert view.serving_replicas == 1, "the healthy replica must be kept"
        assert "3 replacements in a row" in (view.degraded_reason or "")
        assert "deployment.degraded" in fakes.deployment_events
        launches = len(fakes.calls["launch_cluster"])
        await env.sleep(600)
        assert len(fakes.calls["launch_cluster"]) == launches, "replaced while degraded"
        # Backoff between the failed replacements: 10 s, then 20 s (capped exponential).
        started = sorted(
            (r for r in (await handle.query(DeploymentWorkflow.status)).replicas if r.replica >= 2),
            key=lambda r: r.replica,
        )
        assert len(started) == 3
        times = [fakes.launch_times[named(r)] for r in started]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert gaps[0] >= 10, f"no backoff: {gaps}"
        assert gaps[1] >= 20, f"backoff did not double: {gaps}"
        fakes.behaviour.failing_models.clear()
        await handle.execute_update(DeploymentWorkflow.scale, ScaleDeploymentRequest(replicas=2))
        view = await until(env, handle, running(2), "healed after scale")
        assert not view.degraded
        assert "deployment.recovered" in fakes.deployment_events
        await finish(handle)


async def test_rolling_update_replaces_old_only_after_new_ready(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with deployment_running(env, task_queue, 2) as (fakes, handle, _):
        view = await handle.execute_update(
            DeploymentWorkflow.update, UpdateDeploymentRequest(model="org/llama-2", max_surge=1)
        )
        assert view.rollout is not None
        assert view.rollout.phase == "rolling"
        seen_old_and_new = False
        for _ in range(200):
            view = await handle.query(DeploymentWorkflow.status)
            assert view.rollout is not None
            serving = view.serving_replicas
            assert serving >= 2, f"capacity dipped during the rollout: {view}"
            seen_old_and_new |= view.rollout.old_replicas > 0 and view.rollout.new_replicas > 0
            if view.rollout.phase == "done":
                break
            await env.sleep(1)
        assert view.rollout is not None
        assert view.rollout.phase == "done"
        assert seen_old_and_new
        models = {fakes.rows[r.node_id].cluster_name: r for r in view.replicas}
        assert len(models) == 4
        live = [r for r in view.replicas if not r.status.final]
        assert {r.revision for r in live} == {1}
        assert "deployment.rollout_finished" in fakes.deployment_events
        await finish(handle)


async def test_update_that_never_gets_ready_rolls_back(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    fakes.behaviour.failing_models.add("org/broken")
    async with worker(env, task_queue, fakes):
        handle, before = await deploy_running(env, task_queue, 2)
        await handle.execute_update(
            DeploymentWorkflow.update, UpdateDeploymentRequest(model="org/broken")
        )
        view = await until(env, handle, rollout_phase("rolled_back"), "rolled back", step=5)
        assert view.revision == 0
        assert view.rollout is not None
        assert "crash-loop" in (view.rollout.reason or "")
        assert "deployment.rollout_rolled_back" in fakes.deployment_events
        kept = {r.replica for r in view.replicas if r.status is NodeStatus.RUNNING}
        assert kept == {r.replica for r in before.replicas}, "the old replicas must keep serving"
        # A new update after the rollback gets a revision of its own and rolls out.
        fakes.behaviour.failing_models.clear()
        view = await handle.execute_update(
            DeploymentWorkflow.update, UpdateDeploymentRequest(model="org/fixed")
        )
        assert view.revision == 2
        view = await until(env, handle, rollout_phase("done"), "the next rollout done", step=5)
        assert {r.revision for r in view.replicas if not r.status.final} == {2}
        await finish(handle)


async def test_update_after_terminate_is_rejected(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with deployment_running(env, task_queue, 1) as (fakes, handle, _):
        fakes.behaviour.down_blocks = asyncio.Event()  # the deployment stays terminating
        await handle.start_update(
            DeploymentWorkflow.terminate,
            TerminateDeploymentRequest(),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
        for request in (
            handle.execute_update(
                DeploymentWorkflow.update, UpdateDeploymentRequest(model="org/other")
            ),
            handle.execute_update(DeploymentWorkflow.scale, ScaleDeploymentRequest(replicas=3)),
        ):
            with pytest.raises(WorkflowUpdateFailedError) as rejected:
                await request
            assert "terminating" in str(rejected.value.cause)
        fakes.behaviour.down_blocks.set()
        result = await handle.result()
    assert len(result.replicas) == 1
    assert result.replicas[0].status is NodeStatus.TERMINATED


async def test_spot_falls_back_to_on_demand_after_capacity_failures(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities()
    policy = POLICY.model_copy(update={"spot_fallback_after": 1})
    spec = SPEC.model_copy(update={"spot": True})
    async with worker(env, task_queue, fakes):
        handle, view = await deploy_running(env, task_queue, 1, spec=spec, policy=policy)
        await lose(env, fakes, view.replicas[0])
        view = await until(
            env, handle, lambda v: running(1)(v) and len(v.replicas) == 2, "replaced"
        )
        assert view.on_demand_fallback
        last = fakes.calls["launch_cluster"][-1]
        assert last.spec.spot is False
        assert "deployment.spot_fallback" in fakes.deployment_events
        await finish(handle)


async def test_repair_exhausted_replica_replaced_new_first(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with deployment_running(env, task_queue, 2) as (fakes, handle, view):
        broken = view.replicas[0]
        # What NodeWorkflow reports once K restarts in place did not bring the model back.
        await handle.signal(
            DeploymentWorkflow.replica_status,
            ReplicaStatusSignal(
                replica=broken.replica,
                status=NodeStatus.UNHEALTHY,
                repair_exhausted=True,
                repairs=3,
            ),
        )
        view = await until(
            env,
            handle,
            lambda v: next(r for r in v.replicas if r.replica == broken.replica).status.final,
            "the broken replica retired",
        )
        replacement = next(r for r in view.replicas if r.replica == 2)
        assert replacement.status is NodeStatus.RUNNING
        terminated_at = fakes.events.index((broken.node_id, "node.terminating"))
        ready_at = fakes.events.index((replacement.node_id, "node.ready"))
        assert ready_at < terminated_at, "new first: the replacement was ready before teardown"
        await finish(handle)


async def test_cleanup_failed_replica_keeps_its_marker_and_is_replaced(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    from temporalio.exceptions import ApplicationError

    async with deployment_running(env, task_queue, 1) as (fakes, handle, view):
        fakes.behaviour.cluster_statuses[named(view.replicas[0])] = "STOPPED"
        fakes.behaviour.down_error = ApplicationError("down refused", non_retryable=True)
        await env.client.get_workflow_handle(view.replicas[0].workflow_id).signal(
            NodeWorkflow.check_health
        )
        view = await until(
            env,
            handle,
            lambda v: running(1)(v) and v.replicas[0].status is NodeStatus.CLEANUP_FAILED,
            "replaced, marker kept",
        )
        fakes.behaviour.down_error = None
        await env.sleep(3600)
        view = await handle.query(DeploymentWorkflow.status)
        assert view.replicas[0].status is NodeStatus.CLEANUP_FAILED, "marker dropped unconfirmed"
        # The reconciler confirms the teardown (the row says terminated): the marker clears.
        fakes.rows[view.replicas[0].node_id].status = NodeStatus.TERMINATED
        view = await until(
            env,
            handle,
            lambda v: v.replicas[0].status is NodeStatus.TERMINATED,
            "the leak marker cleared after confirmation",
            step=60,
        )


async def test_update_not_ready_by_its_deadline_rolls_back(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = FakeActivities(max_retries=1000)
    fakes.behaviour.slow_models.add("org/slow")  # never fails, never gets ready
    async with worker(env, task_queue, fakes):
        handle, before = await deploy_running(env, task_queue, 2)
        await handle.execute_update(
            DeploymentWorkflow.update, UpdateDeploymentRequest(model="org/slow", deadline_s=120)
        )
        view = await until(
            env, handle, rollout_phase("rolled_back"), "rolled back at the deadline", step=10
        )
        assert view.rollout is not None
        assert "deadline" in (view.rollout.reason or "")
        view = await until(
            env,
            handle,
            lambda v: (
                running(2)(v) and all(r.revision == 0 for r in v.replicas if not r.status.final)
            ),
            "the launching new replica retired",
        )
        assert {r.replica for r in view.replicas if r.status is NodeStatus.RUNNING} == {
            r.replica for r in before.replicas
        }
        await finish(handle)


async def test_cancelled_deployment_tears_every_replica_down(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """Children are abandoned on close (continue-as-new keeps them), so a cancel must reach
    each replica as a terminate request."""
    async with deployment_running(env, task_queue, 2) as (fakes, handle, view):
        await handle.cancel()
        for replica in view.replicas:
            node = env.client.get_workflow_handle_for(NodeWorkflow.run, replica.workflow_id)
            assert (await node.result()).status is NodeStatus.TERMINATED
    assert sorted(fakes.statuses()) == [NodeStatus.TERMINATED, NodeStatus.TERMINATED]


async def test_replicas_record_where_they_landed(env: WorkflowEnvironment, task_queue: str) -> None:
    fakes = FakeActivities()
    fakes.behaviour.location = "gcp/us-central1"  # the second candidate had the capacity
    spec = SPEC.model_copy(
        update={"fallback_locations": ({"provider": "gcp", "region": "us-central1"},)}
    )
    async with worker(env, task_queue, fakes):
        handle = await deploy(
            env, task_queue, 1, spec=DeploymentSpec.model_validate(spec.model_dump())
        )
        view = await until(env, handle, running(1), "running")
        assert view.replicas[0].location == "gcp/us-central1"
        launched = fakes.calls["launch_cluster"][0].spec
        assert [loc.infra for loc in launched.locations] == ["aws/us-east-1", "gcp/us-central1"]
        ready = [
            c for c in fakes.calls["record_transition"] if c.transition.target is NodeStatus.RUNNING
        ]
        assert ready[0].location == "gcp/us-central1"  # into the node.ready event's payload
        await finish(handle)
