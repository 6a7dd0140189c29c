"""The state machine's table (controlplane/lifecycle.py) and the transition activity's input."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError
from temporalio.contrib.pydantic import pydantic_data_converter

from controlplane import lifecycle
from controlplane.lifecycle import TRANSITIONS, EventType, NodeStatus, transition_matching
from workflows.models import TransitionInput

S = NodeStatus

# Each status and the groups it is in.
GROUPS: dict[NodeStatus, set[str]] = {
    S.PENDING: {"live", "starting", "watched"},
    S.LAUNCHING: {"live", "starting", "deadline", "watched"},
    S.RUNNING: {"live", "serving", "watched"},
    S.UNHEALTHY: {"live", "serving", "watched"},
    S.TERMINATING: {"live", "deadline", "watched"},
    S.TERMINATED: {"final", "confirmed_down"},
    S.FAILED: {"final", "confirmed_down"},
    S.LOST: {"final"},
    S.CLEANUP_FAILED: {"final", "watched"},
}
GROUP_SETS = {
    "final": lifecycle.FINAL_STATUSES,
    "live": lifecycle.LIVE_STATUSES,
    "starting": lifecycle.STARTING_STATUSES,
    "serving": lifecycle.SERVING_STATUSES,
    "deadline": lifecycle.DEADLINE_STATUSES,
    "watched": lifecycle.RECONCILER_WATCHED_STATUSES,
    "confirmed_down": lifecycle.CONFIRMED_DOWN_STATUSES,
}

# What the workflows did before transitions had names: (target, event, allowed-from) -> name.
EXPECTED: dict[str, tuple[NodeStatus, EventType, set[NodeStatus]]] = {
    "launching": (S.LAUNCHING, EventType.LAUNCHED, {S.PENDING, S.LAUNCHING}),
    "ready": (S.RUNNING, EventType.READY, {S.LAUNCHING}),
    "unhealthy": (S.UNHEALTHY, EventType.UNHEALTHY, {S.RUNNING}),
    "healthy": (S.RUNNING, EventType.HEALTHY, {S.UNHEALTHY}),
    "lost": (S.LOST, EventType.LOST, {S.RUNNING, S.UNHEALTHY}),
    "terminating": (
        S.TERMINATING,
        EventType.TERMINATING,
        {S.RUNNING, S.UNHEALTHY, S.TERMINATING},
    ),
    "terminating_launch": (
        S.TERMINATING,
        EventType.TERMINATING,
        {S.PENDING, S.LAUNCHING, S.RUNNING},
    ),
    "terminated": (S.TERMINATED, EventType.TERMINATED, {S.TERMINATING}),
    "terminated_before_launch": (S.TERMINATED, EventType.TERMINATED, {S.PENDING}),
    "terminated_unowned": (
        S.TERMINATED,
        EventType.TERMINATED,
        {S.PENDING, S.LAUNCHING, S.RUNNING, S.UNHEALTHY, S.TERMINATING},
    ),
    "cleanup_confirmed": (S.TERMINATED, EventType.TERMINATED, {S.CLEANUP_FAILED}),
    "failed": (S.FAILED, EventType.FAILED, {S.PENDING, S.LAUNCHING, S.RUNNING}),
    "cleanup_failed": (
        S.CLEANUP_FAILED,
        EventType.CLEANUP_FAILED,
        {S.PENDING, S.LAUNCHING, S.RUNNING, S.UNHEALTHY, S.TERMINATING, S.LOST},
    ),
}

# Every (to_status, event_type, allowed_from) that a released NodeWorkflow, ReconcileWorkflow or
# TerminateClusterWorkflow sent (from `git log` of workflows/), and the transition it means now.
OLD_SHAPES = [
    ("launching", "node.launched", ["pending", "launching"], "launching"),
    ("running", "node.ready", ["launching"], "ready"),
    ("unhealthy", "node.unhealthy", ["running"], "unhealthy"),
    ("running", "node.healthy", ["unhealthy"], "healthy"),
    ("lost", "node.lost", ["running", "unhealthy"], "lost"),
    ("lost", "node.lost", ["running"], "lost"),  # before unhealthy existed
    ("terminating", "node.terminating", ["running", "unhealthy", "terminating"], "terminating"),
    ("terminating", "node.terminating", ["running", "terminating"], "terminating"),
    ("terminating", "node.terminating", ["pending", "launching", "running"], "terminating_launch"),
    ("terminated", "node.terminated", ["terminating"], "terminated"),
    ("terminated", "node.terminated", ["pending"], "terminated_before_launch"),
    ("terminated", "node.terminated", ["cleanup_failed"], "cleanup_confirmed"),
    (
        "terminated",
        "node.terminated",
        ["pending", "launching", "running", "unhealthy", "terminating"],
        "terminated_unowned",
    ),
    (
        "terminated",
        "node.terminated",
        ["pending", "launching", "running", "terminating"],
        "terminated_unowned",
    ),
    ("failed", "node.failed", ["pending", "launching", "running"], "failed"),
    (
        "cleanup_failed",
        "node.cleanup_failed",
        ["pending", "launching", "running", "unhealthy", "terminating", "lost"],
        "cleanup_failed",
    ),
    (
        "cleanup_failed",
        "node.cleanup_failed",
        ["pending", "launching", "running", "terminating", "lost"],
        "cleanup_failed",
    ),
]


@pytest.mark.parametrize("status", list(NodeStatus))
def test_each_status_is_in_its_groups(status: NodeStatus) -> None:
    assert {name for name, group in GROUP_SETS.items() if status in group} == GROUPS[status]
    assert status.final is (status in lifecycle.FINAL_STATUSES)


def test_groups_are_consistent() -> None:
    everything = frozenset(NodeStatus)
    assert everything == lifecycle.FINAL_STATUSES | lifecycle.LIVE_STATUSES
    assert not lifecycle.FINAL_STATUSES & lifecycle.LIVE_STATUSES
    for live_only in ("starting", "serving", "deadline"):
        assert GROUP_SETS[live_only] <= lifecycle.LIVE_STATUSES
    assert not lifecycle.STARTING_STATUSES & lifecycle.SERVING_STATUSES
    assert lifecycle.LIVE_STATUSES <= lifecycle.RECONCILER_WATCHED_STATUSES
    assert lifecycle.CONFIRMED_DOWN_STATUSES <= lifecycle.FINAL_STATUSES


def test_every_transition_has_its_target_event_and_allowed_from() -> None:
    got = {name: (t.target, t.event, set(t.allowed_from)) for name, t in TRANSITIONS.items()}
    assert got == EXPECTED
    assert all(t.name == name for name, t in TRANSITIONS.items())
    assert all(getattr(lifecycle, t.name.upper()) is t for t in TRANSITIONS.values())
    assert {t.event for t in TRANSITIONS.values()} == set(EventType)


def test_every_status_is_reachable_and_every_live_one_can_end() -> None:
    reached, frontier = {S.PENDING}, [S.PENDING]
    while frontier:
        status = frontier.pop()
        for t in TRANSITIONS.values():
            if status in t.allowed_from and t.target not in reached:
                reached.add(t.target)
                frontier.append(t.target)
    assert reached == set(NodeStatus)
    for status in lifecycle.LIVE_STATUSES:
        assert any(status in t.allowed_from and t.target.final for t in TRANSITIONS.values())
    # Nothing leaves a final status but the confirmation of a teardown never confirmed.
    leaving_final = {
        t.name for t in TRANSITIONS.values() if t.allowed_from & lifecycle.FINAL_STATUSES
    }
    assert leaving_final == {"cleanup_confirmed", "cleanup_failed"}  # lost -> cleanup_failed


@pytest.mark.parametrize("transition", list(TRANSITIONS.values()), ids=list(TRANSITIONS))
def test_allows_its_allowed_from_and_its_target_only(transition: lifecycle.Transition) -> None:
    allowed = {s for s in NodeStatus if transition.allows(s)}
    assert allowed == transition.allowed_from | {transition.target}


@pytest.mark.parametrize(("target", "event", "allowed_from", "name"), OLD_SHAPES)
def test_an_old_shaped_payload_is_the_named_transition(
    target: str, event: str, allowed_from: list[str], name: str
) -> None:
    assert transition_matching(target, event, allowed_from) is TRANSITIONS[name]
    old = {
        "node_id": "n1",
        "to_status": target,
        "event_type": event,
        "allowed_from": allowed_from,
        "error": "why",
        "dedupe_suffix": "2",
    }
    payload = pydantic_data_converter.payload_converter.to_payloads([old])
    [parsed] = pydantic_data_converter.payload_converter.from_payloads(payload, [TransitionInput])
    assert parsed == TransitionInput(
        node_id="n1", transition=TRANSITIONS[name], error="why", dedupe_suffix="2"
    )


def test_an_old_shape_no_transition_fits_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"no transition to running with node\.ready"):
        TransitionInput.model_validate(
            {
                "node_id": "n1",
                "to_status": "running",
                "event_type": "node.ready",
                "allowed_from": ["pending"],
            }
        )


def test_a_transition_travels_by_name() -> None:
    sent = TransitionInput(node_id="n1", transition=lifecycle.READY, endpoint="http://m:8000")
    [payload] = pydantic_data_converter.payload_converter.to_payloads([sent])
    assert json.loads(payload.data) == {
        "node_id": "n1",
        "transition": "ready",
        "request_id": None,
        "endpoint": "http://m:8000",
        "error": None,
        "deadline_s": None,
        "dedupe_suffix": None,
        "location": None,
    }
    [back] = pydantic_data_converter.payload_converter.from_payloads([payload], [TransitionInput])
    assert back == sent
    assert back.transition is lifecycle.READY
    with pytest.raises(ValidationError, match="unknown transition 'teleported'"):
        TransitionInput.model_validate({"node_id": "n1", "transition": "teleported"})
