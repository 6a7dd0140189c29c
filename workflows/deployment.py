"""DeploymentWorkflow: N replicas of one model, each a child NodeWorkflow.

Scale and terminate are updates; the status query lists every replica as its NodeWorkflow last
reported it (children signal their transitions). Children are cancelled if the deployment is,
and a cancelled NodeWorkflow tears its node down, so nothing outlives its deployment.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from workflows import search_attributes as attrs
    from workflows.inputs import require_input
    from workflows.models import (
        DeploymentInput,
        DeploymentView,
        NodeStatus,
        NodeView,
        NodeWorkflowInput,
        ReplicaStatusSignal,
        ReplicaView,
        ScaleDeploymentRequest,
        TerminateDeploymentRequest,
        TerminateNodeRequest,
    )
    from workflows.node import NodeWorkflow
    from workflows.user_metadata import node_summary

TERMINATE_WAIT = timedelta(minutes=5)


def node_workflow_id(cluster_name: str) -> str:
    return f"node-{cluster_name}"


@workflow.defn(name="DeploymentWorkflow", failure_exception_types=[ValidationError])
class DeploymentWorkflow:
    @workflow.init
    def __init__(self, input: DeploymentInput | None = None) -> None:
        input = require_input(input, DeploymentInput, "DeploymentWorkflow")
        self._input = input
        self._desired = input.replicas
        self._terminating = False
        self._replicas: dict[int, ReplicaView] = {}
        self._children: dict[int, workflow.ChildWorkflowHandle[NodeWorkflow, NodeView]] = {}
        self._lock = asyncio.Lock()
        self._watchers: list[asyncio.Task[None]] = []

    @workflow.query(name="status")
    def status(self) -> DeploymentView:
        return DeploymentView(
            name=self._input.deployment.name,
            tenant=self._input.deployment.tenant,
            desired_replicas=self._desired,
            terminating=self._terminating,
            replicas=[self._replicas[i] for i in sorted(self._replicas)],
        )

    @workflow.signal(name="replica_status")
    def replica_status(self, update: ReplicaStatusSignal) -> None:
        view = self._replicas.get(update.replica)
        if view is not None:
            self._replicas[update.replica] = view.model_copy(
                update={"status": update.status, "endpoint": update.endpoint, "error": update.error}
            )
            self._upsert_status()

    @workflow.update  # named "scale"
    async def scale(self, request: ScaleDeploymentRequest) -> DeploymentView:
        if self._terminating:
            raise ApplicationError(
                "the deployment is terminating; it cannot be scaled", type="DeploymentTerminating"
            )
        async with self._lock:
            self._desired = request.replicas
            await self._reconcile()
            self._upsert_status()
        return self.status()

    @scale.validator
    def validate_scale(self, request: ScaleDeploymentRequest) -> None:
        if self._terminating:
            raise ApplicationError(
                "the deployment is terminating; it cannot be scaled", type="DeploymentTerminating"
            )

    @workflow.update  # named "terminate"
    async def terminate(self, request: TerminateDeploymentRequest) -> DeploymentView:
        """Terminate every replica; wait a bounded time for them, then report where they are."""
        async with self._lock:
            self._terminating = True
            self._desired = 0
            self._upsert_status()
            await self._reconcile()
        try:
            await workflow.wait_condition(self._all_final, timeout=TERMINATE_WAIT)
        except TimeoutError:
            workflow.logger.info("deployment %s still terminating", self._input.deployment.name)
        return self.status()

    @workflow.run
    async def run(self, input: DeploymentInput | None = None) -> DeploymentView:
        async with self._lock:
            await self._reconcile()
        await workflow.wait_condition(lambda: self._terminating and self._all_final())
        self._upsert_status()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    def deployment_status(self) -> str:
        """One word for the DeploymentStatus search attribute."""
        if self._terminating:
            return "terminated" if self._all_final() else "terminating"
        running = sum(v.status is NodeStatus.RUNNING for v in self._replicas.values())
        if running >= self._desired:
            return "running"
        return "launching" if running == 0 else "degraded"

    def _upsert_status(self) -> None:
        attrs.upsert_status(attrs.DEPLOYMENT_STATUS, self.deployment_status())

    def _all_final(self) -> bool:
        return all(view.status.final for view in self._replicas.values())

    async def _reconcile(self) -> None:
        """Start replicas until ``desired`` are live; cancel the newest ones above it.

        Replica numbers are identities, never reused: a replacement for a failed replica gets
        the next number, so it is a new node with its own cluster and row.
        """
        live = sorted(r for r, view in self._replicas.items() if not view.status.final)
        next_replica = max(self._replicas, default=-1) + 1
        for _ in range(self._desired - len(live)):
            await self._start(next_replica)
            next_replica += 1
        for replica in live[self._desired :] if len(live) > self._desired else []:
            # A signal, not a cancel: the terminate request survives an activity that completes
            # before a cancel could reach it, and the replica ends `terminated`, not `failed`.
            await self._children[replica].signal(
                NodeWorkflow.request_terminate, TerminateNodeRequest(reason="scaled down")
            )

    async def _start(self, replica: int) -> None:
        spec = self._input.deployment.node(replica)
        workflow_id = node_workflow_id(spec.cluster_name)
        # Children carry the node attributes and a summary when this deployment carries ours.
        labelled = attrs.carried() and workflow.patched(attrs.PATCH)
        handle = await workflow.start_child_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(spec=spec, launch_mode=self._input.launch_mode),
            id=workflow_id,
            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
            search_attributes=(
                attrs.node_attributes(spec, NodeStatus.PENDING) if labelled else None
            ),
            static_summary=node_summary(spec) if labelled else None,
        )
        self._children[replica] = handle
        self._replicas[replica] = ReplicaView(
            replica=replica,
            node_id=spec.node_id,
            cluster_name=spec.cluster_name,
            workflow_id=workflow_id,
            status=NodeStatus.PENDING,
        )
        self._watchers.append(asyncio.create_task(self._watch(replica, handle)))

    async def _watch(
        self, replica: int, handle: workflow.ChildWorkflowHandle[NodeWorkflow, NodeView]
    ) -> None:
        """Record how a child ended, so the query never shows a stale status."""
        try:
            result = await handle
        except ChildWorkflowError as error:
            view = self._replicas[replica]
            status = view.status if view.status.final else NodeStatus.FAILED
            self._replicas[replica] = view.model_copy(
                update={"status": status, "error": str(error.cause or error)}
            )
            self._upsert_status()
            return
        self._replicas[replica] = self._replicas[replica].model_copy(
            update={"status": result.status, "endpoint": result.endpoint, "error": result.error}
        )
        self._upsert_status()
