"""TerminateClusterWorkflow: down a cluster by name, including ones this system did not launch.

The guide's TerminateNode. A cluster that belongs to a live node is handed to that node's
workflow (which records the teardown); any other cluster is downed here until SkyPilot confirms
it is gone (a cluster SkyPilot does not know counts as done). Callers that want a
bounded wait (the starter's ``terminate_cluster``) wait on the result with a timeout; the
workflow itself keeps confirming until its cleanup budget runs out.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from controlplane import lifecycle
    from workflows import activity_refs as acts
    from workflows import options
    from workflows.inputs import require_input
    from workflows.models import (
        DownClusterInput,
        LookupClusterInput,
        NodeStatus,
        TerminateClusterInput,
        TerminateClusterResult,
        TerminateNodeRequest,
        TransitionInput,
    )
    from workflows.node import NodeWorkflow

PATCH_OWNER_GONE = "terminate-cluster-owner-gone"


@workflow.defn(name="TerminateClusterWorkflow", failure_exception_types=[ValidationError])
class TerminateClusterWorkflow:
    @workflow.run
    async def run(self, input: TerminateClusterInput | None = None) -> TerminateClusterResult:
        input = require_input(input, TerminateClusterInput, "TerminateClusterWorkflow")
        found = await acts.LOOKUP_CLUSTER.run(
            LookupClusterInput(cluster_name=input.cluster_name, launch_mode=input.launch_mode),
            options.DATABASE,
        )
        if input.tenant is not None and found.tenant != input.tenant:
            # Asked for a tenant: a cluster of another tenant, or of none, is "not found", worded
            # with only what the caller gave. (No old run has a tenant: replays never get here.)
            raise ApplicationError(
                f"tenant {input.tenant!r} has no cluster named {input.cluster_name!r}; "
                "nothing was terminated",
                type="ClusterNotFound",
                non_retryable=True,
            )
        owner_gone = False
        if found.workflow_id is not None:
            # A live node owns this cluster: its workflow tears it down and records it.
            try:
                await workflow.get_external_workflow_handle(found.workflow_id).signal(
                    NodeWorkflow.request_terminate,
                    TerminateNodeRequest(reason="TerminateClusterWorkflow"),
                )
            except FailureError:
                if not workflow.patched(PATCH_OWNER_GONE):
                    raise
                # The owner workflow is gone (issue 10, path 2): down the cluster here.
                owner_gone = True
            else:
                return TerminateClusterResult(
                    cluster_name=input.cluster_name,
                    node_id=found.node_id,
                    launch_mode=found.launch_mode,
                    delegated_to=found.workflow_id,
                )
        down = await acts.DOWN_CLUSTER.run(
            DownClusterInput(
                cluster_name=input.cluster_name,
                launch_mode=found.launch_mode,
                timeout_s=found.terminate_timeout_s,
                cancel_launches=True,
            ),
            options.down(
                terminate_timeout_s=found.terminate_timeout_s,
                heartbeat_timeout_s=found.heartbeat_timeout_s,
                retry_backoff_s=found.retry_backoff_s,
                budget_s=found.cleanup_budget_s,
            ),
        )
        if found.node_id is not None and owner_gone:
            await acts.RECORD_TRANSITION.run(
                TransitionInput(
                    node_id=found.node_id,
                    transition=lifecycle.TERMINATED_UNOWNED,
                    error="TerminateClusterWorkflow: downed it; its workflow had ended",
                ),
                options.DATABASE,
            )
        elif found.node_id is not None and found.status is NodeStatus.CLEANUP_FAILED:
            # The teardown its node never confirmed is confirmed now.
            await acts.RECORD_TRANSITION.run(
                TransitionInput(node_id=found.node_id, transition=lifecycle.CLEANUP_CONFIRMED),
                options.DATABASE,
            )
        return TerminateClusterResult(
            cluster_name=input.cluster_name,
            node_id=found.node_id,
            launch_mode=found.launch_mode,
            already_gone=down.already_gone,
            cancelled_requests=down.cancelled_requests,
        )
