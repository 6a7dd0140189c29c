"""The deployments' outbox: each controller event written once however often the activity
retries, read back in order, and never rewritten."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from activities.deployment_events import DeploymentEventActivities
from controlplane.db.deployment_events import DeploymentEventRepository
from workflows.models import DeploymentEvent, DeploymentEventType, RecordDeploymentEventsInput


def batch(name: str, first: int, *kinds: DeploymentEventType) -> RecordDeploymentEventsInput:
    return RecordDeploymentEventsInput(
        tenant="acme",
        deployment=name,
        workflow_id=f"deployment-acme-{name}",
        generation="g1",
        first_sequence=first,
        events=[
            DeploymentEvent(event_type=kind, detail=f"{kind.value} detail", at=datetime.now(UTC))
            for kind in kinds
        ],
        desired=3,
        serving=2,
    )


async def test_events_are_written_once_and_read_in_order(engine: AsyncEngine) -> None:
    repo = DeploymentEventRepository(engine)
    activities = DeploymentEventActivities(repo)
    name = f"blue-{uuid.uuid4().hex[:6]}"
    first = batch(
        name, 0, DeploymentEventType.ROLLOUT_STARTED, DeploymentEventType.REPLICA_REPLACED
    )
    assert (await activities.record_deployment_events(first)).written == 2
    assert (await activities.record_deployment_events(first)).written == 0  # a retry
    await activities.record_deployment_events(batch(name, 2, DeploymentEventType.DEGRADED))
    rows = await repo.list("acme", name)
    assert [r.event_type for r in rows] == [
        "deployment.rollout_started",
        "deployment.replica_replaced",
        "deployment.degraded",
    ]
    assert rows[2].detail == "deployment.degraded detail"
    assert rows[0].generation == "g1"


async def test_deployment_events_are_append_only(engine: AsyncEngine) -> None:
    repo = DeploymentEventRepository(engine)
    name = f"green-{uuid.uuid4().hex[:6]}"
    await DeploymentEventActivities(repo).record_deployment_events(
        batch(name, 0, DeploymentEventType.RECOVERED)
    )
    with pytest.raises(DBAPIError, match="append-only"):
        async with engine.begin() as connection:
            await connection.execute(
                text("UPDATE deployment_events SET event_type = 'x' WHERE deployment = :d"),
                {"d": name},
            )
