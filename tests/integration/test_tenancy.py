"""The tenant boundary and the attach rule, on the dev server, the simulator and Postgres.

- ``ControlPlane.for_tenant(t)``: every call on another tenant's node, deployment or cluster
  is the same NotFound as for nothing at all, naming neither that tenant nor its resources,
  and nothing is read, signalled or terminated.
- An attach (a second start of a workflow id) happens only when that workflow runs the very
  spec asked for: a workflow squatting a node's id is refused; the cross-tenant collision found
  against the old names (issue 8) no longer attaches the victim to the attacker's node.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from datetime import timedelta
from typing import Any

import pytest
from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    WorkflowFailureError,
    WorkflowHandle,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

import starter.api
from controlplane.db.engine import create_engine
from controlplane.db.repository import NewNode, NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.spec import NodeSpec
from starter.api import ControlPlane, IdentityConflict, NotFound
from tests.integration.conftest import Stack
from tests.support.specs import deployment_spec as deployment_of
from tests.support.specs import node_spec as spec_of
from workflows.deployment import (
    deployment_workflow_id,
    legacy_deployment_workflow_id,
    legacy_node_workflow_id,
    node_workflow_id,
)
from workflows.models import DeploymentInput, DeploymentSpec, NodeWorkflowInput
from workflows.node import NodeWorkflow

WAIT = timedelta(seconds=30)
MODEL = "NousResearch/Meta-Llama-3-8B-Instruct"


def node_spec(tenant: str, deployment: str = "default", replica: int = 0) -> NodeSpec:
    return spec_of(tenant=tenant, model=MODEL, deployment=deployment, replica=replica)


def deployment_spec(tenant: str, name: str) -> DeploymentSpec:
    return deployment_of(tenant=tenant, model=MODEL, name=name)


@asynccontextmanager
async def cleanup(client: Client) -> AsyncIterator[list[str]]:
    """Workflow ids to terminate at the end, so nothing outlives the test in the session."""
    ids: list[str] = []
    try:
        yield ids
    finally:
        for workflow_id in ids:
            with suppress(RPCError):
                await client.get_workflow_handle(workflow_id).terminate("test over")


async def squat(
    client: Client, workflow_id: str, spec: NodeSpec
) -> WorkflowHandle[NodeWorkflow, object]:
    """A NodeWorkflow started by hand (Temporal CLI, old code) on a queue no worker polls."""
    return await client.start_workflow(
        NodeWorkflow.run,
        NodeWorkflowInput(spec=spec),
        id=workflow_id,
        task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )


def assert_names_nothing_of(error: BaseException, given: str, *secrets: str) -> None:
    """Beyond echoing ``given`` (what the caller typed), the error names none of ``secrets``."""
    said = str(error).replace(given, "<given>")
    for secret in secrets:
        assert secret not in said, (secret, str(error))


# --- the tenant-scoped facade ---------------------------------------------------------------------
async def test_a_tenant_reaches_only_its_own_node_and_cluster(worker: Stack) -> None:
    owner, intruder = f"ta{uuid.uuid4().hex[:6]}", f"tb{uuid.uuid4().hex[:6]}"
    mine = worker.control.for_tenant(owner)
    theirs = worker.control.for_tenant(intruder)
    spec = node_spec(owner, deployment=f"n{uuid.uuid4().hex[:6]}")
    async with cleanup(worker.client) as ids:
        started = await mine.launch_node(spec, launch_mode=LaunchMode.API)
        ids.append(started.workflow_id)
        view = await mine.wait_for_node(
            started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT
        )
        assert view.status is NodeStatus.RUNNING
        cluster = started.cluster_name

        absent = f"node-{uuid.uuid4()}"
        with pytest.raises(NotFound) as nothing:
            await theirs.node_status(absent)
        wid = started.workflow_id
        for call in (
            lambda: theirs.node_status(wid),
            lambda: theirs.terminate_node(wid),
            lambda: theirs.wait_for_node(wid, until={NodeStatus.RUNNING}, timeout=WAIT),
        ):
            with pytest.raises(NotFound) as refused:
                await call()
            # The same words as for a workflow that does not exist.
            assert str(refused.value) == str(nothing.value).replace(absent, wid)
            assert_names_nothing_of(refused.value, wid, owner, cluster)
        with pytest.raises(NotFound) as refused:
            await theirs.terminate_cluster(cluster, wait=WAIT)
        assert_names_nothing_of(refused.value, cluster, owner, spec.node_id, wid)
        assert worker.simulator.cluster_status(cluster) == "UP"
        assert (await mine.node_status(started.workflow_id)).status is NodeStatus.RUNNING

        listed = {item["workflow_id"] for item in await theirs.list_nodes()}
        assert started.workflow_id not in listed
        assert started.workflow_id in {item["workflow_id"] for item in await mine.list_nodes()}
        with pytest.raises(ValueError, match=r"spec\.tenant"):
            await theirs.launch_node(spec)

        done = await mine.terminate_cluster(cluster, wait=WAIT)
        assert done is not None
        assert done.delegated_to == started.workflow_id
        final = await worker.client.get_workflow_handle_for(
            NodeWorkflow.run, started.workflow_id
        ).result()
        assert final.status is NodeStatus.TERMINATED
    assert worker.simulator.cluster_status(cluster) is None


async def test_a_tenant_reaches_only_its_own_deployment(worker: Stack) -> None:
    owner, intruder = f"ta{uuid.uuid4().hex[:6]}", f"tb{uuid.uuid4().hex[:6]}"
    mine = worker.control.for_tenant(owner)
    theirs = worker.control.for_tenant(intruder)
    spec = deployment_spec(owner, f"d{uuid.uuid4().hex[:6]}")
    async with cleanup(worker.client) as ids:
        workflow_id = await mine.launch_deployment(spec, 1, launch_mode=LaunchMode.API)
        ids += [workflow_id, node_workflow_id(spec.node(0).node_id)]
        calls: list[Callable[[], Awaitable[object]]] = [
            lambda: theirs.deployment_status(workflow_id),
            lambda: theirs.scale_deployment(workflow_id, 3),
            lambda: theirs.terminate_deployment(workflow_id),
        ]
        for call in calls:
            with pytest.raises(NotFound) as refused:
                await call()
            assert_names_nothing_of(refused.value, workflow_id, owner, spec.node(0).node_id)
        view = await mine.deployment_status(workflow_id)
        assert view.desired_replicas == 1
        assert not view.terminating
        with pytest.raises(ValueError, match=r"spec\.tenant"):
            await theirs.launch_deployment(spec, 1)
        ended = await mine.terminate_deployment(workflow_id)
        assert ended.terminating


# --- attach only to the very spec asked for -------------------------------------------------------
async def test_a_workflow_squatting_a_nodes_id_is_refused_not_attached(worker: Stack) -> None:
    victim = node_spec(f"v{uuid.uuid4().hex[:6]}")
    attacker = node_spec(f"a{uuid.uuid4().hex[:6]}")
    control = worker.control
    async with cleanup(worker.client) as ids:
        squatted = node_workflow_id(victim.node_id)
        ids.append(squatted)
        # Started by hand under the victim's id, with the attacker's spec, on the real worker.
        await worker.client.start_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(spec=attacker, launch_mode=LaunchMode.API),
            id=squatted,
            task_queue=control.task_queue,
        )
        running = await control.wait_for_node(squatted, until={NodeStatus.RUNNING}, timeout=WAIT)
        assert running.node_id == attacker.node_id
        with pytest.raises(IdentityConflict, match="nothing was started or attached") as refused:
            await control.launch_node(victim)
        assert attacker.tenant not in str(refused.value)
        assert attacker.node_id not in str(refused.value)
        await control.terminate_node(squatted)
    launches = worker.simulator.counters()["launch_requests"]
    assert launches.get(victim.cluster_name) is None
    assert launches.get(attacker.cluster_name) == 1


async def test_a_cluster_name_taken_by_another_node_fails_the_launch_before_it_starts(
    worker: Stack,
) -> None:
    victim = node_spec(f"v{uuid.uuid4().hex[:6]}")
    squatter = node_spec(f"s{uuid.uuid4().hex[:6]}")
    engine = create_engine(worker.settings.database_url or "")
    try:
        taken = NewNode.from_spec(squatter, launch_mode=LaunchMode.API, workflow_id="node-squat")
        await NodeRepository(engine).record_intent(
            taken.model_copy(update={"cluster_name": victim.cluster_name})
        )
    finally:
        await engine.dispose()
    async with cleanup(worker.client) as ids:
        started = await worker.control.launch_node(victim, launch_mode=LaunchMode.API)
        ids.append(started.workflow_id)
        handle = worker.client.get_workflow_handle(started.workflow_id)
        with pytest.raises(WorkflowFailureError) as failure:
            await asyncio.wait_for(handle.result(), 30)
    cause: BaseException | None = failure.value  # the record_intent step's error, in the chain
    while cause is not None and not (
        isinstance(cause, ApplicationError) and cause.type == "NodeIdentityConflict"
    ):
        cause = cause.__cause__ or getattr(cause, "cause", None)
    assert isinstance(cause, ApplicationError), failure.value
    assert cause.type == "NodeIdentityConflict"
    assert cause.non_retryable
    assert "nothing was launched" in str(cause)
    assert squatter.tenant not in str(cause)
    assert worker.simulator.counters()["launch_requests"].get(victim.cluster_name) is None


async def test_the_found_cross_tenant_collision_no_longer_attaches(stack: Stack) -> None:
    """Tenant ``acmecorp-x``'s deployment ``xa5d3fc`` had ``acmecorp``'s old name and id."""
    victim = node_spec("acmecorp")
    attacker = node_spec("acmecorp-x", deployment="xa5d3fc")
    old_id = legacy_node_workflow_id(victim)
    assert old_id == legacy_node_workflow_id(attacker)
    control = ControlPlane(stack.client, f"nobody-{uuid.uuid4().hex[:8]}")
    async with cleanup(stack.client) as ids:
        ids.append(old_id)
        await squat(stack.client, old_id, attacker)  # the attacker's node, under the old id
        started = await control.launch_node(victim)
        ids.append(started.workflow_id)
        assert started.workflow_id == node_workflow_id(victim.node_id)
        assert started.workflow_id != old_id
        assert not started.attached
        assert started.cluster_name == victim.cluster_name != attacker.cluster_name


async def visible(client: Client, workflow_id: str) -> None:
    """Wait until visibility lists the workflow: a legacy node has run since long before."""
    async with asyncio.timeout(WAIT.total_seconds()):
        while True:
            if (await client.count_workflows(f"WorkflowId = '{workflow_id}'")).count:
                return
            await asyncio.sleep(0.1)


async def test_a_node_started_under_its_old_id_is_still_attached_to(stack: Stack) -> None:
    spec = node_spec(f"o{uuid.uuid4().hex[:6]}")
    control = ControlPlane(stack.client, f"nobody-{uuid.uuid4().hex[:8]}")
    async with cleanup(stack.client) as ids:
        old_id = legacy_node_workflow_id(spec)
        ids.append(old_id)
        await squat(stack.client, old_id, spec)  # what the old starter started for this node
        await visible(stack.client, old_id)
        started = await control.launch_node(spec)
        assert started.workflow_id == old_id
        assert started.attached
        assert started.cluster_name == spec.legacy_cluster_name
        with pytest.raises(RPCError):  # and no second workflow for the same node
            await stack.client.get_workflow_handle(node_workflow_id(spec.node_id)).describe()


class Calls(Interceptor):
    """Counts the client calls made through it, by name."""

    def __init__(self) -> None:
        self.made: Counter[str] = Counter()

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        calls = self

        class Counting(OutboundInterceptor):
            def __getattribute__(self, name: str) -> Any:
                found = super().__getattribute__(name)
                if name.startswith("_") or not callable(found):
                    return found

                def counted(*args: Any, **kwargs: Any) -> Any:
                    calls.made[name] += 1
                    return found(*args, **kwargs)  # a coroutine or an async iterator

                return counted

        return Counting(next)


async def test_a_launch_is_one_start_and_an_attach_reads_only_on_conflict(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No describe before every start: a new node is one start call (after one visibility
    count per ControlPlane, which finds no legacy node); the same spec again conflicts and
    attaches after reading the running workflow's input; another spec under the id does not."""
    # A namespace without legacy nodes: this session's other tests squat legacy ids.
    monkeypatch.setattr(starter.api, "LEGACY_NODE_ID_PREFIX", f"node-cpn-{uuid.uuid4().hex}-")
    calls = Calls()
    config = stack.client.config()
    config["interceptors"] = [*config["interceptors"], calls]
    client = Client(**config)
    spec = node_spec(f"c{uuid.uuid4().hex[:6]}")
    control = ControlPlane(client, f"nobody-{uuid.uuid4().hex[:8]}")
    control._labelled = False  # the search-attribute check is not what is counted here
    async with cleanup(stack.client) as ids:
        ids.append(node_workflow_id(spec.node_id))
        calls.made.clear()
        first = await control.launch_node(spec)
        assert not first.attached
        assert calls.made == Counter({"count_workflows": 1, "start_workflow": 1})

        calls.made.clear()
        second = await control.launch_node(spec)
        assert second.attached
        assert second.workflow_id == first.workflow_id
        assert calls.made["describe_workflow"] == 0
        assert calls.made["count_workflows"] == 0  # learnt once: no legacy node can appear
        assert calls.made["start_workflow"] == 1

        other = spec.model_copy(update={"gpu_count": 2})
        with pytest.raises(IdentityConflict):  # not its spec: refused, not attached
            await squat_then_launch(control, client, spec, other)


