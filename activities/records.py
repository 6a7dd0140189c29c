"""Database activities: record intent, record transitions (with their outbox event), look up.

Every write is keyed by node id and idempotent, so a retried activity never duplicates a row or
an event.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from temporalio import activity

from activities.errors import permanent
from controlplane.config import Settings
from controlplane.db.errors import DATABASE_ERRORS
from controlplane.db.models import EventRow, TransitionOutcome
from controlplane.db.repository import (
    UNSET,
    ClusterNameConflict,
    InvalidTransition,
    NewNode,
    NodeRepository,
    NodeRow,
)
from controlplane.lifecycle import DEADLINE_STATUSES, EventType, LaunchMode, NodeStatus
from controlplane.metrics import Metrics, compensation_reason
from controlplane.rollout import choose_mode
from controlplane.spec import NodeSpec
from workflows import activity_refs as acts
from workflows.models import (
    LookupClusterInput,
    LookupClusterResult,
    NodePlan,
    RecordIntentInput,
    RecordIntentResult,
    TransitionInput,
    TransitionResult,
)


class RecordActivities:
    def __init__(
        self, nodes: NodeRepository, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self.nodes = nodes
        self.settings = settings
        self.metrics = metrics

    @contextlib.contextmanager
    def _database_step(self, name: str) -> Iterator[None]:
        """Count a failed attempt (the step is retried until the database answers)."""
        try:
            yield
        except DATABASE_ERRORS:
            if self.metrics is not None:
                self.metrics.database_step_failures.labels(activity=name).inc()
            raise

    def mode_for(self, tenant: str) -> LaunchMode:
        """The rollout's choice for a new node of this tenant (controlplane/rollout.py)."""
        return choose_mode(
            tenant,
            use_api_server=self.settings.skypilot_use_api_server,
            rollout_percent=self.settings.skypilot_api_rollout_percent,
        )

    def default_mode(self) -> LaunchMode:
        """For clusters with no node row: API when this worker can reach the API server."""
        return LaunchMode.API if self.settings.skypilot_api_server_url else LaunchMode.CLI

    def _check_mode_available(self, mode: LaunchMode) -> None:
        if mode is LaunchMode.API and not self.settings.skypilot_api_server_url:
            raise permanent(
                "API mode was asked for, but this worker has no SKYPILOT_API_SERVER_URL; "
                "nothing was launched",
                "ConfigurationError",
            )

    def _plan(self, row: NodeRow) -> NodePlan:
        s = self.settings
        return NodePlan(
            node_id=row.node_id,
            cluster_name=row.cluster_name,
            launch_mode=LaunchMode(row.launch_mode),
            launch_timeout_s=s.skypilot_launch_timeout.total_seconds(),
            terminate_timeout_s=s.skypilot_terminate_timeout.total_seconds(),
            health_interval_s=s.node_health_check_interval.total_seconds(),
            cleanup_budget_s=s.node_cleanup_budget.total_seconds(),
            heartbeat_timeout_s=s.node_heartbeat_timeout.total_seconds(),
            max_retries=s.skypilot_max_retries,
            retry_backoff_s=s.skypilot_retry_backoff.total_seconds(),
            lost_second_look_s=s.node_lost_second_look.total_seconds(),
        )

    @activity.defn(name=acts.RECORD_INTENT.name)
    async def record_intent(self, input: RecordIntentInput) -> RecordIntentResult:
        """Upsert the node's row as ``pending`` before anything exists in a cloud.

        The cluster is named here, under this installation's CLUSTER_NAME_PREFIX, and the name
        is kept in the row: a node that already has a row keeps the name it was created with.
        """
        spec = input.spec
        mode = input.launch_mode or self.mode_for(spec.tenant)
        self._check_mode_available(mode)
        try:
            with self._database_step(acts.RECORD_INTENT.name):
                row = await self._record_intent_row(spec, mode, input.workflow_id)
        except ClusterNameConflict as exc:
            raise permanent(f"{exc}; nothing was launched", "NodeIdentityConflict") from None
        _require_same_node(row, spec)
        activity.logger.debug(  # DEBUG: one INFO line per lifecycle step costs CPU at scale
            "node %s (%s) recorded, mode %s, status %s",
            row.node_id,
            row.cluster_name,
            row.launch_mode,
            row.status,
        )
        return RecordIntentResult(
            plan=self._plan(row),
            status=NodeStatus(row.status),
            owner_workflow_id=row.workflow_id or input.workflow_id,
            created=row.workflow_id == input.workflow_id,
            request_id=row.request_id,
            endpoint=row.endpoint,
        )

    async def _record_intent_row(
        self, spec: NodeSpec, mode: LaunchMode, workflow_id: str
    ) -> NodeRow:
        return await self.nodes.record_intent(
            NewNode.from_spec(
                spec,
                launch_mode=mode,
                workflow_id=workflow_id,
                cluster_name_prefix=self.settings.cluster_name_prefix,
            )
        )

    @activity.defn(name=acts.RECORD_TRANSITION.name)
    async def record_transition(self, input: TransitionInput) -> TransitionResult:
        """Change the status and append its event in one transaction."""
        deadline = (
            datetime.now(UTC) + timedelta(seconds=input.deadline_s)
            if input.deadline_s is not None
            else None
        )
        dedupe = f"{input.node_id}:{input.transition.event.value}"
        if input.dedupe_suffix:
            dedupe += f":{input.dedupe_suffix}"
        with self._database_step(acts.RECORD_TRANSITION.name):
            result = await self._transition(input, dedupe, deadline)
        if result.applied and self.metrics is not None:
            await self._observe(input, result.row, result.event)
        return TransitionResult(applied=result.applied, status=NodeStatus(result.row.status))

    async def _transition(
        self, input: TransitionInput, dedupe: str, deadline: datetime | None
    ) -> TransitionOutcome:
        # Only the fields given are set; a status that carries no deadline clears it.
        target = input.transition.target
        keeps_deadline = deadline is None and target in DEADLINE_STATUSES
        try:
            return await self.nodes.transition(
                input.node_id,
                input.transition,
                dedupe_key=dedupe,
                request_id=UNSET if input.request_id is None else input.request_id,
                endpoint=UNSET if input.endpoint is None else input.endpoint,
                error=UNSET if input.error is None else input.error,
                status_deadline_at=UNSET if keeps_deadline else deadline,
                payload={
                    key: value
                    for key, value in (("error", input.error), ("location", input.location))
                    if value
                }
                or None,
            )
        except InvalidTransition as exc:
            raise permanent(str(exc), "InvalidTransition") from None

    async def _observe(self, input: TransitionInput, row: NodeRow, event: EventRow | None) -> None:
        """Lifecycle metrics, recorded once: only when the transition was really applied."""
        assert self.metrics is not None
        target = input.transition.target
        if input.transition.event is EventType.READY and row.ready_at is not None:
            seconds = (row.ready_at - row.created_at).total_seconds()
            self.metrics.launch_to_ready.observe(seconds)
        elif (
            target is NodeStatus.TERMINATED
            and row.terminated_at is not None
            and event is not None
            and event.from_status == NodeStatus.TERMINATING.value  # not a late reconciler fix
        ):
            started = [
                e.created_at
                for e in await self.nodes.events(input.node_id)
                if e.event_type == EventType.TERMINATING.value
            ]
            if started:
                self.metrics.terminate_seconds.observe(
                    (row.terminated_at - max(started)).total_seconds()
                )
        elif target is NodeStatus.FAILED:
            self.metrics.compensations.labels(reason=compensation_reason(input.error)).inc()

    @activity.defn(name=acts.LOOKUP_CLUSTER.name)
    async def lookup_cluster(self, input: LookupClusterInput) -> LookupClusterResult:
        with self._database_step(acts.LOOKUP_CLUSTER.name):
            row = await self.nodes.get_by_cluster(input.cluster_name)
        mode = (
            LaunchMode(row.launch_mode) if row is not None else input.launch_mode
        ) or self.default_mode()
        self._check_mode_available(mode)
        s = self.settings
        live = row is not None and not NodeStatus(row.status).final
        return LookupClusterResult(
            cluster_name=input.cluster_name,
            node_id=row.node_id if row else None,
            tenant=row.tenant if row else None,
            workflow_id=row.workflow_id if live and row else None,
            status=NodeStatus(row.status) if row else None,
            launch_mode=mode,
            terminate_timeout_s=s.skypilot_terminate_timeout.total_seconds(),
            cleanup_budget_s=s.node_cleanup_budget.total_seconds(),
            heartbeat_timeout_s=s.node_heartbeat_timeout.total_seconds(),
            retry_backoff_s=s.skypilot_retry_backoff.total_seconds(),
        )


def _require_same_node(row: NodeRow, spec: NodeSpec) -> None:
    """An existing row is this node only if it records this very spec (an attach, not a theft).

    The node id is a hash of the spec, so a mismatch means a forged id or a hash collision; the
    error names only what the caller asked for.
    """
    try:
        same = row.tenant == spec.tenant and NodeSpec.model_validate(row.spec) == spec
    except ValueError:  # a row whose spec no longer validates is not this spec either
        same = False
    if not same:
        raise permanent(
            f"node {spec.node_id} is recorded with another spec than the one asked for; "
            "nothing was launched or attached",
            "NodeIdentityConflict",
        )
