"""FleetHealthWorkflow: one sweep of the whole fleet's health, run on a Temporal Schedule.

Cluster status comes from one cluster list for every serving node (not a call per node); model
liveness from K probe shards, separate activities that any worker picks up, so probing scales
out by adding workers with no coordinator beyond Temporal and Postgres. Only the node
workflows whose cluster or model changed are signalled, so a healthy node costs nothing here.

Lease mode (``lease_s`` set, as the worker's schedules run it): the run holds one
monitor_clusters and ``shards`` monitor_model_shard activities for the lease, which sweep every
interval and signal the changed nodes themselves. Heartbeats are not history events, so a run
costs the same ~10 + 3 x shards events per lease whatever the fleet's size or the intervals.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows import activity_refs as acts
    from workflows import options
    from workflows.failures import describe
    from workflows.fleet_models import (
        ClusterSweepInput,
        CountServingInput,
        FleetHealthInput,
        FleetHealthReport,
        MonitorInput,
        MonitorResult,
        ProbeShardInput,
        ProbeShardResult,
    )
    from workflows.inputs import require_input
    from workflows.node import NodeWorkflow

# A small fleet needs fewer probe activities: each costs history events whatever its size.
NODES_PER_SHARD = 250


@workflow.defn(name="FleetHealthWorkflow")
class FleetHealthWorkflow:
    @workflow.run
    async def run(self, input: FleetHealthInput | None = None) -> FleetHealthReport:
        input = require_input(input, FleetHealthInput, "FleetHealthWorkflow")
        report = FleetHealthReport()
        if input.lease_s is not None:
            await self._lease(report, input, input.lease_s)
            return report
        sweeps = []
        if input.clusters:
            sweeps.append(self._clusters(report))
        if input.models:
            sweeps.append(self._models(report, input.shards))
        await asyncio.gather(*sweeps)
        return report

    async def _clusters(self, report: FleetHealthReport) -> None:
        try:
            swept = await acts.SWEEP_CLUSTERS.run(ClusterSweepInput(), options.SWEEP)
        except ActivityError as error:
            workflow.logger.warning("cluster sweep failed: %s", describe(error))
            return
        report.clusters_listed = swept.clusters_listed
        report.serving_nodes = swept.serving_nodes
        report.status_calls = swept.status_calls
        for change in swept.changed:
            # The node confirms once more and acts (records lost, downs the rest) itself.
            node = workflow.get_external_workflow_handle(change.workflow_id)
            if await self._signalled(
                report, change.workflow_id, node.signal(NodeWorkflow.check_health)
            ):
                report.clusters_changed.append(change.cluster_name)

    async def _models(self, report: FleetHealthReport, max_shards: int) -> None:
        try:
            counted = await acts.COUNT_SERVING.run_local(CountServingInput(), options.COUNT_SERVING)
        except ActivityError as error:
            workflow.logger.warning("could not count serving nodes: %s", describe(error))
            return
        if counted.serving_nodes == 0:
            return
        shards = min(max_shards, -(-counted.serving_nodes // NODES_PER_SHARD))
        results = await asyncio.gather(
            *(
                acts.PROBE_MODEL_SHARD.run(
                    ProbeShardInput(shard=shard, shards=shards), options.SWEEP
                )
                for shard in range(shards)
            ),
            return_exceptions=True,
        )
        for result in results:
            if not isinstance(result, ProbeShardResult):
                workflow.logger.warning("probe shard failed: %s", describe(result))
                continue
            report.models_probed += result.probed
            report.probe_failures += result.failures
            for change in result.changed:
                node = workflow.get_external_workflow_handle(change.workflow_id)
                sending = node.signal(NodeWorkflow.model_health, change.signal)
                if await self._signalled(report, change.workflow_id, sending):
                    report.models_changed.append(change.cluster_name)

    async def _lease(
        self, report: FleetHealthReport, input: FleetHealthInput, lease_s: float
    ) -> None:
        """The monitoring activities, all at once, for the lease (a fixed number: the run's
        events do not depend on the fleet); they signal the changed nodes themselves."""
        monitors = []
        if input.clusters:
            monitors.append(
                acts.MONITOR_CLUSTERS.run(
                    MonitorInput(lease_s=lease_s, interval_s=input.interval_s),
                    options.lease(lease_s),
                )
            )
        if input.models:
            monitors.extend(
                acts.MONITOR_MODEL_SHARD.run(
                    MonitorInput(
                        lease_s=lease_s,
                        interval_s=input.interval_s,
                        shard=shard,
                        shards=input.shards,
                    ),
                    options.lease(lease_s),
                )
                for shard in range(input.shards)
            )
        for result in await asyncio.gather(*monitors, return_exceptions=True):
            if not isinstance(result, MonitorResult):
                workflow.logger.warning("fleet monitor failed: %s", describe(result))
                continue
            report.sweeps += result.sweeps
            report.failed_sweeps += result.failed_sweeps
            report.status_calls += result.status_calls
            report.models_probed += result.probes
            report.probe_failures += result.probe_failures
            report.changed += result.changed
            report.ended_meanwhile += result.ended_meanwhile
            report.signal_errors.extend(result.signal_errors)

    @staticmethod
    async def _signalled(
        report: FleetHealthReport, workflow_id: str, sending: Awaitable[None]
    ) -> bool:
        """Send a signal to a node's workflow; False (and noted) if it has ended."""
        try:
            await sending
        except FailureError as error:  # the node's workflow has ended meanwhile
            report.signal_errors.append(f"{workflow_id}: {describe(error)}")
            return False
        return True
