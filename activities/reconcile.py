"""The reconciler's scan: SkyPilot's clusters against the node rows (controlplane/reconcile)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from temporalio import activity

from activities.errors import permanent, translate_errors
from controlplane.config import Settings
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.metrics import Metrics
from controlplane.reconcile import ClusterSeen, NodeSeen, compare, ours
from controlplane.skypilot.backend import SkyPilotBackend
from workflows.models import ReconcileScanInput, ReconcileScanResult

WATCHED = [
    NodeStatus.PENDING,
    NodeStatus.LAUNCHING,
    NodeStatus.RUNNING,
    NodeStatus.UNHEALTHY,
    NodeStatus.TERMINATING,
    NodeStatus.CLEANUP_FAILED,
]


class ReconcileActivities:
    def __init__(
        self,
        backends: Mapping[LaunchMode, SkyPilotBackend],
        nodes: NodeRepository,
        settings: Settings,
        default_mode: LaunchMode,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
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

    @activity.defn(name="reconcile_scan")
    @translate_errors
    async def reconcile_scan(self, input: ReconcileScanInput) -> ReconcileScanResult:
        records = await self._inventory_backend().list_clusters()
        clusters = [
            ClusterSeen(
                name=r.name,
                status=r.status.value,
                launched_at=datetime.fromtimestamp(r.launched_at, UTC) if r.launched_at else None,
            )
            for r in records
        ]
        rows = await self.nodes.list(statuses=[s.value for s in WATCHED], limit=100_000)
        seen = {row.cluster_name for row in rows}
        for cluster in clusters:  # rows of our clusters that ended: an orphan's history
            if ours(cluster.name) and cluster.name not in seen:
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
            )
            for row in rows
        ]
        grace = input.orphan_grace_s or self.settings.reconcile_orphan_grace.total_seconds()
        findings = compare(
            clusters, nodes, now=datetime.now(UTC), orphan_grace=timedelta(seconds=grace)
        )
        if self.metrics is not None and findings.orphans:
            self.metrics.orphans_found.inc(len(findings.orphans))
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
