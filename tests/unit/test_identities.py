"""Node ids, workflow ids and cluster names: unambiguous, collision-resistant, valid for clouds.

The collision pairs here were found against the old scheme (issue 8, finding 2): a deployment
name for tenant ``acmecorp-x`` whose node took ``acmecorp``'s cluster name and workflow id (24
bits of hash, the tenant slug cut to 8 characters), and ``deployment-<tenant>-<name>``, which
gives ``acme-prod``/``x`` and ``acme``/``prod-x`` the same id without any search.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.cluster_names import CLUSTER_NAME_MAX
from controlplane.config import ConfigError, load_settings
from controlplane.db.models import NewNode
from controlplane.lifecycle import LaunchMode
from controlplane.spec import NodeSpec
from tests.support.specs import node_spec as node_spec_of
from workflows.deployment import (
    deployment_workflow_id,
    legacy_deployment_workflow_id,
    legacy_node_workflow_id,
    node_workflow_id,
)

MODEL = "NousResearch/Meta-Llama-3-8B-Instruct"
# Every cloud's rule at once: SkyPilot's pattern, GCP's (lowercase, a letter first, no trailing
# hyphen), 40 characters.
CLOUD_SAFE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def spec(**overrides: object) -> NodeSpec:
    return node_spec_of(**{"model": MODEL, **overrides})


# Found by brute force over deployment names (2^24 tries): same old cluster name and workflow id.
VICTIM = spec(tenant="acmecorp")
ATTACKER = spec(tenant="acmecorp-x", deployment="xa5d3fc")


def test_the_found_cross_tenant_collision_no_longer_collides() -> None:
    assert VICTIM.legacy_cluster_name == ATTACKER.legacy_cluster_name  # the old scheme's flaw
    assert legacy_node_workflow_id(VICTIM) == legacy_node_workflow_id(ATTACKER)

    assert VICTIM.node_id != ATTACKER.node_id
    assert node_workflow_id(VICTIM.node_id) != node_workflow_id(ATTACKER.node_id)
    assert VICTIM.cluster_name != ATTACKER.cluster_name
    assert VICTIM.cluster_name_for("stg") != ATTACKER.cluster_name_for("stg")


def test_workflow_ids_carry_the_whole_node_id() -> None:
    node = spec()
    assert node_workflow_id(node.node_id) == f"node-{node.node_id}"
    assert len(node.node_id.replace("-", "")) == 32  # a UUID: 122 bits of SHA-1


def test_deployment_ids_encode_tenant_and_name_unambiguously() -> None:
    assert legacy_deployment_workflow_id("acme-prod", "x") == legacy_deployment_workflow_id(
        "acme", "prod-x"
    )
    assert deployment_workflow_id("acme-prod", "x") != deployment_workflow_id("acme", "prod-x")
    # The same split at the separator for the node identity the ids come from.
    assert spec(tenant="acme-prod", deployment="x").node_id != (
        spec(tenant="acme", deployment="prod-x").node_id
    )


tenants = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,20}", fullmatch=True)
names = st.from_regex(r"[a-z0-9][a-z0-9-]{0,20}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(tenants, names, tenants, names)
def test_deployment_ids_are_injective(t1: str, n1: str, t2: str, n2: str) -> None:
    if (t1, n1) != (t2, n2):
        assert deployment_workflow_id(t1, n1) != deployment_workflow_id(t2, n2)


prefixes = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    tenant=st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", fullmatch=True),
    model=st.from_regex(
        r"[A-Za-z0-9][A-Za-z0-9._-]{0,40}(/[A-Za-z0-9][A-Za-z0-9._-]{0,40})?", fullmatch=True
    ),
    deployment=st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True),
    replica=st.integers(min_value=0, max_value=999),
    prefix=prefixes,
)
def test_cluster_names_are_cloud_safe_for_any_spec_and_prefix(
    tenant: str, model: str, deployment: str, replica: int, prefix: str
) -> None:
    node = spec(tenant=tenant, model=model, deployment=deployment, replica=replica)
    name = node.cluster_name_for(prefix)
    assert len(name) <= CLUSTER_NAME_MAX, name
    assert CLOUD_SAFE.match(name), name
    assert name.startswith(f"{prefix}-")
    assert name.endswith(f"-{replica}")
    hashed = name.rsplit("-", 2)[1]
    assert len(hashed) == 16  # 80 bits of base32


def test_the_default_prefix_is_cpn_and_names_differ_by_prefix() -> None:
    node = spec()
    assert node.cluster_name == node.cluster_name_for("cpn")
    assert node.cluster_name.startswith("cpn-acme-")
    assert node.cluster_name_for("stg").startswith("stg-acme-")
    assert node.cluster_name_for("stg").split("-", 1)[1] == node.cluster_name.split("-", 1)[1]


@pytest.mark.parametrize("prefix", ["", "Cpn", "cpn-stg", "9cpn", "abcdefghi", "cp_n"])
def test_a_bad_prefix_is_refused_naming_the_variable(prefix: str) -> None:
    with pytest.raises(ConfigError, match="CLUSTER_NAME_PREFIX"):
        load_settings({"CLUSTER_NAME_PREFIX": prefix})
    with pytest.raises(ValueError, match="lowercase letters"):
        spec().cluster_name_for(prefix)


def test_a_good_prefix_is_taken() -> None:
    assert load_settings({}).cluster_name_prefix == "cpn"
    assert load_settings({"CLUSTER_NAME_PREFIX": "stg2"}).cluster_name_prefix == "stg2"


def test_old_names_stay_what_running_nodes_were_given() -> None:
    """The README's example node, created under the old scheme, keeps its name and id."""
    assert spec().legacy_cluster_name == "cpn-acme-meta-llama-3-8b-instru-1df568-0"
    assert legacy_node_workflow_id(spec()) == "node-cpn-acme-meta-llama-3-8b-instru-1df568-0"


def test_record_intents_row_names_the_cluster_under_the_installations_prefix() -> None:
    """``NewNode.from_spec`` is what record_intent writes: one recipe for the row (issue 9)."""
    node_spec = spec()
    node = NewNode.from_spec(
        node_spec, launch_mode=LaunchMode.CLI, workflow_id="node-1", cluster_name_prefix="stage"
    )
    default = NewNode.from_spec(node_spec, launch_mode=LaunchMode.API, workflow_id="node-1")

    assert node.cluster_name == node_spec.cluster_name_for("stage")
    assert node.cluster_name.startswith("stage-")
    assert default.cluster_name == node_spec.cluster_name != node.cluster_name
    assert node.spec == node_spec.model_dump(mode="json")
    assert (node.node_id, node.tenant, node.replica) == (node_spec.node_id, "acme", 0)
