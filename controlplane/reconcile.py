"""Compare what SkyPilot runs with what the database says, and name every disagreement.

Pure functions over two snapshots, so the rules are tested without a cloud:
- orphan: a cluster of ours (our SkyPilot user AND this installation's name prefix), with no
  live node row, older than a grace period. Another user's cluster is never ours, whatever its
  name, and neither is another installation's on the same user (CLUSTER_NAME_PREFIX);
- lost: the row says running, but SkyPilot lists no such cluster;
- stuck: a row in launching or terminating past its deadline;
- cleanup_failed: a row whose teardown was never confirmed (its cluster may still cost money);
- unowned: a live row whose workflow is not running (nothing will ever move it on).

Each list is bounded (``bounded``) so a large incident never exceeds Temporal's 2 MB payload
limit; the rest is found again by the next run, after these are dealt with.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from pydantic import BaseModel

from controlplane.cluster_names import carries_prefix
from controlplane.lifecycle import (
    DEADLINE_STATUSES,
    LIVE_STATUSES,
    RECONCILER_WATCHED_STATUSES,
    SERVING_STATUSES,
    NodeStatus,
)


class ClusterSeen(BaseModel):
    name: str
    status: str
    launched_at: datetime | None = None
    user_hash: str | None = None  # the SkyPilot user that owns it (cluster record's user_hash)


class Owner(BaseModel):
    """Who "we" are on a SkyPilot server that others may share.

    ``user`` is our SkyPilot user id (the service account's, as the server authenticates it, or
    SKYPILOT_USER_ID without auth); None when it could not be established: then nothing is ours.
    """

    prefix: str
    user: str | None


class NodeSeen(BaseModel):
    node_id: str
    cluster_name: str
    status: NodeStatus
    launch_mode: str
    workflow_id: str | None = None
    status_deadline_at: datetime | None = None
    workflow_running: bool = True  # False: the row's owner workflow is not running


class Finding(BaseModel):
    kind: str  # orphan | lost | stuck | cleanup_failed | unowned
    cluster_name: str
    node_id: str | None = None
    launch_mode: str | None = None
    workflow_id: str | None = None
    detail: str

    @classmethod
    def of_row(cls, kind: str, row: NodeSeen, detail: str, *, workflow: bool = False) -> Finding:
        """A finding about ``row`` (its cluster, node and mode), naming its workflow if
        ``workflow``."""
        return cls(
            kind=kind,
            cluster_name=row.cluster_name,
            node_id=row.node_id,
            launch_mode=row.launch_mode,
            workflow_id=row.workflow_id if workflow else None,
            detail=detail,
        )


class Findings(BaseModel):
    orphans: list[Finding] = []
    lost: list[Finding] = []
    stuck: list[Finding] = []
    cleanup_failed: list[Finding] = []
    unowned: list[Finding] = []
    total: dict[str, int] = {}  # per kind, before bounding

    def all(self) -> list[Finding]:
        return [*self.orphans, *self.lost, *self.stuck, *self.cleanup_failed, *self.unowned]

    def bounded(self, limit: int) -> Findings:
        """At most ``limit`` findings of each kind (a Finding is well under 2 KB), with totals."""
        kinds = ("orphans", "lost", "stuck", "cleanup_failed", "unowned")
        lists = {kind: list(getattr(self, kind)) for kind in kinds}
        return Findings(
            **{kind: found[:limit] for kind, found in lists.items()},
            total={kind: len(found) for kind, found in lists.items()},
        )


MAX_FINDINGS_PER_KIND = 200


def ours(cluster: ClusterSeen, owner: Owner) -> bool:
    """Our user's, with our prefix: the only clusters the reconciler may call orphans."""
    return (
        owner.user is not None
        and cluster.user_hash == owner.user
        and carries_prefix(cluster.name, owner.prefix)
    )


def compare(
    clusters: Iterable[ClusterSeen],
    nodes: Iterable[NodeSeen],
    *,
    now: datetime,
    orphan_grace: timedelta,
    owner: Owner,
) -> Findings:
    cluster_by_name = {c.name: c for c in clusters}
    rows_by_cluster: dict[str, list[NodeSeen]] = {}
    for node in nodes:
        rows_by_cluster.setdefault(node.cluster_name, []).append(node)
    findings = Findings()

    for name, cluster in sorted(cluster_by_name.items()):
        if not ours(cluster, owner):
            continue
        rows = rows_by_cluster.get(name, [])
        if any(r.status in RECONCILER_WATCHED_STATUSES for r in rows):
            continue
        age = now - cluster.launched_at if cluster.launched_at else None
        if age is not None and age < orphan_grace:
            continue  # a launch may be recording its row right now
        findings.orphans.append(
            Finding(
                kind="orphan",
                cluster_name=name,
                node_id=rows[0].node_id if rows else None,
                launch_mode=rows[0].launch_mode if rows else None,
                detail=(
                    f"cluster {cluster.status} with "
                    + (f"node row {rows[0].status.value}" if rows else "no node row")
                ),
            )
        )

    for name, rows in sorted(rows_by_cluster.items()):
        for row in rows:
            if row.status is NodeStatus.CLEANUP_FAILED:
                present = name in cluster_by_name
                detail = "cluster still listed" if present else "cluster no longer listed"
                findings.cleanup_failed.append(Finding.of_row("cleanup_failed", row, detail))
            elif row.status in SERVING_STATUSES and name not in cluster_by_name:
                detail = "row says running; SkyPilot lists none"
                findings.lost.append(Finding.of_row("lost", row, detail, workflow=True))
            elif row.status in LIVE_STATUSES and not row.workflow_running:
                detail = f"row {row.status.value}, its workflow is not running"
                findings.unowned.append(Finding.of_row("unowned", row, detail, workflow=True))
            elif (
                row.status in DEADLINE_STATUSES
                and row.status_deadline_at is not None
                and row.status_deadline_at < now
            ):
                late = now - row.status_deadline_at
                detail = f"{row.status.value} {int(late.total_seconds())}s past its deadline"
                findings.stuck.append(Finding.of_row("stuck", row, detail))
    return findings
