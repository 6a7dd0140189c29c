"""ReconcileWorkflow: find (and, when configured, clean up) what the lifecycle left behind.

Run on a Temporal Schedule (starter/schedules.py). It always reports. It always retries our own
cleanup_failed teardowns (always safe) and always recovers live rows whose workflow is not
running (RECONCILE_RECOVER_LIVE: adopt or tear down); it downs foreign orphans and records
vanished running nodes as lost only when cleanup is on. Stuck rows are reported, never touched:
their own workflows (or a person) own them.
"""

from __future__ import annotations

from temporalio import workflow
from temporalio.exceptions import ActivityError, FailureError

with workflow.unsafe.imports_passed_through():
    from controlplane import lifecycle
    from workflows import activity_refs as acts
    from workflows import options
    from workflows.failures import describe
    from workflows.models import (
        DownClusterInput,
        Finding,
        LaunchMode,
        ReconcileInput,
        ReconcileReport,
        ReconcileScanInput,
        ReconcileScanResult,
        RecoverNodeInput,
        TransitionInput,
    )
    from workflows.node import NodeWorkflow

PATCH_RECOVER = "reconcile-recovers-unowned-and-retries-cleanup-failed"


@workflow.defn(name="ReconcileWorkflow")
class ReconcileWorkflow:
    @workflow.run
    async def run(self, input: ReconcileInput | None = None) -> ReconcileReport:
        input = input if isinstance(input, ReconcileInput) else ReconcileInput()
        scan = await acts.RECONCILE_SCAN.run(ReconcileScanInput(), options.RECONCILE_SCAN)
        findings = scan.findings
        cleanup = scan.cleanup_enabled if input.cleanup is None else input.cleanup
        report = ReconcileReport(
            clusters_seen=scan.clusters_seen,
            nodes_seen=scan.nodes_seen,
            cleanup_enabled=cleanup,
            orphans=findings.orphans,
            lost=findings.lost,
            stuck=findings.stuck,
            cleanup_failed=findings.cleanup_failed,
            unowned=findings.unowned,
            total=findings.total,
        )
        if findings.all():
            workflow.logger.warning(
                "reconcile: %d orphans, %d lost, %d stuck, %d cleanup_failed",
                len(findings.orphans),
                len(findings.lost),
                len(findings.stuck),
                len(findings.cleanup_failed),
            )
        always = workflow.patched(PATCH_RECOVER)
        if always:
            await self._recover(findings.unowned, report)
            await self._retry_teardowns(findings.cleanup_failed, scan, report)
        if not cleanup:
            return report
        await self._retry_teardowns(
            findings.orphans if always else [*findings.orphans, *findings.cleanup_failed],
            scan,
            report,
        )
        for finding in findings.lost:
            if finding.node_id is None:
                continue
            try:
                if await self._ask_workflow_to_check(finding):
                    report.cleaned.append(finding.cluster_name)
                    continue
                await self._record(finding.node_id, lifecycle.LOST)
                report.cleaned.append(finding.cluster_name)
            except ActivityError as error:
                report.cleanup_errors.append(f"{finding.cluster_name}: {describe(error)}")
        return report

    @staticmethod
    async def _recover(unowned: list[Finding], report: ReconcileReport) -> None:
        """Start a workflow for each live row nothing runs for (issue 10, path 2)."""
        for finding in unowned:
            if finding.node_id is None:
                continue
            try:
                recovered = await acts.RECOVER_NODE.run(
                    RecoverNodeInput(node_id=finding.node_id), options.RECOVER_NODE
                )
            except ActivityError as error:
                report.cleanup_errors.append(f"{finding.cluster_name}: {describe(error)}")
                continue
            if recovered.workflow_id:
                report.recovered.append(recovered.workflow_id)

    async def _retry_teardowns(
        self, found: list[Finding], scan: ReconcileScanResult, report: ReconcileReport
    ) -> None:
        for finding in found:
            try:
                await self._down(finding, scan)
                if finding.kind == "cleanup_failed" and finding.node_id:
                    await self._record(finding.node_id, lifecycle.CLEANUP_CONFIRMED)
                report.cleaned.append(finding.cluster_name)
            except ActivityError as error:
                report.cleanup_errors.append(f"{finding.cluster_name}: {describe(error)}")

    @staticmethod
    async def _ask_workflow_to_check(finding: Finding) -> bool:
        """A node whose workflow still runs records its own loss: ask it to look now.

        Writing the row behind a running workflow's back would leave the two disagreeing.
        False when there is no such workflow any more (then the reconciler records it).
        """
        if not finding.workflow_id:
            return False
        try:
            await workflow.get_external_workflow_handle(finding.workflow_id).signal(
                NodeWorkflow.check_health
            )
        except FailureError:
            return False
        return True

    @staticmethod
    async def _down(finding: Finding, scan: ReconcileScanResult) -> None:
        mode = LaunchMode(finding.launch_mode) if finding.launch_mode else scan.default_mode
        await acts.DOWN_CLUSTER.run(
            DownClusterInput(
                cluster_name=finding.cluster_name,
                launch_mode=mode,
                timeout_s=scan.terminate_timeout_s,
                cancel_launches=True,
            ),
            options.down(
                terminate_timeout_s=scan.terminate_timeout_s,
                heartbeat_timeout_s=scan.heartbeat_timeout_s,
                retry_backoff_s=scan.retry_backoff_s,
                maximum_attempts=3,
            ),
        )

    @staticmethod
    async def _record(node_id: str, transition: lifecycle.Transition) -> None:
        await acts.RECORD_TRANSITION.run(
            TransitionInput(
                node_id=node_id,
                transition=transition,
                error=f"reconciler: {transition.target.value}",
            ),
            options.DATABASE,
        )
