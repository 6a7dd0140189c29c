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
from workflows.models import DeploymentInput, DeploymentPolicy, DeploymentSpec, DeploymentView
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
    env: WorkflowEnvironment,
    task_queue: str,
    deployment: DeploymentSpec,
    replicas: int,
    *,
    policy: DeploymentPolicy | None = None,
    workflow_id: str | None = None,
    **options: Any,
) -> WorkflowHandle[DeploymentWorkflow, DeploymentView]:
    """Start ``deployment`` with ``replicas`` (under ``policy``, default the workflow's) as
    ``workflow_id`` (default ``deployment-<tenant>-<name>``); ``options`` go to
    ``start_workflow``."""
    return await env.client.start_workflow(
        DeploymentWorkflow.run,
        DeploymentInput(
            deployment=deployment, replicas=replicas, policy=policy or DeploymentPolicy()
        ),
        id=workflow_id or f"deployment-{deployment.tenant}-{deployment.name}",
        task_queue=task_queue,
        **options,
    )
