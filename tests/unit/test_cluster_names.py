"""The cluster-name patterns (controlplane/cluster_names.py): SkyPilot's is the real package's,
ours is narrower than it, and every user checks names against these definitions."""

from __future__ import annotations

import subprocess

import pytest

from controlplane import cluster_names
from controlplane.skypilot import cli
from devtools.skypilot_sim import contract
from tests.support.real_skypilot import skypilot_venv
from tests.support.specs import node_spec


def test_skypilot_pattern_is_the_one_skypilot_0_14_1_ships() -> None:
    python = skypilot_venv() / "bin" / "python"
    if not python.exists():
        pytest.fail(f"the real skypilot is missing at {python}: run scripts/test once")
    script = "from sky.skylet import constants; print(constants.CLUSTER_NAME_VALID_REGEX)"
    shipped = subprocess.run(
        [str(python), "-c", script], capture_output=True, text=True, check=True, timeout=120
    ).stdout.strip()
    assert shipped == cluster_names.SKYPILOT_CLUSTER_NAME_PATTERN


def test_the_cli_runner_and_the_simulator_check_skypilots_pattern() -> None:
    assert cli.CLUSTER_NAME_RE is cluster_names.SKYPILOT_CLUSTER_NAME_RE
    assert contract.CLUSTER_NAME_VALID_REGEX == cluster_names.SKYPILOT_CLUSTER_NAME_PATTERN


@pytest.mark.parametrize("prefix", ["cpn", "stg", "a1"])
def test_our_names_carry_the_prefix_and_satisfy_skypilots_pattern(prefix: str) -> None:
    spec = node_spec(tenant="Acme_Corp", model="org/Some.Model_v2", replica=7)
    for name in (spec.cluster_name_for(prefix), spec.legacy_cluster_name):
        assert cluster_names.CLUSTER_NAME_RE.match(name), name
        assert cluster_names.SKYPILOT_CLUSTER_NAME_RE.fullmatch(name), name
        assert len(name) <= cluster_names.CLUSTER_NAME_MAX
    assert cluster_names.carries_prefix(spec.cluster_name_for(prefix), prefix)
    assert not cluster_names.carries_prefix(spec.cluster_name_for(prefix), prefix + "x")


def test_a_prefix_with_a_hyphen_is_refused() -> None:
    with pytest.raises(ValueError, match="no hyphen"):
        cluster_names.check_cluster_prefix("cp-n")
