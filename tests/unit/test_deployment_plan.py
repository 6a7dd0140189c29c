"""The controller's rules as plain functions: what counts toward desired, surge and
unavailability during a rollout, backoff, pruning of the replica table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from controlplane.lifecycle import NodeStatus
from workflows import deployment_plan as rules
from workflows.models import (
    DeploymentPolicy,
    DeploymentSpec,
    DeploymentState,
    ReplaceOrder,
    ReplicaRecord,
    RolloutState,
)

NOW = datetime(2026, 12, 1, tzinfo=UTC)
SPEC = DeploymentSpec(
    tenant="acme", model="org/m", provider="aws", region="us-east-1", gpu_type="A100", gpu_count=1
)
POLICY = DeploymentPolicy()


def replica(n: int, status: NodeStatus, revision: int = 0, **extra: object) -> ReplicaRecord:
    return ReplicaRecord.model_validate(
        {
            "replica": n,
            "node_id": f"n{n}",
            "cluster_name": f"c{n}",
            "workflow_id": f"node-c{n}",
            "status": status,
            "revision": revision,
            **extra,
        }
    )


def state(desired: int, *replicas: ReplicaRecord, **extra: object) -> DeploymentState:
    return DeploymentState.model_validate(
        {
            "spec": SPEC,
            "desired": desired,
            "generation": "g",
            "replicas": list(replicas),
            "next_replica": len(replicas),
            **extra,
        }
    )


def test_terminating_and_retiring_replicas_do_not_count() -> None:
    st = state(
        3,
        replica(0, NodeStatus.RUNNING),
        replica(1, NodeStatus.TERMINATING),
        replica(2, NodeStatus.RUNNING, retiring=True),
        replica(3, NodeStatus.UNHEALTHY),
    )
    assert [r.replica for r in rules.counting(st)] == [0, 3]
    assert rules.plan(st, POLICY, NOW).start == 1


def test_scale_down_retires_the_newest_not_yet_serving_first() -> None:
    st = state(
        1,
        replica(0, NodeStatus.RUNNING),
        replica(1, NodeStatus.RUNNING),
        replica(2, NodeStatus.LAUNCHING),
    )
    assert rules.plan(st, POLICY, NOW).retire == [2, 1]


def test_no_start_while_terminating_degraded_or_backing_off() -> None:
    lost = replica(0, NodeStatus.LOST)
    assert rules.plan(state(1, lost, terminating=True), POLICY, NOW).start == 0
    assert rules.plan(state(1, lost, degraded=True), POLICY, NOW).start == 0
    later = NOW + timedelta(seconds=5)
    assert rules.plan(state(1, lost, not_before=later), POLICY, NOW).start == 0
    assert rules.plan(state(1, lost, not_before=later), POLICY, later).start == 1


def test_rollout_surges_then_retires_old_only_once_new_ones_are_ready() -> None:
    rollout = RolloutState(
        revision=1,
        previous_revision=0,
        previous_spec=SPEC,
        max_surge=1,
        max_unavailable=0,
        deadline_at=NOW + timedelta(hours=1),
    )
    old = [replica(0, NodeStatus.RUNNING), replica(1, NodeStatus.RUNNING)]
    st = state(2, *old, revision=1, rollout=rollout)
    step = rules.plan(st, POLICY, NOW)
    assert (step.start, step.retire) == (1, [])  # one surge replica, nothing retired yet
    launching = state(2, *old, replica(2, NodeStatus.LAUNCHING, 1), revision=1, rollout=rollout)
    assert rules.plan(launching, POLICY, NOW).retire == []  # gate: not ready yet
    ready = state(2, *old, replica(2, NodeStatus.RUNNING, 1), revision=1, rollout=rollout)
    step = rules.plan(ready, POLICY, NOW)
    assert (step.start, step.retire) == (0, [0])
    view = rules.rollout_view(ready)
    assert view is not None
    assert (view.old_replicas, view.new_replicas, view.new_ready) == (2, 1, 1)


def test_repair_exhausted_replica_new_first_or_old_first() -> None:
    broken = replica(0, NodeStatus.UNHEALTHY, repair_exhausted=True)
    healthy = replica(1, NodeStatus.RUNNING)
    st = state(2, broken, healthy)
    step = rules.plan(st, POLICY, NOW)
    assert (step.start, step.retire) == (1, [])  # new first: keep it until the new one serves
    old_first = POLICY.model_copy(update={"replace_order": ReplaceOrder.OLD_FIRST})
    assert rules.plan(st, old_first, NOW).retire == [0]
    served = state(2, broken, healthy, replica(2, NodeStatus.RUNNING))
    assert rules.plan(served, POLICY, NOW).retire == [0]


def test_backoff_doubles_and_is_capped() -> None:
    policy = DeploymentPolicy(backoff_initial_s=10, backoff_max_s=35)
    assert [rules.backoff(policy, n).total_seconds() for n in range(5)] == [0, 10, 20, 35, 35]


def test_prune_keeps_recent_ended_and_every_cleanup_failed() -> None:
    records = [replica(n, NodeStatus.TERMINATED) for n in range(30)]
    records.append(replica(30, NodeStatus.CLEANUP_FAILED))
    records.insert(0, replica(99, NodeStatus.RUNNING))
    kept = {r.replica for r in rules.prune(records)}
    assert kept == {99, 30, *range(30 - rules.KEEP_ENDED, 30)}


def test_capacity_failures_are_preemptions_and_no_capacity_errors() -> None:
    assert rules.is_capacity_failure(replica(0, NodeStatus.LOST))
    assert rules.is_capacity_failure(
        replica(0, NodeStatus.FAILED, error="ResourcesUnavailableError: no A100 in us-east-1")
    )
    assert not rules.is_capacity_failure(replica(0, NodeStatus.FAILED, error="model crashed"))
