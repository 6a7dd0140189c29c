"""record_intent on Postgres: an attach only to the very node asked for, names that stay put.

A second record_intent of a node id is accepted only when the row holds the same spec; a
cluster name already taken by another node is a permanent error (not a retry loop) and nothing
is written; a node recorded under the old naming keeps its name; new names carry the
installation's CLUSTER_NAME_PREFIX.
"""

from __future__ import annotations

import uuid

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.records import RecordActivities
from controlplane.config import load_settings
from controlplane.db.repository import NewNode, NodeRepository
from controlplane.lifecycle import LaunchMode
from controlplane.spec import NodeSpec
from tests.support.specs import node_spec as node_spec_of
from workflows.models import RecordIntentInput, RecordIntentResult


def new_spec(**overrides: object) -> NodeSpec:
    return node_spec_of(**{"tenant": f"t{uuid.uuid4().hex[:8]}", **overrides})


async def record(
    nodes: NodeRepository, spec: NodeSpec, *, prefix: str = "cpn"
) -> RecordIntentResult:
    activities = RecordActivities(nodes, load_settings({"CLUSTER_NAME_PREFIX": prefix}))
    return await ActivityEnvironment().run(
        activities.record_intent,
        RecordIntentInput(
            spec=spec, workflow_id=f"node-{spec.node_id}", launch_mode=LaunchMode.CLI
        ),
    )


async def test_a_row_of_another_spec_under_the_same_node_id_is_not_attached(
    nodes: NodeRepository,
) -> None:
    asked = new_spec()
    other = new_spec(tenant=f"o{uuid.uuid4().hex[:8]}")
    forged = NewNode.from_spec(other, launch_mode=LaunchMode.API, workflow_id="node-forged")
    await nodes.record_intent(forged.model_copy(update={"node_id": asked.node_id}))

    with pytest.raises(ApplicationError) as refused:
        await record(nodes, asked)
    assert refused.value.type == "NodeIdentityConflict"
    assert refused.value.non_retryable
    assert other.tenant not in str(refused.value)  # the other node is not named
    row = await nodes.get(asked.node_id)
    assert row is not None
    assert row.tenant == other.tenant
    assert row.workflow_id == "node-forged"


async def test_a_cluster_name_taken_by_another_node_is_a_permanent_error(
    nodes: NodeRepository,
) -> None:
    asked = new_spec()
    squatter = new_spec(tenant=f"s{uuid.uuid4().hex[:8]}")
    await nodes.record_intent(
        NewNode.from_spec(
            squatter, launch_mode=LaunchMode.API, workflow_id="node-squat"
        ).model_copy(update={"cluster_name": asked.cluster_name})
    )

    with pytest.raises(ApplicationError) as refused:
        await record(nodes, asked)
    assert refused.value.type == "NodeIdentityConflict"
    assert refused.value.non_retryable  # before: a ClusterNameConflict retried for 15 minutes
    assert "nothing was launched" in str(refused.value)
    assert await nodes.get(asked.node_id) is None


async def test_the_same_spec_attaches_and_a_running_node_keeps_its_old_name(
    nodes: NodeRepository,
) -> None:
    spec = new_spec()
    old = NewNode.from_spec(spec, launch_mode=LaunchMode.CLI, workflow_id=f"node-{spec.node_id}")
    await nodes.record_intent(old.model_copy(update={"cluster_name": spec.legacy_cluster_name}))

    again = await record(nodes, spec)
    assert again.plan.node_id == spec.node_id
    assert again.plan.cluster_name == spec.legacy_cluster_name  # not renamed under it


async def test_new_nodes_are_named_under_the_installations_prefix(
    nodes: NodeRepository,
) -> None:
    spec = new_spec()
    result = await record(nodes, spec, prefix="stg")
    assert result.created
    assert result.plan.cluster_name == spec.cluster_name_for("stg")
    row = await nodes.get(spec.node_id)
    assert row is not None
    assert row.cluster_name.startswith("stg-")
