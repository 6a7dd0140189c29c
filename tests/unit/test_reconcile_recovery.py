"""Issue 10 in the reconciler's rules: live rows nothing runs for, and bounded results."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.contrib.pydantic import pydantic_data_converter

from controlplane.lifecycle import NodeStatus
from controlplane.reconcile import MAX_FINDINGS_PER_KIND, ClusterSeen, NodeSeen, Owner, compare
from workflows.models import ReconcileScanResult

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(hours=2)
GRACE = timedelta(minutes=15)
US = "sa-0123456789abcdef"
OWNER = Owner(prefix="cpn", user=US)
TEMPORAL_PAYLOAD_LIMIT = 2 * 1024 * 1024


def owned_row(node_id: str, cluster: str, status: NodeStatus, **fields: Any) -> NodeSeen:
    """``node_id``'s row (API mode) on ``cluster``, owned by the workflow ``node-<cluster>``."""
    return NodeSeen(
        node_id=node_id,
        cluster_name=cluster,
        status=status,
        launch_mode="api",
        workflow_id=f"node-{cluster}",
        **fields,
    )


def test_a_live_row_whose_workflow_is_not_running_is_found() -> None:
    clusters = [ClusterSeen(name="cpn-a-m-111111-0", status="UP", launched_at=OLD, user_hash=US)]
    nodes = [
        owned_row("dead", "cpn-a-m-111111-0", NodeStatus.RUNNING, workflow_running=False),
        owned_row("alive", "cpn-b-m-222222-0", NodeStatus.LAUNCHING),
    ]
    findings = compare(clusters, nodes, now=NOW, orphan_grace=GRACE, owner=OWNER)
    assert [(f.node_id, f.workflow_id) for f in findings.unowned] == [
        ("dead", "node-cpn-a-m-111111-0")
    ]
    assert findings.orphans == []  # a live row's cluster is never an orphan


def test_a_large_incident_is_bounded_below_the_payload_limit() -> None:
    count = 20_000  # clusters left behind by a large incident
    clusters = [
        ClusterSeen(name=f"cpn-t-m-{i:06d}-0", status="UP", launched_at=OLD, user_hash=US)
        for i in range(count)
    ]
    nodes = [
        NodeSeen(
            node_id=f"n{i}",
            cluster_name=f"cpn-u-m-{i:06d}-0",
            status=NodeStatus.CLEANUP_FAILED,
            launch_mode="api",
        )
        for i in range(count)
    ]
    findings = compare(clusters, nodes, now=NOW, orphan_grace=GRACE, owner=OWNER)
    unbounded = ReconcileScanResult(
        findings=findings,
        clusters_seen=count,
        nodes_seen=count,
        cleanup_enabled=True,
        default_mode="api",
        terminate_timeout_s=300,
        heartbeat_timeout_s=30,
        retry_backoff_s=5,
    )
    assert len(pydantic_data_converter.payload_converter.to_payloads([unbounded])[0].data) > (
        TEMPORAL_PAYLOAD_LIMIT
    ), "the unbounded result would not fit: the case the bound exists for"
    bounded = unbounded.model_copy(update={"findings": findings.bounded(MAX_FINDINGS_PER_KIND)})
    size = len(pydantic_data_converter.payload_converter.to_payloads([bounded])[0].data)
    assert size < TEMPORAL_PAYLOAD_LIMIT / 10
    assert len(bounded.findings.orphans) == MAX_FINDINGS_PER_KIND
    assert bounded.findings.total == {
        "orphans": count,
        "lost": 0,
        "stuck": 0,
        "cleanup_failed": count,
        "unowned": 0,
    }
