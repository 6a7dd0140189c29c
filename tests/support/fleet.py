"""Run the fleet-health sweep in tests as the worker's schedules would, but every ``every`` s."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

from temporalio.client import Client

from workflows.fleet_health import FleetHealthWorkflow
from workflows.fleet_models import FleetHealthInput, FleetHealthReport


async def sweep_once(
    client: Client, task_queue: str, input: FleetHealthInput | None = None
) -> FleetHealthReport:
    return await client.execute_workflow(
        FleetHealthWorkflow.run,
        input or FleetHealthInput(shards=2),
        id=f"fleet-health-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
    )


@contextlib.asynccontextmanager
async def sweeping(
    client: Client, task_queue: str, *, every: float = 1.0, shards: int = 2
) -> AsyncIterator[list[FleetHealthReport]]:
    """Sweep clusters and models every ``every`` seconds in the background; yields the reports."""
    reports: list[FleetHealthReport] = []

    async def loop() -> None:
        while True:
            reports.append(await sweep_once(client, task_queue, FleetHealthInput(shards=shards)))
            await asyncio.sleep(every)

    task = asyncio.create_task(loop())
    try:
        yield reports
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
