"""Fleet-health activities: one cluster list for all serving nodes, and model probes by shard.

One-shot (sweep_clusters, probe_model_shard): one sweep, returning only what changed; the
FleetHealthWorkflow signals those node workflows. Lease mode (monitor_clusters,
monitor_model_shard): the same sweep every interval until the lease ends, signalling the changed
node workflows from here, so a sweep costs heartbeats only, not history events. Nothing here
runs per node in Temporal: a shard probes its nodes concurrently inside one activity, and
writes their failure counts in one statement.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from activities.errors import translate_errors
from activities.heartbeat import heartbeating
from controlplane.cluster_names import carries_prefix
from controlplane.config import Settings
from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.db.probes import ProbeRecord, ProbeRepository, ProbeTarget
from controlplane.db.repository import NodeRepository
from controlplane.health.probe import (
    MAX_PROBES_IN_FLIGHT,
    NO_ANSWER,
    ProbeOutcome,
    measuring_loop_lag,
    probe_model,
)
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
    MonitorInput,
    MonitorResult,
    ProbeShardInput,
    ProbeShardResult,
)
from workflows.node import NodeWorkflow

log = logging.getLogger(__name__)

# Probes in flight per shard activity: at least this many, and enough that a shard whose every
# model hangs (each probe waits MODEL_PROBE_TIMEOUT) still ends within SHARD_BUDGET_S, well
# inside the sweep activity's start-to-close timeout.
MIN_PROBE_CONCURRENCY = 64
MAX_PROBE_CONCURRENCY = 1024
SHARD_BUDGET_S = 60.0


# Lease mode: how often the running tally is heartbeated (within and between sweeps), and how
# many signal errors a result names (the count is complete).
LEASE_HEARTBEAT_S = 5.0
MAX_NAMED_SIGNAL_ERRORS = 100


def lease_left_s(scheduled: datetime, lease_s: float, now: datetime) -> float:
    """What is left of a lease that began when the activity was first scheduled: a retry on
    another worker carries on to the same end, not a fresh lease (clamped to [0, lease_s], so
    a server clock ahead of this one, as on the time-skipping test server, cannot lengthen it)."""
    left = lease_s - (now - scheduled).total_seconds()
    return max(0.0, min(lease_s, left))


def describe_failure(error: Exception, database_url: str | None) -> str:
    """A failed sweep's error for the log, with no credentials."""
    if isinstance(error, DATABASE_ERRORS):
        text = summarize_database_error(error)
        return text.replace(database_url, "<DATABASE_URL>") if database_url else text
    return f"{type(error).__name__}: {error}"[:500]


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
        temporal: Client | None = None,
        probes_in_flight: int = MAX_PROBES_IN_FLIGHT,
    ) -> None:
        self.backends = backends
        self.nodes = nodes
        self.probes = probes
        self.settings = settings
        self.http = http
        self.metrics = metrics
        # Shared by every shard this worker probes (``http`` is probe_client(the same number)).
        self.probe_slots = asyncio.Semaphore(probes_in_flight)
        # Lease mode signals the node workflows itself (worker.py create_worker sets it).
        self.temporal = temporal
        # This installation's clusters only (the cluster-name prefix).
        self.prefix = settings.cluster_name_prefix

    @activity.defn(name=acts.SWEEP_CLUSTERS.name)
    @translate_errors
    async def sweep_clusters(self, input: ClusterSweepInput) -> ClusterSweepResult:
        """One sweep (a one-shot FleetHealthWorkflow run signals the changed)."""
        async with heartbeating():
            return await self._sweep_clusters()

    async def _sweep_clusters(self) -> ClusterSweepResult:
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
        """One probe round of a shard (a one-shot FleetHealthWorkflow run signals the changed)."""
        async with heartbeating():
            return await self._probe_model_shard(input)

    async def _probe_model_shard(self, input: ProbeShardInput) -> ProbeShardResult:
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
            async with gate, self.probe_slots:
                return await probe_model(
                    self.http,
                    target.endpoint,
                    path=s.model_probe_path,
                    timeout=timeout_s,
                    model_id=target.model if s.model_probe_check_models else None,
                )

        async with measuring_loop_lag() as lag:
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

    # --- lease mode -----------------------------------------------------------------------------
    @activity.defn(name=acts.MONITOR_CLUSTERS.name)
    async def monitor_clusters(self, input: MonitorInput) -> MonitorResult:
        """Sweep the clusters every NODE_HEALTH_CHECK_INTERVAL until the lease ends; tell each
        changed node's workflow (check_health: it confirms once more and acts itself)."""

        async def sweep(summary: MonitorResult) -> None:
            swept = await self._sweep_clusters()
            summary.status_calls += swept.status_calls
            for change in swept.changed:
                node = self._node(change.workflow_id)
                await self._signalled(
                    summary, change.workflow_id, node.signal(NodeWorkflow.check_health)
                )

        return await self._lease(
            input, "cluster sweep", lambda: self.settings.node_health_check_interval, sweep
        )

    @activity.defn(name=acts.MONITOR_MODEL_SHARD.name)
    async def monitor_model_shard(self, input: MonitorInput) -> MonitorResult:
        """Probe this shard's models every MODEL_PROBE_INTERVAL until the lease ends; tell each
        node whose verdict changed (model_health, with the verdict)."""
        shard = ProbeShardInput(shard=input.shard, shards=input.shards)

        async def sweep(summary: MonitorResult) -> None:
            probed = await self._probe_model_shard(shard)
            summary.probes += probed.probed
            summary.probe_failures += probed.failures
            for change in probed.changed:
                node = self._node(change.workflow_id)
                await self._signalled(
                    summary,
                    change.workflow_id,
                    node.signal(NodeWorkflow.model_health, change.signal),
                )

        return await self._lease(
            input,
            f"probe shard {input.shard}/{input.shards}",
            lambda: self.settings.model_probe_interval,
            sweep,
        )

    def _node(self, workflow_id: str) -> WorkflowHandle[Any, Any]:
        assert self.temporal is not None  # _lease checked it
        return self.temporal.get_workflow_handle(workflow_id)

    async def _lease(
        self,
        input: MonitorInput,
        what: str,
        setting: Callable[[], timedelta],
        sweep: Callable[[MonitorResult], Awaitable[None]],
    ) -> MonitorResult:
        """Run ``sweep`` every ``interval_s`` of the input, else every ``setting()`` (read anew
        before each sweep), until the lease ends, heartbeating the tally throughout. End at
        once, retryable, if the worker shuts down: another worker's attempt carries the lease
        on, from the last heartbeated tally."""
        if self.temporal is None:
            raise ApplicationError(
                "HealthActivities has no Temporal client to signal nodes with",
                type="ConfigurationError",
                non_retryable=True,
            )
        info = activity.info()
        summary = MonitorResult()
        if info.heartbeat_details:
            summary = MonitorResult.model_validate(info.heartbeat_details[0])
        left = lease_left_s(info.scheduled_time, input.lease_s, datetime.now(UTC))
        ends = time.monotonic() + left

        async def beat() -> None:
            while True:
                activity.heartbeat(summary.model_dump(mode="json"))
                await asyncio.sleep(LEASE_HEARTBEAT_S)

        async def sweeps() -> MonitorResult:
            while (started := time.monotonic()) < ends:
                try:
                    await sweep(summary)
                except Exception as error:  # noqa: BLE001 - one failed sweep (SkyPilot or
                    # Postgres away) is the next sweep's work: logged and counted, the lease goes on
                    summary.failed_sweeps += 1
                    log.warning(
                        "%s failed (lease goes on): %s",
                        what,
                        describe_failure(error, self.settings.database_url),
                    )
                summary.sweeps += 1
                every = input.interval_s or setting().total_seconds()
                pause = every - (time.monotonic() - started)
                await asyncio.sleep(max(0.0, min(pause, ends - time.monotonic())))
            return summary

        shutdown = asyncio.create_task(activity.wait_for_worker_shutdown())
        sweeping = asyncio.create_task(sweeps())
        tasks = [asyncio.create_task(beat()), shutdown, sweeping]
        try:
            await asyncio.wait([shutdown, sweeping], return_when=asyncio.FIRST_COMPLETED)
            if sweeping.done():
                result = sweeping.result()
                log.info(
                    "%s lease ended: %d sweeps (%d failed), %d nodes signalled, %d ended meanwhile",
                    what,
                    result.sweeps,
                    result.failed_sweeps,
                    result.changed,
                    result.ended_meanwhile,
                )
                return result
            activity.heartbeat(summary.model_dump(mode="json"))
            raise ApplicationError(
                f"{what}: worker shutting down after {summary.sweeps} sweeps; another worker "
                "carries the lease on",
                type="WorkerShutdown",
            )
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    @staticmethod
    async def _signalled(
        summary: MonitorResult, workflow_id: str, sending: Awaitable[None]
    ) -> None:
        """Send one changed node's signal; a workflow that has ended meanwhile is only counted."""
        try:
            await sending
        except RPCError as error:
            if error.status is RPCStatusCode.NOT_FOUND:
                summary.ended_meanwhile += 1
                log.info("node workflow %s ended meanwhile: not signalled", workflow_id)
                return
            log.warning("could not signal node workflow %s: %s", workflow_id, error.message)
            if len(summary.signal_errors) < MAX_NAMED_SIGNAL_ERRORS:
                summary.signal_errors.append(f"{workflow_id}: {error.message}"[:300])
            return
        summary.changed += 1
