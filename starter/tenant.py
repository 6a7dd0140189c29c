"""The starter API for a service acting for one tenant: ``ControlPlane.for_tenant(t)``.

Every call proves its target is the tenant's before it reads, signals or terminates: a node or
deployment workflow by the tenant in its start input (starter/ownership.py), a cluster by its
node row (TerminateClusterWorkflow's tenant check). Anything else, another tenant's or nothing
at all, is the same NotFound, worded with only what the caller gave, so a tenant learns neither
that a foreign workflow exists nor whose it is.
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import TypeAdapter
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError

from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.spec import NodeSpec, TenantId
from starter.api import ControlPlane, NodeStarted, NotFound
from starter.ownership import started_input
from workflows.models import (
    DeploymentInput,
    DeploymentSpec,
    DeploymentView,
    NodeView,
    NodeWorkflowInput,
    TerminateClusterResult,
    TerminateNodeResponse,
)

_TENANT = TypeAdapter(TenantId)


class TenantControlPlane:
    """ControlPlane's calls, each limited to one tenant's nodes, deployments and clusters."""

    def __init__(self, control: ControlPlane, tenant: str) -> None:
        self.control = control
        self.tenant: str = _TENANT.validate_python(tenant)

    # --- nodes -----------------------------------------------------------------------------------
    async def launch_node(
        self, spec: NodeSpec, *, launch_mode: LaunchMode | None = None
    ) -> NodeStarted:
        self._require_own("spec.tenant", spec.tenant)
        return await self.control.launch_node(spec, launch_mode=launch_mode)

    async def node_status(self, workflow_id: str) -> NodeView:
        await self._require_node(workflow_id)
        return await self.control.node_status(workflow_id)

    async def wait_for_node(
        self, workflow_id: str, *, until: set[NodeStatus], timeout: timedelta, poll: float = 0.5
    ) -> NodeView:
        await self._require_node(workflow_id)
        return await self.control.wait_for_node(
            workflow_id, until=until, timeout=timeout, poll=poll
        )

    async def terminate_node(
        self, workflow_id: str, reason: str = "requested"
    ) -> TerminateNodeResponse:
        await self._require_node(workflow_id)
        return await self.control.terminate_node(workflow_id, reason)

    async def terminate_cluster(
        self, cluster_name: str, *, wait: timedelta, launch_mode: LaunchMode | None = None
    ) -> TerminateClusterResult | None:
        """Down one of the tenant's clusters; any other name is NotFound, nothing downed."""
        try:
            return await self.control.terminate_cluster(
                cluster_name, wait=wait, launch_mode=launch_mode, tenant=self.tenant
            )
        except WorkflowFailureError as exc:
            cause = exc.cause
            if isinstance(cause, ApplicationError) and cause.type == "ClusterNotFound":
                raise NotFound(f"no cluster {cluster_name!r} for tenant {self.tenant!r}") from None
            raise

    async def list_nodes(
        self, *, running_only: bool = False, limit: int = 100
    ) -> list[dict[str, object]]:
        return await self.control.list_nodes(
            running_only=running_only, limit=limit, tenant=self.tenant
        )

    # --- deployments -----------------------------------------------------------------------------
    async def launch_deployment(
        self, spec: DeploymentSpec, replicas: int, *, launch_mode: LaunchMode | None = None
    ) -> str:
        self._require_own("spec.tenant", spec.tenant)
        return await self.control.launch_deployment(spec, replicas, launch_mode=launch_mode)

    async def deployment_status(self, workflow_id: str) -> DeploymentView:
        await self._require_deployment(workflow_id)
        return await self.control.deployment_status(workflow_id)

    async def scale_deployment(self, workflow_id: str, replicas: int) -> DeploymentView:
        await self._require_deployment(workflow_id)
        return await self.control.scale_deployment(workflow_id, replicas)

    async def terminate_deployment(
        self, workflow_id: str, reason: str = "requested"
    ) -> DeploymentView:
        await self._require_deployment(workflow_id)
        return await self.control.terminate_deployment(workflow_id, reason)

    # --- the checks ------------------------------------------------------------------------------
    def _require_own(self, field: str, tenant: str) -> None:
        if tenant != self.tenant:
            raise ValueError(
                f"{field} must be this facade's tenant {self.tenant!r}; nothing was started"
            )

    async def _require_node(self, workflow_id: str) -> None:
        started = await started_input(
            self.control.client, workflow_id, "NodeWorkflow", NodeWorkflowInput
        )
        if started is None or started.spec.tenant != self.tenant:
            raise self._not_found(workflow_id)

    async def _require_deployment(self, workflow_id: str) -> None:
        started = await started_input(
            self.control.client, workflow_id, "DeploymentWorkflow", DeploymentInput
        )
        if started is None or started.deployment.tenant != self.tenant:
            raise self._not_found(workflow_id)

    def _not_found(self, workflow_id: str) -> NotFound:
        # The same words whether the workflow is another tenant's or does not exist.
        return NotFound(f"no workflow {workflow_id!r} for tenant {self.tenant!r}")


__all__ = ["TenantControlPlane"]
