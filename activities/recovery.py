"""Recover a live node row whose workflow is gone (issue 10, path 2).

A row stays ``pending``/``launching``/``running``/``terminating`` only while its workflow runs;
when the workflow ended anyway (a database outage in old code, ``temporal workflow terminate``,
a bug), this starts a new NodeWorkflow under the row's own workflow id. That workflow records
intent, finds the row it owns and resumes from it: it adopts the node (keeps serving it) or,
with a terminate request delivered before its first step, tears it down.
"""

from __future__ import annotations

from typing import Literal

from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.service import RPCError, RPCStatusCode

from controlplane.lifecycle import LaunchMode
from controlplane.spec import NodeSpec
from workflows.models import NodeWorkflowInput, TerminateNodeRequest

RecoveryMode = Literal["adopt", "teardown"]
# NodeWorkflow.request_terminate's name: signal-with-start takes a name, not a method
# (tests/unit/test_activity_refs.py checks it is that signal's).
TEARDOWN_SIGNAL = "request_terminate"


async def workflow_running(client: Client, workflow_id: str) -> bool:
    """True while the workflow (its latest run, across continue-as-new) is running."""
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status is RPCStatusCode.NOT_FOUND:
            return False
        raise
    return described.status is WorkflowExecutionStatus.RUNNING


async def recover_node(
    client: Client,
    *,
    workflow_id: str,
    spec: NodeSpec,
    launch_mode: LaunchMode,
    mode: RecoveryMode,
    task_queue: str,
) -> str:
    """Start the row's workflow again; returns the run id. Idempotent: a running one is kept."""
    request = TerminateNodeRequest(reason="reconciler: the node's workflow had ended")
    handle = await client.start_workflow(
        "NodeWorkflow",
        NodeWorkflowInput(spec=spec, launch_mode=launch_mode),
        id=workflow_id,
        task_queue=task_queue,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=TEARDOWN_SIGNAL if mode == "teardown" else None,
        start_signal_args=[request] if mode == "teardown" else [],
    )
    return handle.result_run_id or ""
