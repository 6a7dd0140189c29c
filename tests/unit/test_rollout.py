"""The gradual-migration choice: deterministic per tenant, monotone in the percentage."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from controlplane.lifecycle import LaunchMode
from controlplane.rollout import choose_mode, tenant_bucket

TENANTS = [f"tenant-{i}" for i in range(2000)]


def test_rollback_sends_everyone_to_the_cli() -> None:
    assert {choose_mode(t, use_api_server=False, rollout_percent=100) for t in TENANTS} == {
        LaunchMode.CLI
    }


def test_same_tenant_same_mode_within_a_phase() -> None:
    for tenant in TENANTS[:50]:
        modes = {choose_mode(tenant, use_api_server=True, rollout_percent=37) for _ in range(5)}
        assert len(modes) == 1


@pytest.mark.parametrize("percent", [0, 10, 50, 90, 100])
def test_share_of_api_tenants_follows_the_percentage(percent: int) -> None:
    api = sum(
        choose_mode(t, use_api_server=True, rollout_percent=percent) is LaunchMode.API
        for t in TENANTS
    )
    assert abs(api / len(TENANTS) * 100 - percent) <= 4


def test_raising_the_percentage_never_moves_a_tenant_back_to_the_cli() -> None:
    phases = [0, 10, 25, 50, 75, 100]
    for tenant in TENANTS[:300]:
        modes = [choose_mode(tenant, use_api_server=True, rollout_percent=p) for p in phases]
        first_api = modes.index(LaunchMode.API) if LaunchMode.API in modes else len(modes)
        assert all(m is LaunchMode.API for m in modes[first_api:])


def test_bucket_is_stable_across_processes() -> None:
    # Python's own str hash changes per process; the bucket must not, or tenants would flip
    # between modes whenever a worker restarts.
    code = (
        "from controlplane.rollout import tenant_bucket as b; "
        "print([b(f't{i}') for i in range(50)])"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert outputs == {f"{[tenant_bucket(f't{i}') for i in range(50)]}\n"}
