"""A node's state machine, in one place: its statuses, their groups and its named transitions.

Everything that acts on a node's status (the workflows, the repository, the reconciler, the
schema's checks, the test fakes) reads these definitions instead of carrying its own lists.
Adding a status or a transition touches this module plus the code that acts on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

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


# --- status groups -------------------------------------------------------------------------------
# The node's workflow is done with it: nothing moves it on (but a confirmed late teardown).
FINAL_STATUSES = frozenset(
    {NodeStatus.TERMINATED, NodeStatus.FAILED, NodeStatus.LOST, NodeStatus.CLEANUP_FAILED}
)
# Not final: a workflow owns the node and may still move it.
LIVE_STATUSES = frozenset(NodeStatus) - FINAL_STATUSES
# Not yet serving: the launch is still to be sent, or under way.
STARTING_STATUSES = frozenset({NodeStatus.PENDING, NodeStatus.LAUNCHING})
# A node whose cluster is up and whose workflow serves it, whether or not its model answers.
SERVING_STATUSES = frozenset({NodeStatus.RUNNING, NodeStatus.UNHEALTHY})
# Statuses whose row carries a ``status_deadline_at``: stuck once it has passed.
DEADLINE_STATUSES = frozenset({NodeStatus.LAUNCHING, NodeStatus.TERMINATING})
# Rows the reconciler looks at: every live one, and the leak markers it retries.
RECONCILER_WATCHED_STATUSES = LIVE_STATUSES | {NodeStatus.CLEANUP_FAILED}
# Final, with the cluster downed and confirmed gone by this system (usage stops billing).
CONFIRMED_DOWN_STATUSES = frozenset({NodeStatus.TERMINATED, NodeStatus.FAILED})


# --- transitions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Transition:
    """A named status change: where it goes, the outbox event it writes, where it may start.

    A row already in ``target`` is not refused (a retried activity finds its change made, or a
    repeat with a new dedupe key, such as a relaunch, writes its event).
    """

    name: str
    target: NodeStatus
    event: EventType
    allowed_from: frozenset[NodeStatus]

    def allows(self, status: NodeStatus) -> bool:
        return status is self.target or status in self.allowed_from


def _transition(
    name: str, target: NodeStatus, event: EventType, allowed_from: Iterable[NodeStatus]
) -> Transition:
    return Transition(name, target, event, frozenset(allowed_from))


S = NodeStatus
# The launch was sent (again, on a relaunch after a transient failure).
LAUNCHING = _transition("launching", S.LAUNCHING, EventType.LAUNCHED, STARTING_STATUSES)
# SkyPilot is done, the cluster is UP and the model answers.
READY = _transition("ready", S.RUNNING, EventType.READY, {S.LAUNCHING})
# The model failed the probe threshold; and it answers again.
UNHEALTHY = _transition("unhealthy", S.UNHEALTHY, EventType.UNHEALTHY, {S.RUNNING})
HEALTHY = _transition("healthy", S.RUNNING, EventType.HEALTHY, {S.UNHEALTHY})
# The cluster vanished or was preempted (the node's workflow, or the reconciler).
LOST = _transition("lost", S.LOST, EventType.LOST, SERVING_STATUSES)
# A serving node's teardown starts (a repeat carries a new deadline).
TERMINATING = _transition(
    "terminating", S.TERMINATING, EventType.TERMINATING, SERVING_STATUSES | {S.TERMINATING}
)
# A terminate request stops a launch (which may have just recorded running).
TERMINATING_LAUNCH = _transition(
    "terminating_launch", S.TERMINATING, EventType.TERMINATING, STARTING_STATUSES | {S.RUNNING}
)
# SkyPilot confirmed the teardown.
TERMINATED = _transition("terminated", S.TERMINATED, EventType.TERMINATED, {S.TERMINATING})
# Terminated while still pending, before this run launched anything (old runs only).
TERMINATED_BEFORE_LAUNCH = _transition(
    "terminated_before_launch", S.TERMINATED, EventType.TERMINATED, {S.PENDING}
)
# TerminateClusterWorkflow downed a live node's cluster whose workflow had ended.
TERMINATED_UNOWNED = _transition(
    "terminated_unowned", S.TERMINATED, EventType.TERMINATED, LIVE_STATUSES
)
# A teardown never confirmed is confirmed now (the reconciler, TerminateClusterWorkflow).
CLEANUP_CONFIRMED = _transition(
    "cleanup_confirmed", S.TERMINATED, EventType.TERMINATED, {S.CLEANUP_FAILED}
)
# The launch failed (or was cancelled) and its cluster was downed.
FAILED = _transition("failed", S.FAILED, EventType.FAILED, STARTING_STATUSES | {S.RUNNING})
# A down SkyPilot did not confirm: the visible leak marker.
CLEANUP_FAILED = _transition(
    "cleanup_failed",
    S.CLEANUP_FAILED,
    EventType.CLEANUP_FAILED,
    LIVE_STATUSES | {S.LOST},
)
del S

TRANSITIONS: Mapping[str, Transition] = MappingProxyType(
    {
        t.name: t
        for t in (
            LAUNCHING,
            READY,
            UNHEALTHY,
            HEALTHY,
            LOST,
            TERMINATING,
            TERMINATING_LAUNCH,
            TERMINATED,
            TERMINATED_BEFORE_LAUNCH,
            TERMINATED_UNOWNED,
            CLEANUP_CONFIRMED,
            FAILED,
            CLEANUP_FAILED,
        )
    }
)


def transition_named(name: str) -> Transition:
    """The transition called ``name``; ValueError for a name this version does not know."""
    try:
        return TRANSITIONS[name]
    except KeyError:
        raise ValueError(f"unknown transition {name!r}") from None


def transition_matching(target: str, event: str, allowed_from: Iterable[str]) -> Transition:
    """The named transition an older caller meant by its three parallel arguments.

    Before transitions had names, callers sent the target status, the event and the statuses
    it may start from. Each combination is the transition with that target and event whose
    allowed-from is the same set or, from versions before ``unhealthy`` existed, the smallest
    set containing it. ValueError when there is none.
    """
    wanted = NodeStatus(target), EventType(event)
    given = frozenset(NodeStatus(s) for s in allowed_from)
    fits = [
        t for t in TRANSITIONS.values() if (t.target, t.event) == wanted and given <= t.allowed_from
    ]
    if not fits:
        raise ValueError(
            f"no transition to {wanted[0].value} with {wanted[1].value} "
            f"from {sorted(s.value for s in given)}"
        )
    return min(fits, key=lambda t: len(t.allowed_from))
