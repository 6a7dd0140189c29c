"""FleetHealthWorkflow: one sweep of the whole fleet's health, run on a Temporal Schedule.

Cluster status comes from one cluster list for every serving node (not a call per node); model
liveness from K probe shards, separate activities that any worker picks up, so probing scales
out by adding workers with no coordinator beyond Temporal and Postgres. Only the node
workflows whose cluster or model changed are signalled, so a healthy node costs nothing here.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from workflows import activity_refs as acts
    from workflows.fleet_models import (
        ClusterSweepInput,
        CountServingInput,
        FleetHealthInput,
        FleetHealthReport,
        ProbeShardInput,
        ProbeShardResult,
    )
    from workflows.inputs import require_input
    from workflows.node import describe

COUNT_OPTIONS = {
    "start_to_close_timeout": timedelta(seconds=30),
    "retry_policy": RetryPolicy(maximum_attempts=2),
}
# A small fleet needs fewer probe activities: each costs history events whatever its size.
NODES_PER_SHARD = 250
SWEEP_OPTIONS = {
    "start_to_close_timeout": timedelta(minutes=2),
    "heartbeat_timeout": timedelta(seconds=30),
    # A sweep that cannot run is simply the next sweep's work: retry a little, then give up.
    "retry_policy": RetryPolicy(maximum_attempts=2),
}


@workflow.defn(name="FleetHealthWorkflow")
class FleetHealthWorkflow:
    @workflow.run
    async def run(self, input: FleetHealthInput | None = None) -> FleetHealthReport:
        input = require_input(input, FleetHealthInput, "FleetHealthWorkflow")
        report = FleetHealthReport()
        sweeps = []
        if input.clusters:
            sweeps.append(self._clusters(report))
        if input.models:
            sweeps.append(self._models(report, input.shards))
        await asyncio.gather(*sweeps)
        return report

    async def _clusters(self, report: FleetHealthReport) -> None:
        try:
            swept = await acts.SWEEP_CLUSTERS.run(ClusterSweepInput(), **SWEEP_OPTIONS)
        except ActivityError as error:
            workflow.logger.warning("cluster sweep failed: %s", describe(error))
            return
        report.clusters_listed = swept.clusters_listed
        report.serving_nodes = swept.serving_nodes
        report.status_calls = swept.status_calls
        for change in swept.changed:
            # The node confirms once more and acts (records lost, downs the rest) itself.
            if await self._signal(report, change.workflow_id, "check_health", None):
                report.clusters_changed.append(change.cluster_name)

    async def _models(self, report: FleetHealthReport, max_shards: int) -> None:
        try:
            counted = await acts.COUNT_SERVING.run_local(CountServingInput(), **COUNT_OPTIONS)
        except ActivityError as error:
            workflow.logger.warning("could not count serving nodes: %s", describe(error))
            return
        if counted.serving_nodes == 0:
            return
        shards = min(max_shards, -(-counted.serving_nodes // NODES_PER_SHARD))
        results = await asyncio.gather(
            *(
                acts.PROBE_MODEL_SHARD.run(
                    ProbeShardInput(shard=shard, shards=shards), **SWEEP_OPTIONS
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
                if await self._signal(report, change.workflow_id, "model_health", change.signal):
                    report.models_changed.append(change.cluster_name)

    @staticmethod
    async def _signal(
        report: FleetHealthReport, workflow_id: str, name: str, arg: object | None
    ) -> bool:
        handle = workflow.get_external_workflow_handle(workflow_id)
        try:
            if arg is None:
                await handle.signal(name)
            else:
                await handle.signal(name, arg)
        except FailureError as error:  # the node's workflow has ended meanwhile
            report.signal_errors.append(f"{workflow_id}: {describe(error)}")
            return False
        return True