async def squat_then_launch(
    control: ControlPlane, client: Client, running: NodeSpec, asked: NodeSpec
) -> None:
    """``running``'s workflow under ``asked``'s id (a squatter), then a launch of ``asked``."""
    workflow_id = node_workflow_id(asked.node_id)
    try:
        await squat(client, workflow_id, running)
        await control.launch_node(asked)
    finally:
        with suppress(RPCError):
            await client.get_workflow_handle(workflow_id).terminate("test over")


async def test_ambiguous_deployment_names_get_their_own_workflows(stack: Stack) -> None:
    tail = uuid.uuid4().hex[:6]
    first = deployment_spec(f"acme{tail}-prod", "x")
    second = deployment_spec(f"acme{tail}", "prod-x")
    assert legacy_deployment_workflow_id(first.tenant, first.name) == (
        legacy_deployment_workflow_id(second.tenant, second.name)
    )
    control = ControlPlane(stack.client, f"nobody-{uuid.uuid4().hex[:8]}")
    async with cleanup(stack.client) as ids:
        one = await control.launch_deployment(first, 1)
        two = await control.launch_deployment(second, 1)
        ids += [one, two]
        assert one == deployment_workflow_id(first.tenant, first.name)
        assert two == deployment_workflow_id(second.tenant, second.name)
        assert one != two
        # A second deploy of the same name with another spec is refused, not attached.
        with pytest.raises(IdentityConflict):
            await control.launch_deployment(first.model_copy(update={"gpu_count": 2}), 1)
        # An old deployment of another tenant under the ambiguous old id is not attached to.
        old = legacy_deployment_workflow_id(first.tenant, first.name)
        ids.append(old)
        await stack.client.start_workflow(
            "DeploymentWorkflow",
            DeploymentInput(deployment=first, replicas=0),
            id=old,
            task_queue=control.task_queue,
        )
        assert await control.launch_deployment(second, 1) == two
        assert await control.launch_deployment(first, 1) == old  # its own old one: attached
