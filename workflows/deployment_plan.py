"""What the deployment controller should do next, as pure functions of its state.

Kept apart from the workflow so the rules (what counts toward desired, when a rollout may
surge or retire, how long a replacement backs off) read in one place and are tested as plain
code. Nothing here has side effects or reads the clock: the workflow passes ``now`` in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from controlplane.backoff import exponential_backoff
from controlplane.lifecycle import NodeStatus
from workflows.models import (
    DeploymentPolicy,
    DeploymentState,
    ReplaceOrder,
    ReplicaRecord,
    RolloutView,
)

# Ended replicas kept in the table for the status query; older ones are dropped so the state a
# months-long deployment carries across continue-as-new stays small. cleanup_failed ones stay
# until their teardown is confirmed: they are the leak marker.
KEEP_ENDED = 10
CAPACITY_ERROR_MARKERS = ("ResourcesUnavailable", "capacity", "preempt")


@dataclass
class Plan:
    """One reconcile step: how many replicas to start, and which ones to retire."""

    start: int = 0
    retire: list[int] = field(default_factory=list)


def serving(state: DeploymentState) -> list[ReplicaRecord]:
    return [r for r in state.replicas if r.status is NodeStatus.RUNNING and not r.retiring]


def counting(state: DeploymentState) -> list[ReplicaRecord]:
    return [r for r in state.replicas if r.counts]


def backoff(policy: DeploymentPolicy, failures: int) -> timedelta:
    """Exponential from ``backoff_initial_s``, capped at ``backoff_max_s``."""
    return timedelta(
        seconds=exponential_backoff(
            failures, initial_s=policy.backoff_initial_s, cap_s=policy.backoff_max_s
        )
    )


def may_start(state: DeploymentState, now: datetime) -> bool:
    """No start while terminating, crash-looping (degraded) or backing off."""
    if state.terminating or state.degraded:
        return False
    return state.not_before is None or now >= state.not_before


def plan(state: DeploymentState, policy: DeploymentPolicy, now: datetime) -> Plan:
    """Starts and retirements that bring the table toward ``desired`` replicas of the target
    revision, within the rollout's surge and unavailability bounds."""
    step = Plan()
    if state.terminating:
        step.retire = [r.replica for r in state.replicas if not r.status.final and not r.retiring]
        return step
    live = counting(state)
    target = [r for r in live if r.revision == state.revision]
    others = [r for r in live if r.revision != state.revision]
    # Not serving and not wanted: retire at once (a rollback's never-ready replicas, an old
    # replica still launching when the update came).
    step.retire += [r.replica for r in others if r.status is not NodeStatus.RUNNING]
    others = [r for r in others if r.status is NodeStatus.RUNNING]
    if len(target) > state.desired:  # scale down: the newest, not-yet-serving ones first
        extra = sorted(target, key=lambda r: (r.status is NodeStatus.RUNNING, -r.replica))
        step.retire += [r.replica for r in extra[: len(target) - state.desired]]
        target = [r for r in target if r.replica not in step.retire]
    surge = state.rollout.max_surge if state.rollout and others else 0
    room = state.desired + surge - len(target) - len(others)
    missing = state.desired - len(target)
    if may_start(state, now):
        step.start = max(0, min(missing, room))
    ready = [r for r in target if r.status is NodeStatus.RUNNING]
    # Rolling: an old replica goes only once a new one is ready in its place, and never below
    # desired - max_unavailable serving.
    floor = state.desired - (state.rollout.max_unavailable if state.rollout else 0)
    serving_now = len(ready) + len(others)
    for old in sorted(others, key=lambda r: r.replica):
        if len(ready) + len(others) <= state.desired or serving_now - 1 < floor:
            break
        step.retire.append(old.replica)
        others = [r for r in others if r is not old]
        serving_now -= 1
    # Replicas whose repair failed: new-first retires them once enough others serve.
    exhausted = [
        r for r in state.replicas if r.repair_exhausted and not r.retiring and not r.status.final
    ]
    for broken in exhausted:
        if policy.replace_order is ReplaceOrder.OLD_FIRST or len(ready) >= state.desired:
            step.retire.append(broken.replica)
    return step


def rollout_view(state: DeploymentState) -> RolloutView | None:
    rollout = state.rollout
    if rollout is None:
        return None
    live = [r for r in state.replicas if not r.status.final and not r.retiring]
    new = [r for r in live if r.revision == rollout.revision]
    return RolloutView(
        revision=rollout.revision,
        phase=rollout.phase,
        old_replicas=len([r for r in live if r.revision != rollout.revision]),
        new_replicas=len(new),
        new_ready=len([r for r in new if r.status is NodeStatus.RUNNING]),
        replacing=sorted(
            r.replica
            for r in state.replicas
            if r.retiring and not r.status.final and r.revision != state.revision
        ),
        reason=rollout.reason,
    )


def rollout_finished(state: DeploymentState) -> bool:
    if state.rollout is None or state.rollout.phase != "rolling":
        return False
    live = [r for r in state.replicas if not r.status.final]
    old = [r for r in live if r.revision != state.revision]
    ready = [r for r in live if r.revision == state.revision and r.status is NodeStatus.RUNNING]
    return not old and len(ready) >= state.desired


def is_capacity_failure(record: ReplicaRecord) -> bool:
    if record.status is NodeStatus.LOST:
        return True
    error = record.error or ""
    return record.status is NodeStatus.FAILED and any(m in error for m in CAPACITY_ERROR_MARKERS)


def prune(records: list[ReplicaRecord]) -> list[ReplicaRecord]:
    """Drop all but the newest KEEP_ENDED ended replicas; never a cleanup_failed one."""
    ended = [r for r in records if r.status.final and r.status is not NodeStatus.CLEANUP_FAILED]
    drop = {r.replica for r in sorted(ended, key=lambda r: r.replica)[:-KEEP_ENDED]}
    if len(ended) <= KEEP_ENDED:
        drop = set()
    return [r for r in records if r.replica not in drop]
