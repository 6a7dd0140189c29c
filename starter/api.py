"""The typed API other services use: launch, terminate, query and list nodes and deployments.

Inputs are validated here, before anything is started, so a bad spec never reaches Temporal.
Workflow ids derive from the node's identity (``node-<node id>``), so launching the same node
twice attaches to the running workflow instead of launching again, and an attach is accepted
only when that workflow runs the very spec asked for (starter/ownership.py).

Trust model: whoever may start workflows in the Temporal namespace is trusted, and this API
unscoped is an operator's tool. Services acting for one tenant use ``for_tenant(t)``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import (
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from controlplane import search_attributes as names
from controlplane.cluster_names import CLUSTER_PREFIX
from controlplane.config import Settings
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.spec import NodeSpec
from starter.ownership import parsed, start_input, started_input
from starter.search_attributes import missing_search_attributes
from workflows import search_attributes as attrs
from workflows.deployment import (
    LEGACY_NODE_ID_PREFIX,
    DeploymentWorkflow,
    deployment_workflow_id,
    legacy_deployment_workflow_id,
    legacy_node_workflow_id,
    node_workflow_id,
)
from workflows.models import (
    DeploymentInput,
    DeploymentPolicy,
    DeploymentSpec,
    DeploymentView,
    NodeView,
    NodeWorkflowInput,
    ReplaceOrder,
    ScaleDeploymentRequest,
    TerminateClusterInput,
    TerminateClusterResult,
    TerminateDeploymentRequest,
    TerminateNodeRequest,
    TerminateNodeResponse,
    UpdateDeploymentRequest,
)
from workflows.node import NodeWorkflow
from workflows.terminate import TerminateClusterWorkflow
from workflows.user_metadata import deployment_summary, node_summary

T = TypeVar("T")

if TYPE_CHECKING:
    from starter.tenant import TenantControlPlane


class NotFound(LookupError):
    """No such workflow in this namespace."""


class IdentityConflict(RuntimeError):
    """The workflow id is taken by another node or deployment than the one asked for."""


def deployment_policy(settings: Settings) -> DeploymentPolicy:
    """The controller's policy from the DEPLOYMENT_* settings."""
    return DeploymentPolicy(
        replace_order=ReplaceOrder(settings.deployment_replace_order),
        backoff_initial_s=settings.deployment_backoff_initial.total_seconds(),
        backoff_max_s=settings.deployment_backoff_max.total_seconds(),
        crash_loop_threshold=settings.deployment_crash_loop_threshold,
        rollout_deadline_s=settings.deployment_rollout_deadline.total_seconds(),
        spot_fallback_after=settings.deployment_spot_fallback_after,
    )


class NodeStarted:
    """What ``launch_node`` did: started a new workflow, or attached to the live one."""

    def __init__(self, workflow_id: str, spec: NodeSpec, attached: bool, cluster_name: str) -> None:
        self.workflow_id = workflow_id
        self.node_id = spec.node_id
        self.cluster_name = cluster_name
        self.attached = attached

    def as_dict(self) -> dict[str, object]:
        return {
            "workflow_id": self.workflow_id,
            "node_id": self.node_id,
            "cluster_name": self.cluster_name,
            "attached": self.attached,
        }


