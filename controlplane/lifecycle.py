"""The vocabulary of a node's life: launch modes, statuses and the events other services read."""

from __future__ import annotations

from enum import StrEnum

# A running node whose cluster looks gone or stopped is confirmed with a refreshed status, then
# looked at again after this wait (NODE_LOST_SECOND_LOOK's default, in seconds), before `lost`.
LOST_SECOND_LOOK_DEFAULT_S = 3.0


class LaunchMode(StrEnum):
    """How a node talks to SkyPilot; chosen at creation and recorded on the node."""

    API = "api"
    CLI = "cli"


class NodeStatus(StrEnum):
    PENDING = "pending"
    LAUNCHING = "launching"
    RUNNING = "running"
    UNHEALTHY = "unhealthy"  # running, but its model failed MODEL_PROBE_THRESHOLD probes in a row
    TERMINATING = "terminating"
    TERMINATED = "terminated"
    FAILED = "failed"  # the launch failed and was cleaned up
    LOST = "lost"  # the cluster vanished or was preempted while running
    CLEANUP_FAILED = "cleanup_failed"  # teardown not confirmed: a visible leak marker

    @property
    def final(self) -> bool:
        return self in FINAL_STATUSES


FINAL_STATUSES = frozenset(
    {NodeStatus.TERMINATED, NodeStatus.FAILED, NodeStatus.LOST, NodeStatus.CLEANUP_FAILED}
)


# A node whose cluster is up and whose workflow serves it, whether or not its model answers.
SERVING_STATUSES = frozenset({NodeStatus.RUNNING, NodeStatus.UNHEALTHY})


class EventType(StrEnum):
    """The outbox's event types: the guide's three, plus the teardown ones."""

    LAUNCHED = "node.launched"
    READY = "node.ready"
    FAILED = "node.failed"
    TERMINATING = "node.terminating"
    TERMINATED = "node.terminated"
    LOST = "node.lost"
    CLEANUP_FAILED = "node.cleanup_failed"
    UNHEALTHY = "node.unhealthy"  # running -> unhealthy: the model stopped answering
    HEALTHY = "node.healthy"  # unhealthy -> running: it answers again
