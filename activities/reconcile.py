"""The reconciler's scan: SkyPilot's clusters against the node rows (controlplane/reconcile)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from temporalio import activity
from temporalio.client import Client

from activities.attempts import records_retries
from activities.errors import permanent, translate_errors
from activities.recovery import recover_node, workflow_running
from controlplane.config import Settings
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import (
    LIVE_STATUSES,
    RECONCILER_WATCHED_STATUSES,
    LaunchMode,
    NodeStatus,
)
from controlplane.metrics import Metrics
from controlplane.reconcile import ClusterSeen, NodeSeen, Owner, compare, ours
from controlplane.skypilot.backend import ApiBackend, SkyPilotBackend
from controlplane.spec import NodeSpec
from workflows import activity_refs as acts
from workflows.models import (
    ReconcileScanInput,
    ReconcileScanResult,
    RecoverNodeInput,
    RecoverNodeResult,
)


class ReconcileActivities:
    def __init__(
        self,
        backends: Mapping[LaunchMode, SkyPilotBackend],
        nodes: NodeRepository,
        settings: Settings,
        default_mode: LaunchMode,
        metrics: Metrics | None = None,
        temporal: Client | None = None,
    ) -> None:
        self.metrics = metrics
        self.temporal = temporal  # set by the worker: to see whether a row's workflow runs
        self.backends = backends
        self.nodes = nodes
        self.settings = settings
        self.default_mode = default_mode

    def _inventory_backend(self) -> SkyPilotBackend:
        # The API server sees every user's clusters; the CLI talks to a server too.
        backend = self.backends.get(LaunchMode.API) or self.backends.get(LaunchMode.CLI)
        if backend is None:
            raise permanent(
                "no SkyPilot access configured for the reconciler", "ConfigurationError"
            )
        return backend

    async def _owner(self, backend: SkyPilotBackend) -> Owner:
        """Our SkyPilot user as clusters record it, and this installation's name prefix.

        With a service-account token the server decides who we are (it overrides the identity
        we send), so ask it; without one, requests belong to SKYPILOT_USER_ID.
        """
        user: str | None = self.settings.skypilot_user_id
        if self.settings.skypilot_service_account_token is not None:
            user = None
            if isinstance(backend, ApiBackend):
                user = (await backend.client.health()).user_id
            if user is None:
                activity.logger.warning(
                    "reconcile: the SkyPilot server did not say which user our token is; "
                    "no cluster is treated as ours (nothing will be called an orphan)"
                )
        return Owner(prefix=self.settings.cluster_name_prefix, user=user)

    @activity.defn(name=acts.RECONCILE_SCAN.name)
    @records_retries
    @translate_errors
    async def reconcile_scan(self, input: ReconcileScanInput) -> ReconcileScanResult:
        backend = self._inventory_backend()
        owner = await self._owner(backend)
        records = await backend.list_clusters()
        clusters = [
            ClusterSeen(
                name=r.name,
                status=r.status.value,
                launched_at=datetime.fromtimestamp(r.launched_at, UTC) if r.launched_at else None,
                user_hash=r.user_hash,
            )
            for r in records
        ]
        rows = await self.nodes.list(statuses=RECONCILER_WATCHED_STATUSES, limit=100_000)
        seen = {row.cluster_name for row in rows}
        for cluster in clusters:  # rows of our clusters that ended: an orphan's history
            if ours(cluster, owner) and cluster.name not in seen:
                row = await self.nodes.get_by_cluster(cluster.name)
                if row is not None:
                    rows.append(row)
        nodes = [
            NodeSeen(
                node_id=row.node_id,
                cluster_name=row.cluster_name,
                status=NodeStatus(row.status),
                launch_mode=str(row.launch_mode),
                workflow_id=row.workflow_id,
                status_deadline_at=row.status_deadline_at,
                workflow_running=await self._owner_running(row.workflow_id, row.status),
            )
            for row in rows
        ]
        grace = input.orphan_grace_s or self.settings.reconcile_orphan_grace.total_seconds()
        findings = compare(
            clusters,
            nodes,
            now=datetime.now(UTC),
            orphan_grace=timedelta(seconds=grace),
            owner=owner,
        ).bounded(input.max_findings)
        if self.metrics is not None and findings.orphans:
            self.metrics.orphans_found.inc(findings.total.get("orphans", len(findings.orphans)))
        for finding in findings.all():
            activity.logger.warning(
                "reconcile %s: %s (%s)", finding.kind, finding.cluster_name, finding.detail
            )
        s = self.settings
        return ReconcileScanResult(
            findings=findings,
            clusters_seen=len(clusters),
            nodes_seen=len(nodes),
            cleanup_enabled=s.reconcile_cleanup,
            default_mode=self.default_mode,
            terminate_timeout_s=s.skypilot_terminate_timeout.total_seconds(),
            heartbeat_timeout_s=s.node_heartbeat_timeout.total_seconds(),
            retry_backoff_s=s.skypilot_retry_backoff.total_seconds(),
        )

    async def _owner_running(self, workflow_id: str | None, status: str) -> bool:
        """Whether a live row's workflow runs; True when it cannot be known (no client)."""
        if self.temporal is None or not workflow_id or NodeStatus(status) not in LIVE_STATUSES:
            return True
        return await workflow_running(self.temporal, workflow_id)

    @activity.defn(name=acts.RECOVER_NODE.name)
    async def recover_node(self, input: RecoverNodeInput) -> RecoverNodeResult:
        """Adopt or tear down (RECONCILE_RECOVER_LIVE) a live row whose workflow ended."""
        row = await self.nodes.get(input.node_id)
        if row is None or NodeStatus(row.status) not in LIVE_STATUSES or not row.workflow_id:
            return RecoverNodeResult()
        if self.temporal is None:
            raise permanent("the reconciler has no Temporal client", "ConfigurationError")
        if await workflow_running(self.temporal, row.workflow_id):
            return RecoverNodeResult()
        mode = self.settings.reconcile_recover_live
        await recover_node(
            self.temporal,
            workflow_id=row.workflow_id,
            spec=NodeSpec.model_validate(row.spec),
            launch_mode=LaunchMode(row.launch_mode),
            mode=mode,
            task_queue=self.settings.temporal_task_queue,
        )
        activity.logger.warning(
            "reconcile: node %s (%s) had no running workflow; started %s (%s)",
            row.node_id,
            row.cluster_name,
            row.workflow_id,
            mode,
        )
        return RecoverNodeResult(workflow_id=row.workflow_id, mode=mode)