class ControlPlane:
    """Thin, typed wrapper over a Temporal client for the node lifecycle workflows."""

    def __init__(
        self, client: Client, task_queue: str, *, cluster_prefix: str = CLUSTER_PREFIX
    ) -> None:
        self.client = client
        self.task_queue = task_queue
        self.cluster_prefix = cluster_prefix  # the workers' CLUSTER_NAME_PREFIX
        self._labelled: bool | None = None
        self._legacy_free = False  # no legacy node workflow can run (see _legacy_nodes_may_run)

    def for_tenant(self, tenant: str) -> TenantControlPlane:
        """This API for one tenant: every call first checks its target is that tenant's."""
        from starter.tenant import TenantControlPlane  # it builds on this module

        return TenantControlPlane(self, tenant)

    async def labelled(self) -> bool:
        """Whether the namespace has our search attributes (checked once): then starts set them."""
        if self._labelled is None:
            missing = await missing_search_attributes(self.client)
            self._labelled = missing == []
        return self._labelled

    async def _attributes(self, make: TypedSearchAttributes) -> TypedSearchAttributes:
        return make if await self.labelled() else TypedSearchAttributes.empty

    # --- nodes -----------------------------------------------------------------------------------
    async def launch_node(
        self, spec: NodeSpec, *, launch_mode: LaunchMode | None = None
    ) -> NodeStarted:
        """Start the node's workflow, or attach to the one running this very spec.

        A node created before the full-node-id workflow ids still runs under its old id and
        keeps it; it is attached to only if its input is this spec. Any other workflow under
        either id is an IdentityConflict: nothing is started or attached.
        """
        legacy_id = legacy_node_workflow_id(spec)
        if (
            await self._legacy_nodes_may_run()
            and await self._is_running(legacy_id)
            and await self._runs_node(legacy_id, spec)
        ):
            return NodeStarted(legacy_id, spec, True, spec.legacy_cluster_name)
        workflow_id = node_workflow_id(spec.node_id)
        cluster_name = spec.cluster_name_for(self.cluster_prefix)
        try:
            # One call: a start that fails on a running workflow of this id, instead of a
            # describe before every start. Only a conflict reads whose workflow it is.
            await self.client.start_workflow(
                NodeWorkflow.run,
                NodeWorkflowInput(spec=spec, launch_mode=launch_mode),
                id=workflow_id,
                task_queue=self.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                search_attributes=await self._attributes(
                    attrs.node_attributes(spec, NodeStatus.PENDING)
                ),
                static_summary=node_summary(spec),
                static_details=f"node {spec.node_id}, cluster {cluster_name}",
            )
        except WorkflowAlreadyStartedError:
            pass  # attach, if it runs this very spec (below)
        else:
            return NodeStarted(workflow_id, spec, False, cluster_name)
        if not await self._runs_node(workflow_id, spec, invalid_ok=True):
            raise IdentityConflict(
                f"workflow {workflow_id!r} runs another node than the one asked for "
                f"(node {spec.node_id}); nothing was started or attached"
            )
        return NodeStarted(workflow_id, spec, True, cluster_name)

    async def _legacy_nodes_may_run(self) -> bool:
        """Whether a node workflow under a legacy id may still run (False is kept for good).

        Nothing starts legacy ids any more, so once visibility holds no legacy node workflow
        that runs or closed within the last day (the day covers a continue-as-new in flight),
        none can appear again and ``launch_node`` stops looking for one. Without visibility
        (an RPC error) it keeps looking, as it always did.
        """
        if self._legacy_free:
            return False
        since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = (
            f"WorkflowType = 'NodeWorkflow' AND WorkflowId STARTS_WITH '{LEGACY_NODE_ID_PREFIX}'"
            f" AND (ExecutionStatus = 'Running' OR CloseTime > '{since}')"
        )
        try:
            self._legacy_free = (await self.client.count_workflows(query)).count == 0
        except RPCError:
            return True
        return not self._legacy_free

    async def _runs_node(
        self, workflow_id: str, spec: NodeSpec, *, invalid_ok: bool = False
    ) -> bool:
        """Whether the workflow runs ``spec``.

        ``invalid_ok``: an input that does not validate counts as a match. Such a workflow fails
        at once, naming the field, and runs no node, so nobody's node is attached to by mistake.
        This is what a start of an unvalidated spec (``model_construct``) leaves behind.
        """
        raw = await start_input(self.client, workflow_id, "NodeWorkflow")
        if raw is None:
            return False  # gone, or another workflow type under a node's id
        started = parsed(raw, NodeWorkflowInput)
        return invalid_ok if started is None else started.spec == spec

    async def node_status(self, workflow_id: str) -> NodeView:
        handle = self.client.get_workflow_handle_for(NodeWorkflow.run, workflow_id)
        return await self._guard(handle.query(NodeWorkflow.status), workflow_id)

    async def wait_for_node(
        self, workflow_id: str, *, until: set[NodeStatus], timeout: timedelta, poll: float = 0.5
    ) -> NodeView:
        """Poll the status query until the node reaches one of ``until`` or ends."""
        async with asyncio.timeout(timeout.total_seconds()):
            while True:
                view = await self.node_status(workflow_id)
                if view.status in until or view.status.final:
                    return view
                await asyncio.sleep(poll)

    async def terminate_node(
        self, workflow_id: str, reason: str = "requested"
    ) -> TerminateNodeResponse:
        """Terminate with the workflow's bounded wait (SKYPILOT_TERMINATE_TIMEOUT).

        A node whose workflow already ended (terminated, failed, lost) answers with its final
        status instead of an error: there is nothing left to tear down.
        """
        handle = self.client.get_workflow_handle_for(NodeWorkflow.run, workflow_id)
        try:
            return await self._guard(
                handle.execute_update(NodeWorkflow.terminate, TerminateNodeRequest(reason=reason)),
                workflow_id,
            )
        except NotFound:
            ended = await self._ended_node(workflow_id)
            if ended is None:
                raise
            return TerminateNodeResponse(
                node_id=ended.node_id, status=ended.status, still_terminating=False
            )

    async def _ended_node(self, workflow_id: str) -> NodeView | None:
        """The result of a node workflow that completed, or None if there is no such run."""
        handle = self.client.get_workflow_handle_for(NodeWorkflow.run, workflow_id)
        try:
            description = await handle.describe()
        except RPCError:
            return None
        if description.status != WorkflowExecutionStatus.COMPLETED:
            return None
        return await handle.result()

    async def terminate_cluster(
        self,
        cluster_name: str,
        *,
        wait: timedelta,
        launch_mode: LaunchMode | None = None,
        tenant: str | None = None,
    ) -> TerminateClusterResult | None:
        """Down a cluster by name; None if it is still terminating when ``wait`` runs out.

        With ``tenant``, the workflow refuses (fails with ClusterNotFound) unless the cluster
        is one of that tenant's nodes; each tenant gets its own workflow id, so no caller ever
        attaches to another's run and reads its result.
        """
        request = TerminateClusterInput(
            cluster_name=cluster_name, launch_mode=launch_mode, tenant=tenant
        )
        handle = await self.client.start_workflow(
            TerminateClusterWorkflow.run,
            request,
            id=f"terminate-{cluster_name}" + (f":{request.tenant}" if request.tenant else ""),
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        )
        try:
            return await asyncio.wait_for(handle.result(), wait.total_seconds())
        except TimeoutError:
            return None

    # --- deployments -----------------------------------------------------------------------------
    async def launch_deployment(
        self,
        spec: DeploymentSpec,
        replicas: int,
        *,
        launch_mode: LaunchMode | None = None,
        policy: DeploymentPolicy | None = None,
    ) -> str:
        """Start the deployment, or attach to the one running this very spec (as launch_node);
        a terminated name starts a new generation."""
        legacy_id = legacy_deployment_workflow_id(spec.tenant, spec.name)
        if await self._is_running(legacy_id) and await self._runs_deployment(legacy_id, spec):
            return legacy_id
        workflow_id = deployment_workflow_id(spec.tenant, spec.name)
        await self.client.start_workflow(
            DeploymentWorkflow.run,
            DeploymentInput(
                deployment=spec,
                replicas=replicas,
                launch_mode=launch_mode,
                policy=policy or DeploymentPolicy(),
            ),
            id=workflow_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=await self._attributes(
                attrs.deployment_attributes(spec.tenant, spec.name, "launching")
            ),
            static_summary=deployment_summary(spec.tenant, spec.name, spec.model, replicas),
        )
        if not await self._runs_deployment(workflow_id, spec, invalid_ok=True):
            raise IdentityConflict(
                f"workflow {workflow_id!r} runs another deployment than the one asked for; "
                "nothing was started or attached"
            )
        return workflow_id

    async def _runs_deployment(
        self, workflow_id: str, spec: DeploymentSpec, *, invalid_ok: bool = False
    ) -> bool:
        """Whether the workflow runs ``spec``; ``invalid_ok`` as for ``_runs_node``."""
        raw = await start_input(self.client, workflow_id, "DeploymentWorkflow")
        if raw is None:
            return False
        started = parsed(raw, DeploymentInput)
        return invalid_ok if started is None else started.deployment == spec

    async def deployment_status(self, workflow_id: str) -> DeploymentView:
        handle = self.client.get_workflow_handle_for(DeploymentWorkflow.run, workflow_id)
        return await self._guard(handle.query(DeploymentWorkflow.status), workflow_id)

    async def scale_deployment(self, workflow_id: str, replicas: int) -> DeploymentView:
        handle = self.client.get_workflow_handle_for(DeploymentWorkflow.run, workflow_id)
        return await self._guard(
            handle.execute_update(
                DeploymentWorkflow.scale, ScaleDeploymentRequest(replicas=replicas)
            ),
            workflow_id,
        )

    async def update_deployment(
        self, workflow_id: str, request: UpdateDeploymentRequest
    ) -> DeploymentView:
        """Start a rolling update; answers once it has begun (see ``wait_for_rollout``)."""
        handle = self.client.get_workflow_handle_for(DeploymentWorkflow.run, workflow_id)
        return await self._guard(
            handle.execute_update(DeploymentWorkflow.update, request), workflow_id
        )

    async def wait_for_rollout(
        self,
        workflow_id: str,
        *,
        timeout: timedelta,
        poll: float = 2.0,
        on_progress: Callable[[DeploymentView], None] | None = None,
    ) -> DeploymentView:
        """Poll until the rollout is done or rolled back, or ``timeout`` passes."""
        deadline = asyncio.get_running_loop().time() + timeout.total_seconds()
        while True:
            view = await self.deployment_status(workflow_id)
            if on_progress is not None:
                on_progress(view)
            rolling = view.rollout is not None and view.rollout.phase == "rolling"
            if not rolling or asyncio.get_running_loop().time() >= deadline:
                return view
            await asyncio.sleep(poll)

    async def terminate_deployment(
        self, workflow_id: str, reason: str = "requested"
    ) -> DeploymentView:
        handle = self.client.get_workflow_handle_for(DeploymentWorkflow.run, workflow_id)
        return await self._guard(
            handle.execute_update(
                DeploymentWorkflow.terminate, TerminateDeploymentRequest(reason=reason)
            ),
            workflow_id,
        )

    # --- listing ---------------------------------------------------------------------------------
    async def list_nodes(
        self,
        *,
        running_only: bool = False,
        limit: int = 100,
        tenant: str | None = None,
        deployment: str | None = None,
        status: NodeStatus | None = None,
    ) -> list[dict[str, object]]:
        """Node workflows, newest first, with each live node's status from its query.

        With ``tenant``, only that tenant's: each workflow's start input is read to know whose
        it is, so this scans every node workflow of the namespace (one history read each).
        ``deployment`` and ``status`` filter on the search attributes, so they need them
        registered in the namespace (see README, "Search attributes").
        """
        query = node_list_query(running_only=running_only, deployment=deployment, status=status)
        out: list[dict[str, object]] = []
        async for execution in self.client.list_workflows(
            query, limit=None if tenant is not None else limit
        ):
            if len(out) >= limit:
                break
            if tenant is not None:
                started = await started_input(
                    self.client, execution.id, "NodeWorkflow", NodeWorkflowInput
                )
                if started is None or started.spec.tenant != tenant:
                    continue
            item: dict[str, object] = {
                "workflow_id": execution.id,
                "workflow_status": execution.status.name if execution.status else None,
                "started_at": execution.start_time.isoformat(),
            }
            if execution.status == WorkflowExecutionStatus.RUNNING:
                try:
                    item["node"] = (await self.node_status(execution.id)).model_dump(mode="json")
                except (NotFound, RPCError):
                    item["node"] = None
            out.append(item)
        return out

    # --- helpers ---------------------------------------------------------------------------------
    async def _is_running(self, workflow_id: str) -> bool:
        try:
            description = await self.client.get_workflow_handle(workflow_id).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return False
            raise
        return description.status == WorkflowExecutionStatus.RUNNING

    @staticmethod
    async def _guard(call: Awaitable[T], workflow_id: str) -> T:
        try:
            return await call
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise NotFound(f"no workflow {workflow_id!r} in this namespace") from None
            raise


def _quoted(value: str) -> str:
    """A visibility-query string literal; a quote inside the value is escaped."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def node_list_query(
    *,
    running_only: bool = False,
    tenant: str | None = None,
    deployment: str | None = None,
    status: NodeStatus | None = None,
) -> str:
    """The visibility query of ``list_nodes``: node workflows, filtered by search attributes."""
    clauses = ["WorkflowType = 'NodeWorkflow'"]
    if running_only:
        clauses.append("ExecutionStatus = 'Running'")
    for name, value in (
        (names.TENANT, tenant),
        (names.DEPLOYMENT, deployment),
        (names.NODE_STATUS, status.value if status is not None else None),
    ):
        if value is not None:
            clauses.append(f"{name} = {_quoted(value)}")
    return " AND ".join(clauses)


__all__ = [
    "ControlPlane",
    "IdentityConflict",
    "NodeStarted",
    "NotFound",
    "deployment_workflow_id",
    "node_list_query",
]
