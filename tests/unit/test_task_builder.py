"""Node specs, cluster names and the vLLM task."""

from __future__ import annotations

import re

import pytest
import yaml
from pydantic import SecretStr, ValidationError

from controlplane.cluster_names import CLUSTER_NAME_RE
from controlplane.skypilot.task import IDLE_AUTOSTOP_MINUTES, VLLM_PORT, TaskSettings, build_task
from controlplane.spec import NodeSpec
from tests.support.specs import node_spec as node_spec_of

SETTINGS = TaskSettings(
    control_plane_url="https://cp.example.com",
    vllm_version="0.11.0",
    torch_version="2.8.0",
    r2_endpoint="https://r2.example.com",
    r2_bucket="models",
    r2_access_key_id=SecretStr("r2-access-key-id-value"),
    r2_secret_access_key=SecretStr("r2-secret-access-key-value"),
)


def spec(**overrides: object) -> NodeSpec:
    return node_spec_of(**overrides)


def test_cluster_name_is_valid_deterministic_and_unique_per_replica() -> None:
    first, again, second = spec(), spec(), spec(replica=1)
    assert first.cluster_name == again.cluster_name
    assert first.node_id == again.node_id
    assert first.cluster_name != second.cluster_name
    assert first.node_id != second.node_id
    for name in (first.cluster_name, second.cluster_name):
        assert CLUSTER_NAME_RE.match(name)
        assert len(name) <= 40
        assert re.fullmatch(r"[a-z][a-z0-9-]*[a-z0-9]", name)
        assert "/" not in name


@pytest.mark.parametrize(
    "overrides",
    [
        {"tenant": "a" * 64, "model": "org/" + "x" * 120, "replica": 999},
        {"tenant": "T_1", "model": "m"},
        {"tenant": "9tenant", "model": "1.5B.model--x"},
        {"deployment": "blue", "region": "europe-west4", "provider": "gcp"},
    ],
)
def test_cluster_names_stay_valid_for_awkward_inputs(overrides: dict[str, object]) -> None:
    name = spec(**overrides).cluster_name
    assert CLUSTER_NAME_RE.match(name), name
    assert len(name) <= 40


def test_identity_differences_give_different_clusters() -> None:
    base = spec()
    variants = [
        spec(region="us-west-2"),
        spec(gpu_count=2),
        spec(deployment="blue"),
        spec(tenant="globex"),
        spec(spot=True),
        spec(model="org/other"),
    ]
    names = {base.cluster_name, *(v.cluster_name for v in variants)}
    assert len(names) == len(variants) + 1


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"provider": "digitalocean-ish"}, "provider"),
        ({"gpu_count": 0}, "gpu_count"),
        ({"gpu_count": -2}, "gpu_count"),
        ({"tenant": ""}, "tenant"),
        ({"tenant": "acme corp"}, "tenant"),
        ({"model": "../../etc/passwd"}, "model"),
        ({"model": "a/b/c"}, "model"),
        ({"region": "US East 1"}, "region"),
        ({"gpu_type": "A100:1"}, "gpu_type"),
        ({"replica": -1}, "replica"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_bad_specs_name_the_field(overrides: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as failure:
        spec(**overrides)
    assert field in {str(e["loc"][0]) for e in failure.value.errors()}


def test_unknown_provider_lists_the_known_ones() -> None:
    with pytest.raises(ValidationError, match="expected one of: aws, gcp"):
        spec(provider="moon")


def test_task_yaml_has_resources_autostop_envs_and_commands() -> None:
    node = spec(gpu_count=2, spot=True)
    task = build_task(node, SETTINGS, node_secrets={"HF_TOKEN": SecretStr("hf_abcdef123456")})
    doc = yaml.safe_load(task.render())
    resources = doc["resources"]
    assert resources["infra"] == "aws/us-east-1"
    assert resources["accelerators"] == "A100:2"
    assert resources["use_spot"] is True
    assert resources["ports"] == [VLLM_PORT]
    assert resources["autostop"]["idle_minutes"] == IDLE_AUTOSTOP_MINUTES == 30
    envs = doc["envs"]
    assert envs["CONTROL_PLANE_URL"] == "https://cp.example.com"
    assert envs["VLLM_VERSION"] == "0.11.0"
    assert envs["TORCH_VERSION"] == "2.8.0"
    assert envs["MODEL_ID"] == node.model
    assert envs["NODE_ID"] == node.node_id
    assert envs["R2_ENDPOINT"] == "https://r2.example.com"
    assert envs["R2_BUCKET"] == "models"
    assert "vllm==${VLLM_VERSION}" in doc["setup"]
    assert '--model "${MODEL_ID}"' in doc["run"]
    assert doc["name"] == node.cluster_name


def test_secrets_are_rendered_only_on_purpose() -> None:
    task = build_task(spec(), SETTINGS, node_secrets={"HF_TOKEN": SecretStr("hf_abcdef123456")})
    plain = task.render()
    for value in ("hf_abcdef123456", "r2-secret-access-key-value", "r2-access-key-id-value"):
        assert value not in plain
        assert value not in repr(task)
    assert yaml.safe_load(plain)["secrets"] == {
        "HF_TOKEN": None,
        "R2_ACCESS_KEY_ID": None,
        "R2_SECRET_ACCESS_KEY": None,
    }
    full = yaml.safe_load(task.render(with_secrets=True))
    assert full["secrets"]["HF_TOKEN"] == "hf_abcdef123456"
    assert "HF_TOKEN" not in full["envs"]


def test_secret_names_may_not_shadow_envs() -> None:
    with pytest.raises(ValueError, match="MODEL_ID"):
        build_task(spec(), SETTINGS, node_secrets={"MODEL_ID": SecretStr("x")})


def test_fallback_locations_become_ordered_alternatives() -> None:
    node = spec(fallback_locations=[{"provider": "gcp", "region": "us-central1"}])
    resources = yaml.safe_load(build_task(node, SETTINGS).render())["resources"]
    assert "infra" not in resources
    assert resources["ordered"] == [{"infra": "aws/us-east-1"}, {"infra": "gcp/us-central1"}]
    assert resources["accelerators"] == "A100:1"
    assert node.cluster_name != spec().cluster_name  # the candidates are part of the identity


def test_versions_generation_and_large_replicas_keep_names_valid() -> None:
    plain = spec()
    assert plain.node_id == spec(generation=None, vllm_version=None).node_id  # ids unchanged
    pinned = spec(vllm_version="0.12.0", torch_version="2.9.0", generation="abc123", replica=10**14)
    envs = yaml.safe_load(build_task(pinned, SETTINGS).render())["envs"]
    assert envs["VLLM_VERSION"] == "0.12.0"
    assert envs["TORCH_VERSION"] == "2.9.0"
    assert CLUSTER_NAME_RE.match(pinned.cluster_name)
    assert len(pinned.cluster_name) <= 40
    assert spec(generation="g2").node_id != spec(generation="g1").node_id


def test_the_run_script_stops_a_stale_server_without_matching_itself() -> None:
    run = yaml.safe_load(build_task(spec(), SETTINGS).render())["run"]
    assert run.index("pkill") < run.index("exec python -m vllm")
    assert '"[v]llm.entrypoints.openai.api_server"' in run
