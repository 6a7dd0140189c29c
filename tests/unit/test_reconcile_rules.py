"""The reconciler's rules on snapshots: what is an orphan, lost, stuck or cleanup_failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.lifecycle import NodeStatus
from controlplane.reconcile import ClusterSeen, NodeSeen, compare

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(hours=2)
GRACE = timedelta(minutes=15)


def node(cluster: str, status: NodeStatus, deadline: datetime | None = None) -> NodeSeen:
    return NodeSeen(
        node_id=f"id-{cluster}",
        cluster_name=cluster,
        status=status,
        launch_mode="api",
        status_deadline_at=deadline,
    )


def test_orphan_needs_our_prefix_no_live_row_and_age() -> None:
    clusters = [
        ClusterSeen(name="cpn-a-m-111111-0", status="UP", launched_at=OLD),  # orphan
        ClusterSeen(name="someone-elses", status="UP", launched_at=OLD),  # not ours
        ClusterSeen(name="cpn-b-m-222222-0", status="INIT", launched_at=NOW),  # too young
        ClusterSeen(name="cpn-c-m-333333-0", status="UP", launched_at=OLD),  # has a live row
        ClusterSeen(name="cpn-d-m-444444-0", status="UP", launched_at=OLD),  # row terminated
    ]
    nodes = [
        node("cpn-c-m-333333-0", NodeStatus.RUNNING),
        node("cpn-d-m-444444-0", NodeStatus.TERMINATED),
    ]
    findings = compare(clusters, nodes, now=NOW, orphan_grace=GRACE)
    assert [f.cluster_name for f in findings.orphans] == ["cpn-a-m-111111-0", "cpn-d-m-444444-0"]
    assert findings.orphans[0].node_id is None
    assert findings.orphans[1].node_id == "id-cpn-d-m-444444-0"
    assert "terminated" in findings.orphans[1].detail
    assert findings.lost == findings.stuck == findings.cleanup_failed == []


def test_lost_is_a_running_row_without_a_cluster() -> None:
    findings = compare(
        [],
        [node("cpn-x-0", NodeStatus.RUNNING), node("cpn-y-0", NodeStatus.TERMINATED)],
        now=NOW,
        orphan_grace=GRACE,
    )
    assert [f.cluster_name for f in findings.lost] == ["cpn-x-0"]


def test_stuck_only_past_the_deadline() -> None:
    nodes = [
        node("cpn-late-0", NodeStatus.LAUNCHING, deadline=NOW - timedelta(minutes=1)),
        node("cpn-ontime-0", NodeStatus.LAUNCHING, deadline=NOW + timedelta(minutes=1)),
        node("cpn-tlate-0", NodeStatus.TERMINATING, deadline=NOW - timedelta(seconds=5)),
        node("cpn-nodeadline-0", NodeStatus.LAUNCHING),
    ]
    clusters = [ClusterSeen(name=n.cluster_name, status="INIT", launched_at=OLD) for n in nodes]
    findings = compare(clusters, nodes, now=NOW, orphan_grace=GRACE)
    assert sorted(f.cluster_name for f in findings.stuck) == ["cpn-late-0", "cpn-tlate-0"]
    assert findings.orphans == []


def test_cleanup_failed_is_reported_whether_or_not_the_cluster_remains() -> None:
    nodes = [
        node("cpn-leak-0", NodeStatus.CLEANUP_FAILED),
        node("cpn-gone-0", NodeStatus.CLEANUP_FAILED),
    ]
    clusters = [ClusterSeen(name="cpn-leak-0", status="UP", launched_at=OLD)]
    findings = compare(clusters, nodes, now=NOW, orphan_grace=GRACE)
    details = {f.cluster_name: f.detail for f in findings.cleanup_failed}
    assert details == {
        "cpn-leak-0": "cluster still listed",
        "cpn-gone-0": "cluster no longer listed",
    }
    assert findings.orphans == []  # a cleanup_failed row is not also an orphan
