"""The reconciler's rules on snapshots: what is an orphan, lost, stuck or cleanup_failed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.lifecycle import NodeStatus
from controlplane.reconcile import ClusterSeen, NodeSeen, Owner, compare, ours

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
OLD = NOW - timedelta(hours=2)
GRACE = timedelta(minutes=15)
US = "sa-0123456789abcdef"
OWNER = Owner(prefix="cpn", user=US)


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
        ClusterSeen(name="cpn-a-m-111111-0", status="UP", launched_at=OLD, user_hash=US),  # orphan
        ClusterSeen(name="someone-elses", status="UP", launched_at=OLD, user_hash=US),  # not ours
        ClusterSeen(
            name="cpn-b-m-222222-0", status="INIT", launched_at=NOW, user_hash=US
        ),  # too young
        ClusterSeen(
            name="cpn-c-m-333333-0", status="UP", launched_at=OLD, user_hash=US
        ),  # has a live row
        ClusterSeen(
            name="cpn-d-m-444444-0", status="UP", launched_at=OLD, user_hash=US
        ),  # row terminated
    ]
    nodes = [
        node("cpn-c-m-333333-0", NodeStatus.RUNNING),
        node("cpn-d-m-444444-0", NodeStatus.TERMINATED),
    ]
    findings = compare(clusters, nodes, now=NOW, orphan_grace=GRACE, owner=OWNER)
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
        owner=OWNER,
    )
    assert [f.cluster_name for f in findings.lost] == ["cpn-x-0"]


def test_stuck_only_past_the_deadline() -> None:
    nodes = [
        node("cpn-late-0", NodeStatus.LAUNCHING, deadline=NOW - timedelta(minutes=1)),
        node("cpn-ontime-0", NodeStatus.LAUNCHING, deadline=NOW + timedelta(minutes=1)),
        node("cpn-tlate-0", NodeStatus.TERMINATING, deadline=NOW - timedelta(seconds=5)),
        node("cpn-nodeadline-0", NodeStatus.LAUNCHING),
    ]
    clusters = [
        ClusterSeen(name=n.cluster_name, status="INIT", launched_at=OLD, user_hash=US)
        for n in nodes
    ]
    findings = compare(clusters, nodes, now=NOW, orphan_grace=GRACE, owner=OWNER)
    assert sorted(f.cluster_name for f in findings.stuck) == ["cpn-late-0", "cpn-tlate-0"]
    assert findings.orphans == []


def test_cleanup_failed_is_reported_whether_or_not_the_cluster_remains() -> None:
    nodes = [
        node("cpn-leak-0", NodeStatus.CLEANUP_FAILED),
        node("cpn-gone-0", NodeStatus.CLEANUP_FAILED),
    ]
    clusters = [ClusterSeen(name="cpn-leak-0", status="UP", launched_at=OLD, user_hash=US)]
    findings = compare(clusters, nodes, now=NOW, orphan_grace=GRACE, owner=OWNER)
    details = {f.cluster_name: f.detail for f in findings.cleanup_failed}
    assert details == {
        "cpn-leak-0": "cluster still listed",
        "cpn-gone-0": "cluster no longer listed",
    }
    assert findings.orphans == []  # a cleanup_failed row is not also an orphan


def test_orphans_are_only_our_users_clusters_with_our_prefix() -> None:
    """Seen on a shared server: another service account's ``cpn-`` cluster was downed."""
    clusters = [
        ClusterSeen(name="cpn-mine-0", status="UP", launched_at=OLD, user_hash=US),
        ClusterSeen(name="cpn-theirs-0", status="UP", launched_at=OLD, user_hash="sa-other"),
        ClusterSeen(name="cpn-unowned-0", status="UP", launched_at=OLD),  # no user_hash
        ClusterSeen(name="stg-staging-0", status="UP", launched_at=OLD, user_hash=US),
        ClusterSeen(name="cpnstg-x-0", status="UP", launched_at=OLD, user_hash=US),
    ]
    findings = compare(clusters, [], now=NOW, orphan_grace=GRACE, owner=OWNER)
    assert [f.cluster_name for f in findings.orphans] == ["cpn-mine-0"]

    staging = Owner(prefix="stg", user=US)
    findings = compare(clusters, [], now=NOW, orphan_grace=GRACE, owner=staging)
    assert [f.cluster_name for f in findings.orphans] == ["stg-staging-0"]


def test_an_unknown_own_user_makes_nothing_ours() -> None:
    cluster = ClusterSeen(name="cpn-mine-0", status="UP", launched_at=OLD, user_hash=US)
    assert ours(cluster, OWNER)
    assert not ours(cluster, Owner(prefix="cpn", user=None))
    assert not ours(cluster.model_copy(update={"user_hash": None}), Owner(prefix="cpn", user=None))
