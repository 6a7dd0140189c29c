"""Small helpers for tests that look at a deployment's replicas."""

from __future__ import annotations

from workflows.models import ReplicaView


def named(replica: ReplicaView) -> str:
    """The replica's cluster name, which its node reports once it has recorded intent."""
    assert replica.cluster_name is not None, replica
    return replica.cluster_name
