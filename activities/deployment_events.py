"""Write a deployment controller's events to the outbox, once each however often retried."""

from __future__ import annotations

from temporalio import activity

from controlplane.db.deployment_events import DeploymentEventRepository, NewDeploymentEvent
from controlplane.metrics import Metrics
from workflows import activity_refs as acts
from workflows.models import RecordDeploymentEventsInput, RecordDeploymentEventsResult


class DeploymentEventActivities:
    def __init__(self, events: DeploymentEventRepository, metrics: Metrics | None = None) -> None:
        self.events = events
        self.metrics = metrics

    @activity.defn(name=acts.RECORD_DEPLOYMENT_EVENTS.name)
    async def record_deployment_events(
        self, input: RecordDeploymentEventsInput
    ) -> RecordDeploymentEventsResult:
        key = f"{input.workflow_id}:{input.generation}"
        written = await self.events.append(
            [
                NewDeploymentEvent(
                    tenant=input.tenant,
                    deployment=input.deployment,
                    generation=input.generation,
                    workflow_id=input.workflow_id,
                    event_type=event.event_type.value,
                    replica=event.replica,
                    node_id=event.node_id,
                    detail=event.detail,
                    occurred_at=event.at,
                    dedupe_key=f"{key}:{input.first_sequence + offset}",
                )
                for offset, event in enumerate(input.events)
            ]
        )
        return RecordDeploymentEventsResult(written=written)
