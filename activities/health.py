"""Fleet-health activities: one cluster list for all serving nodes, and model probes by shard.

Both return only what changed; the FleetHealthWorkflow signals those node workflows. Nothing
here runs per node in Temporal: a shard probes its nodes concurrently inside one activity, and
writes their failure counts in one statement.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime

import httpx
from temporalio import activity

from activities.errors import translate_errors
from activities.heartbeat import heartbeating
from controlplane.config import Settings
from controlplane.db.probes import ProbeRecord, ProbeRepository, ProbeTarget
from controlplane.db.repository import NodeRepository
from controlplane.health.probe import probe_model
from controlplane.health.sweep import Serving, suspects
from controlplane.health.verdict import judge
from controlplane.lifecycle import SERVING_STATUSES, LaunchMode, NodeStatus
from controlplane.metrics import Metrics
from controlplane.skypilot.backend import SkyPilotBackend
from controlplane.skypilot.models import ClusterStatus
from workflows import activity_refs as acts
from workflows.fleet_models import (
    ClusterChange,
    ClusterSweepInput,
    ClusterSweepResult,
    CountServingInput,
    CountServingResult,
    ModelChange,
    ModelHealthSignal,
    ProbeShardInput,
    ProbeShardResult,
)

log = logging.getLogger(__name__)

# Probes in flight per shard activity: at least this many, and enough that a shard whose every
# model hangs (each probe waits MODEL_PROBE_TIMEOUT) still ends within SHARD_BUDGET_S, well
# inside the sweep activity's start-to-close timeout.
MIN_PROBE_CONCURRENCY = 64
MAX_PROBE_CONCURRENCY = 1024
SHARD_BUDGET_S = 60.0


def probe_concurrency(nodes: int, timeout_s: float) -> int:
    needed = math.ceil(nodes * timeout_s / SHARD_BUDGET_S)
    return max(MIN_PROBE_CONCURRENCY, min(MAX_PROBE_CONCURRENCY, needed))


class HealthActivities:
    def __init__(
        self,
        backends: Mapping[LaunchMode, SkyPilotBackend],
        nodes: NodeRepository,
        probes: ProbeRepository,
        settings: Settings,
        http: httpx.AsyncClient,
        metrics: Metrics | None = None,
    ) -> None:
        self.backends = backends
        self.nodes = nodes
        self.probes = probes
        self.settings = settings
        self.http = http
        self.metrics = metrics
        # This installation's clusters only (the cluster-name prefix).
        self.prefix = f"{settings.cluster_name_prefix}-"

    @activity.defn(name=acts.SWEEP_CLUSTERS.name)
    @translate_errors
    async def sweep_clusters(self, input: ClusterSweepInput) -> ClusterSweepResult:
        """One cluster list per launch mode in use, then a fresh look at each suspect only."""
        rows = await self.nodes.list(statuses=[s.value for s in SERVING_STATUSES], limit=1_000_000)
        by_mode: dict[LaunchMode, list[Serving]] = defaultdict(list)
        for row in rows:
            by_mode[LaunchMode(row.launch_mode)].append(
                Serving(row.node_id, row.cluster_name, row.workflow_id, row.launch_mode)
            )
        listed_total = 0
        calls = 0
        changed: list[ClusterChange] = []
        async with heartbeating():
            for mode, serving in sorted(by_mode.items()):
                backend = self.backends.get(mode)
                if backend is None:
                    log.warning("no SkyPilot %s access: %d nodes not swept", mode, len(serving))
                    continue
                records = await backend.list_clusters()
                calls += 1
                listed = {r.name: r.status for r in records if r.name.startswith(self.prefix)}
                listed_total += len(listed)
                for node, seen in suspects(serving, listed):
                    confirmed = await backend.cluster_status(node.cluster_name, refresh=True)
                    calls += 1
                    if confirmed in (ClusterStatus.UP, ClusterStatus.AUTOSTOPPING):
                        continue  # the list was stale; nothing changed
                    log.info(
                        "cluster %s of node %s is %s (list said %s)",
                        node.cluster_name,
                        node.node_id,
                        confirmed.value,
                        seen.value,
                    )
                    changed.append(
                        ClusterChange(
                            node_id=node.node_id,
                            cluster_name=node.cluster_name,
                            workflow_id=node.workflow_id,
                            cluster_status=confirmed.value,
                        )
                    )
        return ClusterSweepResult(
            clusters_listed=listed_total,
            serving_nodes=len(rows),
            status_calls=calls,
            changed=changed,
        )

    @activity.defn(name=acts.COUNT_SERVING.name)
    async def count_serving_nodes(self, input: CountServingInput) -> CountServingResult:
        """How many nodes the probes cover: decides how many shards a sweep uses."""
        counts = await self.nodes.count_by_status()
        return CountServingResult(
            serving_nodes=sum(counts.get(s.value, 0) for s in SERVING_STATUSES)
        )

    @activity.defn(name=acts.PROBE_MODEL_SHARD.name)
    async def probe_model_shard(self, input: ProbeShardInput) -> ProbeShardResult:
        """Probe every serving node of this shard; record the counts; return the changed."""
        s = self.settings
        targets = await self.probes.shard(input.shard, input.shards)
        gate = asyncio.Semaphore(
            probe_concurrency(len(targets), s.model_probe_timeout.total_seconds())
        )

        async def one(target: ProbeTarget) -> tuple[ProbeRecord, ModelChange | None]:
            async with gate:
                outcome = await probe_model(
                    self.http,
                    target.endpoint,
                    path=s.model_probe_path,
                    timeout=s.model_probe_timeout.total_seconds(),
                    model_id=target.model if s.model_probe_check_models else None,
                )
            if not outcome.ok and self.metrics is not None:
                self.metrics.probe_failures.labels(reason=outcome.reason or "unknown").inc()
            verdict = judge(
                ok=outcome.ok,
                status=NodeStatus(target.status),
                failures_so_far=target.consecutive_failures,
                threshold=s.model_probe_threshold,
                ready_at=target.ready_at,
                now=datetime.now(UTC),
                startup_grace=s.model_probe_startup_grace,
            )
            record = ProbeRecord(
                node_id=target.node_id,
                consecutive_failures=verdict.consecutive_failures,
                last_error=outcome.detail,
            )
            if verdict.tell is None:
                return record, None
            return record, ModelChange(
                node_id=target.node_id,
                cluster_name=target.cluster_name,
                workflow_id=target.workflow_id,
                signal=ModelHealthSignal(
                    healthy=verdict.tell,
                    consecutive_failures=verdict.consecutive_failures,
                    detail=outcome.detail,
                ),
            )

        async with heartbeating():
            results = await asyncio.gather(*(one(t) for t in targets))
        await self.probes.record([r for r, _ in results], datetime.now(UTC))
        changed = [c for _, c in results if c is not None]
        failures = sum(1 for r, _ in results if r.last_error is not None)
        if changed:
            log.info("probe shard %d/%d: %d changed", input.shard, input.shards, len(changed))
        return ProbeShardResult(probed=len(targets), failures=failures, changed=changed)
