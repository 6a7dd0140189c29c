"""``NewNode.from_spec`` is what record_intent writes (issue 9: used, not a second recipe)."""

from __future__ import annotations

from controlplane.db.models import NewNode
from controlplane.lifecycle import LaunchMode
from controlplane.spec import NodeSpec

SPEC = NodeSpec(
    tenant="acme",
    model="NousResearch/Meta-Llama-3-8B-Instruct",
    provider="aws",
    region="us-east-1",
    gpu_type="A100",
    gpu_count=1,
)


def test_the_cluster_is_named_under_the_installations_prefix() -> None:
    node = NewNode.from_spec(
        SPEC, launch_mode=LaunchMode.CLI, workflow_id="node-1", cluster_name_prefix="stage"
    )

    assert node.cluster_name == SPEC.cluster_name_for("stage")
    assert node.cluster_name.startswith("stage-")
    assert node.cluster_name != SPEC.cluster_name
    assert node.spec == SPEC.model_dump(mode="json")
    assert (node.node_id, node.tenant, node.replica) == (SPEC.node_id, "acme", SPEC.replica)


def test_without_a_prefix_the_default_one_is_used() -> None:
    node = NewNode.from_spec(SPEC, launch_mode=LaunchMode.API, workflow_id="node-1")

    assert node.cluster_name == SPEC.cluster_name
    assert node.status_deadline_at is None
