"""The interleaving matrix (issue 10): every step x every fault x every message, for NodeWorkflow.

At each step of a node's life (each activity call, and the start of a run after
continue-as-new) the fake activity holds the step, the test sends one message (terminate update,
request_terminate signal, workflow cancel, a parent's scale-down, check_health), then the step
fails with one fault. Each case then asserts what must hold whatever happened:

- the workflow ends, or keeps serving (RUNNING) when nothing asked it to end;
- the row ends final with exactly one final event (if the workflow died leaving it live, the
  reconciler's recovery, activities/recovery.py, is run and must finish it: counted, printed);
- no fake cluster is alive without a live or cleanup_failed row (the reconciler always retries
  cleanup_failed teardowns);
- every event is recorded once (node.launched once per launch attempt);
- the terminate update answers a final status or still_terminating.

Faults (tests/workflows/fakes.py): worker_dies (the effect happens, then the attempt is lost
and retried), permanent, transient (nothing happens, the attempt is retried), timeout (the
attempt stops heartbeating: Temporal times it out and retries it), db_down (16 min of server
time: longer than the old 15-minute deadline; the local steps' backoffs are workflow timers,
which the server skips) and not_found.

Pruned as identical or not applicable, and so not generated:
- db_down on SkyPilot steps and not_found on database steps: not applicable;
- timeout on the database steps and the health check: their start-to-close (30 s, 2 min) runs
  in real time while the attempt hangs; to the workflow it is a retried attempt whose effect
  happened (worker_dies) or did not (transient), and both run;
- continue-as-new has no activity of its own: it is entered as the new run starts from its
  resume state, with each message (a parent's scale-down of it is the request_terminate
  signal); the faults of the steps after it are the other cases.

The selected cases run side by side (CONCURRENT at a time, each on its own node) on one
time-skipping server and one worker, the db_down cases on a second one; each test then reports
its own case. Run: .venv/bin/python -m pytest tests/workflows/test_interleavings.py -q -s
(prints the matrix's size); docs/reliability.md has the figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
from temporalio.api.testservice.v1 import UnlockTimeSkippingRequest
from temporalio.client import (
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowUpdateStage,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.recovery import recover_node, workflow_running
from controlplane.lifecycle import FINAL_STATUSES, LaunchMode, NodeStatus
from controlplane.spec import NodeSpec
from tests.support.specs import node_spec
from tests.support.temporal_env import test_server_path as server_path  # not a test
from tests.workflows.fakes import (
    DB_DOWN,
    NOT_FOUND,
    PERMANENT,
    TIMEOUT,
    TRANSIENT,
    WORKER_DIES,
    FakeActivities,
    Fault,
    Row,
)
from workflows.deployment import DeploymentWorkflow, node_workflow_id
from workflows.models import (
    DeploymentInput,
    DeploymentSpec,
    NodePlan,
    NodeState,
    NodeView,
    NodeWorkflowInput,
    ScaleDeploymentRequest,
    TerminateDeploymentRequest,
    TerminateNodeRequest,
    TerminateNodeResponse,
)
from workflows.node import NodeWorkflow

DB_STEPS = ["intent", "credential", "t_launched", "t_ready", "t_terminating", "t_terminated"]
SKY_STEPS = ["launch", "wait_ready", "down"]  # heartbeating activities
HEALTH = "health"
REGULAR_STEPS = {*SKY_STEPS, HEALTH}  # activity tasks (the database steps are local)
CAN = "continue_as_new"
MESSAGES = ["terminate_update", "request_terminate", "cancel", "scale_down", "check_health"]
AFTER_RUNNING = {HEALTH, "t_terminating", "down", "t_terminated"}
TERMINATE_PATH = {"t_terminating", "down", "t_terminated"}
FINAL_EVENTS = {f"node.{status.value}" for status in FINAL_STATUSES}
QUEUE = "interleavings"


def faults_for(step: str) -> list[str]:
    if step in DB_STEPS:
        return [WORKER_DIES, PERMANENT, TRANSIENT, DB_DOWN]
    if step == HEALTH:
        return [WORKER_DIES, PERMANENT, TRANSIENT, NOT_FOUND]
    if step == CAN:
        return ["none"]
    return [WORKER_DIES, PERMANENT, TRANSIENT, TIMEOUT, NOT_FOUND]


@dataclass(frozen=True)
class Case:
    step: str
    fault: str
    message: str

    @property
    def id(self) -> str:
        return f"{self.step}-{self.fault}-{self.message}"


STEP_ORDER = [
    "intent",
    "credential",
    "launch",
    "t_launched",
    "wait_ready",
    "t_ready",
    HEALTH,
    "t_terminating",
    "down",
    "t_terminated",
    CAN,
]
CASES = [
    Case(step, fault, message)
    for step in STEP_ORDER
    for fault in faults_for(step)
    for message in MESSAGES
    # A resumed run's parent scale-down is the request_terminate signal case.
    if not (step == CAN and message == "scale_down")
]
RECOVERED: list[str] = []
UPDATE_ERRORS: list[str] = []  # updates that got an error instead of an answer (printed)
FAULTS = [WORKER_DIES, PERMANENT, TRANSIENT, TIMEOUT, DB_DOWN, NOT_FOUND]
CONCURRENT = 32  # cases in flight at once, each on its own node


def matrix_size(run: int) -> str:
    return (
        f"interleaving matrix: {len(STEP_ORDER)} steps x {len(FAULTS)} faults x "
        f"{len(MESSAGES)} messages = {len(STEP_ORDER) * len(FAULTS) * len(MESSAGES)}; "
        f"{len(CASES)} cases once the pruned ones are taken out (see the docstring), {run} run"
    )


@dataclass
class Shared:
    env: WorkflowEnvironment
    fakes: FakeActivities
    counter: itertools.count[int]


@pytest.fixture(scope="module")
async def outcomes(request: pytest.FixtureRequest) -> dict[str, BaseException | None]:
    """Run every selected case, side by side; each test then reads its own outcome."""
    selected = [
        case
        for item in request.session.items
        if isinstance(item, pytest.Function) and item.module is request.module
        for case in [getattr(item, "callspec", None) and item.callspec.params.get("case")]
        if isinstance(case, Case)
    ]
    results: dict[str, BaseException | None] = {}
    # The outages get a server of their own: their timers skip only while nothing else runs
    # on it, and the other cases' activities keep it busy.
    await asyncio.gather(
        run_cases([c for c in selected if c.fault != DB_DOWN], results),
        run_cases([c for c in selected if c.fault == DB_DOWN], results),
    )
    print(
        f"\n{matrix_size(len(selected))}; recovered by the reconciler's recovery: "
        f"{len(RECOVERED)} {RECOVERED}; terminate updates answered with an error: "
        f"{len(UPDATE_ERRORS)} {UPDATE_ERRORS}"
    )
    return results


async def run_cases(cases: list[Case], results: dict[str, BaseException | None]) -> None:
    """The cases on one time-skipping server and one worker, at most CONCURRENT at a time."""
    if not cases:
        return
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=server_path(), data_converter=pydantic_data_converter
    )
    fakes = FakeActivities(max_retries=2)
    fakes.plan_args["heartbeat_timeout_s"] = 1.0
    fakes.plan_args["health_interval_s"] = 600.0  # few timers to skip through
    fakes.settle_s = 0.8  # no activity completes inside the task that cancels it (fakes.py)
    fakes.behaviour.admitted_nodes = set()  # the cases' own nodes, added as they start
    gate = asyncio.Semaphore(CONCURRENT)
    shared = Shared(env, fakes, itertools.count())

    async def one(case: Case) -> None:
        async with gate:
            try:
                async with asyncio.timeout(90):
                    await run_case(shared, case)
                results[case.id] = None
            except Exception as error:  # noqa: BLE001 - reported by the case's own test
                results[case.id] = error

    worker = Worker(
        env.client,
        task_queue=QUEUE,
        workflows=[NodeWorkflow, DeploymentWorkflow],
        activities=fakes.all(),
        max_concurrent_activities=200,
        max_concurrent_local_activities=200,
    )
    try:
        # The clock skips whenever nothing runs, for all the cases: awaiting one case's result
        # must not decide when another's timers fire (nor lock and unlock by turns).
        with env.auto_time_skipping_disabled():
            async with worker, fakes.admission_worker(env.client, QUEUE):
                await env.client.test_service.unlock_time_skipping(UnlockTimeSkippingRequest())
                await asyncio.gather(*(one(case) for case in cases))
    finally:
        await env.shutdown()


def spec_for(index: int) -> NodeSpec:
    return node_spec(model="org/llama", deployment=f"m{index}-{uuid.uuid4().hex[:4]}")


async def status_of(handle: WorkflowHandle[Any, Any]) -> NodeStatus | None:
    try:
        view = await handle.query(NodeWorkflow.status)
    except Exception:  # noqa: BLE001 - a workflow that ended or has not started answers nothing
        return None
    return NodeView.model_validate(view).status if isinstance(view, dict) else view.status


async def until(check: Any, what: str, seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what} never happened")


async def ended(handle: WorkflowHandle[Any, Any]) -> bool:
    try:
        return (await handle.describe()).status is not WorkflowExecutionStatus.RUNNING
    except Exception:  # noqa: BLE001 - not started yet
        return False


async def start_case(
    s: Shared, case: Case, spec: NodeSpec, fault: Fault | None
) -> tuple[WorkflowHandle[Any, Any], Any]:
    client = s.env.client
    workflow_id = node_workflow_id(spec.node_id)
    admitted = s.fakes.behaviour.admitted_nodes
    assert admitted is not None
    admitted.add(spec.node_id)
    if fault is not None:
        s.fakes.faults[workflow_id] = fault
    if case.message == "scale_down":
        deployment = DeploymentSpec(
            tenant=spec.tenant,
            model=spec.model,
            provider=spec.provider,
            region=spec.region,
            gpu_type=spec.gpu_type,
            gpu_count=spec.gpu_count,
            name=spec.deployment,
        )
        parent = await client.start_workflow(
            DeploymentWorkflow.run,
            DeploymentInput(deployment=deployment, replicas=1),
            id=f"deployment-{spec.deployment}",
            task_queue=QUEUE,
        )
        # The child's node id carries the parent's generation (its run id): known at once,
        # several task round trips before the child's first step.
        assert parent.result_run_id is not None
        node_spec = deployment.node(0, generation=parent.result_run_id.replace("-", "")[:10])
        admitted.add(node_spec.node_id)  # its replacements stay queued (fakes.Behaviour)
        if fault is not None:
            s.fakes.faults[node_workflow_id(node_spec.node_id)] = fault
        return client.get_workflow_handle(node_workflow_id(node_spec.node_id)), (
            parent,
            node_spec,
        )
    if case.step == CAN:
        s.fakes.rows[spec.node_id] = Row(
            node_id=spec.node_id,
            cluster_name=spec.cluster_name,
            workflow_id=workflow_id,
            launch_mode=LaunchMode.API,
            status=NodeStatus.RUNNING,
            request_id="req-0",
            endpoint="127.0.0.1:8000",
        )
        s.fakes.clusters.add(spec.cluster_name)
        s.fakes.ever_launched.add(spec.cluster_name)
        plan = NodePlan(
            node_id=spec.node_id,
            cluster_name=spec.cluster_name,
            launch_mode=LaunchMode.API,
            **s.fakes.plan_args,
        )
        resume = NodeState(plan=plan, status=NodeStatus.RUNNING, endpoint="127.0.0.1:8000")
        handle = await client.start_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(spec=spec, resume=resume),
            id=workflow_id,
            task_queue=QUEUE,
        )
        return handle, None
    handle = await client.start_workflow(
        NodeWorkflow.run, NodeWorkflowInput(spec=spec), id=workflow_id, task_queue=QUEUE
    )
    return handle, None


async def send(
    case: Case, handle: WorkflowHandle[Any, Any], parent: Any
) -> asyncio.Future[TerminateNodeResponse] | None:
    request = TerminateNodeRequest(reason=f"matrix {case.id}")
    if case.message == "terminate_update":
        # Not awaited to ACCEPTED: the clock only skips while a result is awaited.
        return asyncio.ensure_future(handle.execute_update(NodeWorkflow.terminate, request))
    if case.message == "request_terminate":
        await handle.signal(NodeWorkflow.request_terminate, request)
    elif case.message == "cancel":
        await handle.cancel()
    elif case.message == "scale_down":
        await parent[0].start_update(
            DeploymentWorkflow.scale,
            ScaleDeploymentRequest(replicas=0),
            wait_for_stage=WorkflowUpdateStage.ACCEPTED,
        )
    else:
        await handle.signal(NodeWorkflow.check_health)
    return None


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_interleaving(outcomes: dict[str, BaseException | None], case: Case) -> None:
    error = outcomes[case.id]
    if error is not None:
        raise error


async def run_case(shared: Shared, case: Case) -> None:
    s = shared
    fakes = s.fakes
    spec = spec_for(next(s.counter))
    fault = None if case.fault == "none" else Fault(case.step, case.fault)
    if fault is not None and case.step in REGULAR_STEPS:
        # The message may cancel the held activity; a real one would see that at its next
        # heartbeat before failing (the test server never resolves a cancel-requested
        # activity that then fails retryably, and wedges a task that cancels an activity
        # completed while it ran: sdk-java #2391).
        fault.linger_s = 1.5
    handle, parent = await start_case(s, case, spec, fault)
    if parent is not None:
        spec = parent[1]
    node_id, cluster = spec.node_id, spec.cluster_name

    # Drive the node to the step, hold it there, send the message, then let the fault happen.
    if case.step in AFTER_RUNNING:
        await until(lambda: _is(handle, NodeStatus.RUNNING), f"{case.id}: node running", seconds=60)
        if case.step == HEALTH:
            await handle.signal(NodeWorkflow.check_health)
        else:
            await handle.signal(NodeWorkflow.request_terminate, TerminateNodeRequest())
    if fault is not None:
        reached = asyncio.ensure_future(fault.reached.wait())
        done = asyncio.ensure_future(until(lambda: ended(handle), "end", seconds=60))
        await asyncio.wait([reached, done], return_when=asyncio.FIRST_COMPLETED)
        done.cancel()
        assert fault.reached.is_set(), f"{case.id}: the step was never reached"
    update = await send(case, handle, parent)
    if fault is not None:
        fault.release.set()

    # Let it settle; then end what is still running (time skips while the result is awaited).
    if case.message == "check_health":
        await asyncio.sleep(0.2)
        if not await ended(handle):
            status = await status_of(handle)
            assert status is not None, f"{case.id}: running but answers no status"
            if not status.final:  # final: it is completing
                with contextlib.suppress(RPCError):  # it may complete meanwhile
                    await handle.signal(NodeWorkflow.request_terminate, TerminateNodeRequest())
    await _result(handle)
    if update is not None:
        try:
            answer = await asyncio.wait_for(update, 30)
        except Exception as error:  # noqa: BLE001 - a workflow that failed fails its update
            answer = None
            UPDATE_ERRORS.append(f"{case.id}: {type(error).__name__}")
        if answer is None:
            assert await ended(handle), f"{case.id}: the update failed but the node runs on"
        if answer is not None:
            assert answer.status.final or answer.still_terminating, f"{case.id}: {answer}"

    row = fakes.rows.get(node_id)
    if row is not None and not row.status.final:
        # The workflow ended with its row live: the reconciler's recovery must finish it.
        print(f"{case.id}: workflow ended with the row {row.status}; recovering")
        assert await ended(handle)
        assert not await workflow_running(s.env.client, row.workflow_id)
        await recover_node(
            s.env.client,
            workflow_id=row.workflow_id,
            spec=spec,
            launch_mode=row.launch_mode,
            mode="teardown",
            task_queue=QUEUE,
        )
        await _result(s.env.client.get_workflow_handle(row.workflow_id))
        RECOVERED.append(case.id)
    if parent is not None:
        await parent[0].execute_update(
            DeploymentWorkflow.terminate, TerminateDeploymentRequest(reason="matrix case done")
        )
        await _result(parent[0])

    mine = [event for nid, event in fakes.events if nid == node_id]
    if row is None:
        assert case.step == "intent", f"{case.id}: no row"
        assert cluster not in fakes.clusters
        return
    assert row.status.final, f"{case.id}: row {row.status}"
    finals = [event for event in mine if event in FINAL_EVENTS]
    allowed = [["node.lost", "node.cleanup_failed"]]
    assert len(finals) == 1 or finals in allowed, f"{case.id}: final events {finals}"
    repeated = {e: n for e, n in Counter(mine).items() if n > 1 and e != "node.launched"}
    assert not repeated, f"{case.id}: events recorded twice {repeated}"
    if cluster in fakes.clusters:
        assert row.status is NodeStatus.CLEANUP_FAILED, f"{case.id}: cluster alive, {row.status}"


async def _is(handle: WorkflowHandle[Any, Any], status: NodeStatus) -> bool:
    return await status_of(handle) is status


async def _result(handle: WorkflowHandle[Any, Any]) -> None:
    while True:
        try:
            await asyncio.wait_for(handle.result(), 120)
        except TimeoutError:
            raise
        except RuntimeError as error:
            # The test server ends a long poll of the history without its next page, which
            # the SDK takes for the end (sdk-dotnet #63): the workflow still runs; ask again.
            if "No completion event found" not in str(error):
                raise
            continue
        except Exception:  # noqa: BLE001, S110 - failed/cancelled workflows: checked by their row
            pass
        return
