"""The worker of the workflow tests: the workflows under test and the fake activities on the
test's task queue, with the launch-slot worker (worker.py NodeWorkers) beside it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.workflows.fakes import FakeActivities
from workflows.deployment import DeploymentWorkflow
from workflows.models import DeploymentInput, DeploymentView
from workflows.node import NodeWorkflow
from workflows.terminate import TerminateClusterWorkflow

NODE_WORKFLOWS: Sequence[type] = (NodeWorkflow,)
DEPLOYMENT_WORKFLOWS: Sequence[type] = (NodeWorkflow, DeploymentWorkflow)
ALL_WORKFLOWS: Sequence[type] = (NodeWorkflow, DeploymentWorkflow, TerminateClusterWorkflow)


@asynccontextmanager
async def running_worker(
    env: WorkflowEnvironment,
    task_queue: str,
    fakes: FakeActivities,
    workflows: Sequence[type] = NODE_WORKFLOWS,
    *,
    activities: Sequence[Callable[..., Any]] | None = None,
    **options: Any,
) -> AsyncIterator[Worker]:
    """``workflows`` with ``activities`` (default ``fakes.all()``) on ``task_queue`` and
    ``fakes``' admission worker; ``options`` go to the main ``Worker``."""
    async with (
        Worker(
            env.client,
            task_queue=task_queue,
            workflows=list(workflows),
            activities=list(fakes.all() if activities is None else activities),
            **options,
        ) as worker,
        fakes.admission_worker(env.client, task_queue),
    ):
        yield worker


async def start_deployment(
    env: WorkflowEnvironment, task_queue: str, input: DeploymentInput, **options: Any
) -> WorkflowHandle[DeploymentWorkflow, DeploymentView]:
    """Start the deployment ``input`` describes as ``deployment-<tenant>-<name>`` unless
    ``options`` (for ``start_workflow``) give another ``id``."""
    spec = input.deployment
    options.setdefault("id", f"deployment-{spec.tenant}-{spec.name}")
    return await env.client.start_workflow(
        DeploymentWorkflow.run, input, task_queue=task_queue, **options
    )
