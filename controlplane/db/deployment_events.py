"""The deployments' outbox: append a controller's events once each, read them back in order."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from controlplane.db.repository import SessionSource, _sessionmaker
from controlplane.db.schema import deployment_events


class NewDeploymentEvent(BaseModel):
    tenant: str
    deployment: str
    generation: str
    workflow_id: str
    event_type: str
    replica: int | None
    node_id: str | None
    detail: str
    occurred_at: datetime
    dedupe_key: str


class DeploymentEventRow(NewDeploymentEvent):
    id: int
    created_at: datetime


class DeploymentEventRepository:
    def __init__(self, sessions: SessionSource) -> None:
        self._sessions = _sessionmaker(sessions)

    async def append(self, events: Sequence[NewDeploymentEvent]) -> int:
        """Insert each event unless its dedupe key is already there; how many were new."""
        if not events:
            return 0
        rows: list[dict[str, Any]] = [
            {
                **event.model_dump(exclude={"detail"}),
                "payload": {"detail": event.detail},
            }
            for event in events
        ]
        statement = (
            insert(deployment_events)
            .values(rows)
            .on_conflict_do_nothing(index_elements=["dedupe_key"])
            .returning(deployment_events.c.id)
        )
        async with self._sessions() as session, session.begin():
            return len((await session.execute(statement)).all())

    async def list(self, tenant: str, deployment: str) -> list[DeploymentEventRow]:
        statement = (
            select(deployment_events)
            .where(deployment_events.c.tenant == tenant)
            .where(deployment_events.c.deployment == deployment)
            .order_by(deployment_events.c.id)
        )
        async with self._sessions() as session:
            result = await session.execute(statement)
            return [
                DeploymentEventRow.model_validate(
                    {**dict(row), "detail": row["payload"].get("detail", "")}
                )
                for row in result.mappings()
            ]
