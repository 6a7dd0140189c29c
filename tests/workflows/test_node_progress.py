"""Where a node stands: phase, progress and since in the status query, the workflow's current
details, and the search attributes a node and a deployment carry (issue 14)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from activities.progress import ProgressReporter
from controlplane.launch_progress import NodePhase
from controlplane.lifecycle import NodeStatus
from controlplane.spec import NodeSpec
from tests.support.specs import deployment_spec, node_spec
from tests.workflows.fakes import FakeActivities
from tests.workflows.test_node_workflow import start
from tests.workflows.workers import DEPLOYMENT_WORKFLOWS, running_worker, start_deployment
from workflows import search_attributes as attrs
from workflows.deployment import DeploymentWorkflow
from workflows.models import (
    DeploymentInput,
    NodeView,
    TerminateDeploymentRequest,
    TerminateNodeRequest,
    WaitReadyInput,
    WaitReadyResult,
)
from workflows.node import NodeWorkflow

# What the launch log of a real 0.14.1 launch says, in order (abridged).
LAUNCH_LOG = [
    "Waiting for 'sky.launch' request to be scheduled: 3bf16f34" + " " * 40,
    "Considered resources (1 node):",
    "\x1b[1m⚙︎ Launching on AWS us-east-1 (us-east-1a) (A100:1).\x1b[0m",
    "└── Instance is up.",
    "✓ Cluster launched: cpn-x.  View logs: sky logs --provision cpn-x",
    "⚙︎ Syncing files.",
    "⚙︎ Running setup on 1 VM.",
    "Setup: installing vLLM…",
]


def spec(tenant: str = "acme") -> NodeSpec:
    return node_spec(tenant=tenant, model="org/llama", deployment=f"d{uuid.uuid4().hex[:6]}")


class LoggingLaunch(FakeActivities):
    """wait_ready reads a launch log through the real reporter, then waits to be released.

    ``spaced_s``: the pause after each line (0: the whole log at once). ``hold``: False ends
    the activity as soon as the log is read, inside its quiet start."""

    def __init__(
        self, *, quiet_start_s: float = 1.0, spaced_s: float = 0.0, hold: bool = True
    ) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.quiet_start_s = quiet_start_s
        self.spaced_s = spaced_s
        self.hold = hold

    @activity.defn(name="wait_ready")
    async def wait_ready(self, input: WaitReadyInput) -> WaitReadyResult:
        async with ProgressReporter(quiet_start_s=self.quiet_start_s).running() as progress:
            for line in LAUNCH_LOG:
                progress.line(line)
                if self.spaced_s:
                    activity.heartbeat()
                    await asyncio.sleep(self.spaced_s)
            while self.hold and not self.release.is_set():
                activity.heartbeat()
                await asyncio.sleep(0.05)
        return WaitReadyResult(endpoint=f"127.0.0.1:8000/{input.cluster_name}")


async def until(handle: WorkflowHandle[Any, NodeView], check: Any, what: str) -> NodeView:
    for _ in range(400):
        view: NodeView = await handle.query("status", result_type=NodeView)
        if check(view):
            return view
        await asyncio.sleep(0.05)
    raise AssertionError(f"never saw {what}; last {view}")


async def current_details(handle: WorkflowHandle[Any, Any]) -> str:
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    return str(metadata.current_details)


async def signals(handle: WorkflowHandle[Any, Any], name: str) -> int:
    history = await handle.fetch_history()
    return sum(
        1
        for event in history.events
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED
        and event.workflow_execution_signaled_event_attributes.signal_name == name
    )


@asynccontextmanager
async def setting_up(
    env: WorkflowEnvironment, task_queue: str
) -> AsyncIterator[
    tuple[LoggingLaunch, NodeSpec, WorkflowHandle[NodeWorkflow, NodeView], NodeView]
]:
    """A node whose launch log reached the setting_up phase; its wait_ready not released yet."""
    fakes = LoggingLaunch()
    node = spec()
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue, node)
        view = await until(
            handle, lambda v: v.phase is NodePhase.SETTING_UP, "the setting_up phase"
        )
        yield fakes, node, handle, view


async def test_phase_and_progress_follow_the_launch_log(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with setting_up(env, task_queue) as (fakes, node, handle, view):
        assert view.status is NodeStatus.LAUNCHING
        assert view.progress == "Syncing files."
        assert view.since is not None
        details = await current_details(handle)
        assert "launching" in details, details
        assert "setting_up" in details, details
        # The log went through provisioning and setting_up within the activity's first
        # second: that quiet start is told as one signal, of the phase it ended in.
        assert await signals(handle, "launch_progress") == 1
        fakes.release.set()
        view = await until(handle, lambda v: v.status is NodeStatus.RUNNING, "running")
        assert view.phase is NodePhase.READY
        assert view.progress == f"serving at 127.0.0.1:8000/{node.cluster_name}"
        assert "ready" in await current_details(handle)
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        final = await handle.result()
    assert final.status is NodeStatus.TERMINATED
    assert final.phase is NodePhase.TERMINATING
    assert final.progress == "terminated"


async def test_each_phase_after_the_quiet_start_is_one_signal(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = LoggingLaunch(quiet_start_s=0.2, spaced_s=0.3)
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue, spec())
        await until(handle, lambda v: v.phase is NodePhase.SETTING_UP, "the setting_up phase")
        # provisioning and setting_up, each told once however many lines it logged
        assert await signals(handle, "launch_progress") == 2
        fakes.release.set()
        await until(handle, lambda v: v.status is NodeStatus.RUNNING, "running")
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())


async def test_a_launch_over_within_its_quiet_start_sends_no_progress(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = LoggingLaunch(hold=False)
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue, spec())
        view = await until(handle, lambda v: v.status is NodeStatus.RUNNING, "running")
        assert view.phase is NodePhase.READY
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        await handle.result()
    # Its phases are not worth a signal and a workflow task each: the result tells more.
    assert await signals(handle, "launch_progress") == 0


async def test_a_late_or_backward_phase_is_ignored(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    async with setting_up(env, task_queue) as (fakes, _, handle, _):
        await handle.signal(
            "launch_progress", {"phase": "provisioning", "progress": "Launching on GCP"}
        )
        fakes.release.set()
        await until(handle, lambda v: v.status is NodeStatus.RUNNING, "running")
        await handle.signal("launch_progress", {"phase": "loading_model", "progress": "late"})
        view = await handle.query(NodeWorkflow.status)
        assert (view.phase, view.progress) == (NodePhase.READY, view.progress)
        assert view.progress != "late"
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())


async def test_node_carries_search_attributes_and_upserts_its_status(
    local_env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = LoggingLaunch()
    fakes.release.set()
    node = spec(tenant=f"t{uuid.uuid4().hex[:6]}")
    async with running_worker(local_env, task_queue, fakes):
        handle = await start(
            local_env,
            task_queue,
            node,
            search_attributes=attrs.node_attributes(node, NodeStatus.PENDING),
        )
        await until(handle, lambda v: v.status is NodeStatus.RUNNING, "running")
        described = (await handle.describe()).typed_search_attributes
        assert described.get(attrs.NODE_STATUS) == "running"
        assert described.get(attrs.TENANT) == node.tenant
        assert described.get(attrs.GPU_TYPE) == "A100"
        query = f"Tenant='{node.tenant}' AND NodeStatus='running'"
        assert await listed(local_env, query) == [handle.id]
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        await handle.result()
        described = (await handle.describe()).typed_search_attributes
        assert described.get(attrs.NODE_STATUS) == "terminated"


async def test_a_node_started_without_attributes_never_upserts(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = LoggingLaunch()
    fakes.release.set()
    async with running_worker(env, task_queue, fakes):
        handle = await start(env, task_queue, spec())
        await until(handle, lambda v: v.status is NodeStatus.RUNNING, "running")
        await handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest())
        await handle.result()
        history = await handle.fetch_history()
    # The SDK's own patch bookkeeping (TemporalChangeVersion) is no attribute of ours.
    upserted = {
        name
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES
        for name in e.upsert_workflow_search_attributes_event_attributes.search_attributes.indexed_fields  # noqa: E501
    }
    assert upserted <= {"TemporalChangeVersion"}


async def listed(environment: WorkflowEnvironment, query: str, expect: int = 1) -> list[str]:
    """Workflow ids matching a visibility query (the dev server's visibility lags a little)."""
    ids: list[str] = []
    for _ in range(100):
        ids = [w.id async for w in environment.client.list_workflows(query)]
        if len(ids) >= expect:
            return sorted(ids)
        await asyncio.sleep(0.1)
    return sorted(ids)


async def test_deployment_and_its_replicas_carry_search_attributes(
    local_env: WorkflowEnvironment, task_queue: str
) -> None:
    fakes = LoggingLaunch()
    fakes.release.set()
    tenant = f"t{uuid.uuid4().hex[:6]}"
    deployment = deployment_spec(tenant=tenant, model="org/llama", name="blue")
    async with running_worker(local_env, task_queue, fakes, DEPLOYMENT_WORKFLOWS):
        handle = await start_deployment(
            local_env,
            task_queue,
            DeploymentInput(deployment=deployment, replicas=2),
            search_attributes=attrs.deployment_attributes(tenant, "blue", "launching"),
        )
        query = f"Tenant='{tenant}' AND Deployment='blue' AND NodeStatus='running'"
        replicas = await listed(local_env, query, expect=2)
        assert len(replicas) == 2, replicas
        for _ in range(100):
            described = (await handle.describe()).typed_search_attributes
            if described.get(attrs.DEPLOYMENT_STATUS) == "running":
                break
            await asyncio.sleep(0.1)
        assert described.get(attrs.DEPLOYMENT_STATUS) == "running"
        child = local_env.client.get_workflow_handle(replicas[0])
        summary = await (await child.describe()).static_summary()
        assert summary is not None
        assert tenant in summary, summary
        assert "replica" in summary, summary
        await handle.execute_update(
            DeploymentWorkflow.terminate, TerminateDeploymentRequest(reason="test")
        )
        await handle.result()
        described = (await handle.describe()).typed_search_attributes
        assert described.get(attrs.DEPLOYMENT_STATUS) == "terminated"
