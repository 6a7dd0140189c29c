"""The fleet-wide cluster sweep's comparison: which serving nodes' clusters look changed.

One cluster list (one ``POST /status``) answers for every node; only the nodes whose cluster is
absent, STOPPED or INIT there are suspects, and each suspect is confirmed with a fresh status of
its one cluster before its workflow is told.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from controlplane.skypilot.models import ClusterStatus

# What a serving node's cluster must not be. INIT on a node that was UP means SkyPilot is
# restarting or repairing it; absent (TERMINATED) or STOPPED means it is gone.
CHANGED_STATUSES = frozenset({ClusterStatus.TERMINATED, ClusterStatus.STOPPED, ClusterStatus.INIT})


@dataclass(frozen=True)
class Serving:
    node_id: str
    cluster_name: str
    workflow_id: str
    launch_mode: str


def suspects(
    serving: Iterable[Serving], listed: Mapping[str, ClusterStatus]
) -> list[tuple[Serving, ClusterStatus]]:
    """The nodes whose cluster the list shows changed (absent counts as TERMINATED)."""
    found = []
    for node in serving:
        status = listed.get(node.cluster_name, ClusterStatus.TERMINATED)
        if status in CHANGED_STATUSES:
            found.append((node, status))
    return found
