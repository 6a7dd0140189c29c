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
from controlplane.cluster_names import carries_prefix
from controlplane.config import Settings
from controlplane.db.probes import ProbeRecord, ProbeRepository, ProbeTarget
from controlplane.db.repository import NodeRepository
from controlplane.health.probe import NO_ANSWER, ProbeOutcome, measuring_loop_lag, probe_model
from controlplane.health.sweep import Serving, suspects
from controlplane.health.verdict import RoundGuard, in_startup_grace, judge, suspect_round
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
        self.prefix = settings.cluster_name_prefix

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
                listed = {r.name: r.status for r in records if carries_prefix(r.name, self.prefix)}
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
        """Probe every serving node of this shard; record the counts; return the changed.

        All probes run first, under a loop-lag measure; then the round is judged as a whole
        (``suspect_round``) before each node is: a suspect round's unanswered probes do not
        count toward MODEL_PROBE_THRESHOLD, so a starved worker does not mark healthy models
        unhealthy (and so has them restarted).
        """
        s = self.settings
        timeout_s = s.model_probe_timeout.total_seconds()
        targets = await self.probes.shard(input.shard, input.shards)
        gate = asyncio.Semaphore(probe_concurrency(len(targets), timeout_s))

        async def one(target: ProbeTarget) -> ProbeOutcome:
            async with gate:
                return await probe_model(
                    self.http,
                    target.endpoint,
                    path=s.model_probe_path,
                    timeout=timeout_s,
                    model_id=target.model if s.model_probe_check_models else None,
                )

        async with heartbeating(), measuring_loop_lag() as lag:
            outcomes = await asyncio.gather(*(one(t) for t in targets))
        # The models that answered until now, and those of them that got no answer this round.
        now = datetime.now(UTC)
        grace = s.model_probe_startup_grace
        answering = [
            o
            for t, o in zip(targets, outcomes, strict=True)
            if t.consecutive_failures == 0
            and not in_startup_grace(ready_at=t.ready_at, now=now, startup_grace=grace)
        ]
        stopped = sum(1 for o in answering if not o.ok and o.reason in NO_ANSWER)
        suspect = suspect_round(
            RoundGuard(
                max_loop_lag_s=s.model_probe_max_loop_lag.total_seconds(),
                suspect_fraction=s.model_probe_suspect_fraction,
                suspect_min=s.model_probe_suspect_min,
            ),
            answering=len(answering),
            stopped=stopped,
            loop_lag_s=lag.worst_s,
        )
        if suspect is not None:
            log.warning(
                "probe shard %d/%d: round suspect (%s): %d of %d answering models got no answer "
                "(%d probed), loop %.2fs late at worst (MODEL_PROBE_MAX_LOOP_LAG %.2fs); "
                "unanswered probes not counted",
                input.shard,
                input.shards,
                suspect,
                stopped,
                len(answering),
                len(targets),
                lag.worst_s,
                s.model_probe_max_loop_lag.total_seconds(),
            )
            if self.metrics is not None:
                self.metrics.probe_suspect_rounds.labels(reason=suspect).inc()
        records: list[ProbeRecord] = []
        changed: list[ModelChange] = []
        for target, outcome in zip(targets, outcomes, strict=True):
            if not outcome.ok and self.metrics is not None:
                self.metrics.probe_failures.labels(reason=outcome.reason or "unknown").inc()
            verdict = judge(
                ok=outcome.ok,
                status=NodeStatus(target.status),
                failures_so_far=target.consecutive_failures,
                threshold=s.model_probe_threshold,
                ready_at=target.ready_at,
                now=now,
                startup_grace=grace,
                counts=suspect is None or outcome.reason not in NO_ANSWER,
            )
            records.append(
                ProbeRecord(
                    node_id=target.node_id,
                    consecutive_failures=verdict.consecutive_failures,
                    last_error=outcome.detail,
                )
            )
            if verdict.tell is not None:
                changed.append(
                    ModelChange(
                        node_id=target.node_id,
                        cluster_name=target.cluster_name,
                        workflow_id=target.workflow_id,
                        signal=ModelHealthSignal(
                            healthy=verdict.tell,
                            consecutive_failures=verdict.consecutive_failures,
                            detail=outcome.detail,
                        ),
                    )
                )
        await self.probes.record(records, datetime.now(UTC))
        failures = sum(1 for r in records if r.last_error is not None)
        if changed:
            log.info("probe shard %d/%d: %d changed", input.shard, input.shards, len(changed))
        return ProbeShardResult(probed=len(targets), failures=failures, changed=changed)
