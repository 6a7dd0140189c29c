"""The guide's gradual migration to the API server, and its rollback, on the real pieces.

The `sky` CLI is a wrapper that logs each invocation and then runs the stack's shim, so the
tests see which front door every node really used, not only what its row says.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from controlplane.config import load_settings
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.rollout import choose_mode
from controlplane.spec import NodeSpec
from starter.api import ControlPlane, NodeStarted
from tests.integration.conftest import Stack
from tests.support.in_process_worker import in_process_worker
from tests.support.specs import node_spec

READY_WITHIN = timedelta(seconds=60)


@dataclass
class LoggedSky:
    path: Path
    log: Path

    def lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines() if line.strip()]

    def calls(self, command: str, cluster: str) -> int:
        """Invocations of ``sky <command>`` naming ``cluster``."""
        return sum(1 for words in self.lines() if words[:1] == [command] and cluster in words)

    def mentions(self, cluster: str) -> int:
        return sum(1 for words in self.lines() if cluster in words)


@pytest.fixture
def logged_sky(tmp_path: Path, sky_shim: Path) -> LoggedSky:
    log = tmp_path / "sky-calls.log"
    path = tmp_path / "sky"
    path.write_text(
        "#!/bin/sh\n"
        f'printf "%s\\n" "$*" >> {shlex.quote(str(log))}\n'
        f'exec {shlex.quote(str(sky_shim))} "$@"\n'
    )
    path.chmod(0o755)
    return LoggedSky(path, log)


@contextlib.asynccontextmanager
async def running_worker(stack: Stack, **overrides: str) -> AsyncIterator[None]:
    """An in-process worker on the stack's task queue, with these settings changed."""
    settings = load_settings({**stack.env, **overrides})
    assert settings.temporal_task_queue == stack.settings.temporal_task_queue
    async with in_process_worker(stack.client, settings):
        yield


def new_spec(tenant: str, deployment: str) -> NodeSpec:
    return node_spec(tenant=tenant, deployment=deployment)


@dataclass
class Launched:
    spec: NodeSpec
    started: NodeStarted


async def launch_running(control: ControlPlane, spec: NodeSpec) -> Launched:
    """Launch with no explicit mode (the rollout decides) and wait until it is running."""
    started = await control.launch_node(spec)
    view = await control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=READY_WITHIN
    )
    assert view.status is NodeStatus.RUNNING, (spec.cluster_name, view.error)
    return Launched(spec, started)


async def terminate(control: ControlPlane, node: Launched) -> None:
    response = await control.terminate_node(node.started.workflow_id)
    assert response.status is NodeStatus.TERMINATED, node.spec.cluster_name
    assert not response.still_terminating


def tenants_by_mode(run: str, percent: int, per_mode: int) -> dict[LaunchMode, list[str]]:
    """The first ``per_mode`` tenants of this run that the rollout sends to each mode."""
    found: dict[LaunchMode, list[str]] = {LaunchMode.API: [], LaunchMode.CLI: []}
    for i in range(1000):
        tenant = f"ro{run}{i}"
        mode = choose_mode(tenant, use_api_server=True, rollout_percent=percent)
        if len(found[mode]) < per_mode:
            found[mode].append(tenant)
        if all(len(tenants) == per_mode for tenants in found.values()):
            return found
    raise AssertionError("a 50% rollout put 1000 tenants all in one mode")


async def test_rollout_percent_sends_each_tenant_to_one_mode(
    stack: Stack, repo: NodeRepository, logged_sky: LoggedSky
) -> None:
    env = {
        "SKYPILOT_USE_API_SERVER": "true",
        "SKYPILOT_API_ROLLOUT_PERCENT": "50",
        "SKYPILOT_CLI_PATH": str(logged_sky.path),
    }
    chosen = tenants_by_mode(uuid.uuid4().hex[:6], 50, per_mode=2)
    expected = {tenant: mode for mode, tenants in chosen.items() for tenant in tenants}
    control = stack.control
    sim = stack.simulator

    # Two nodes per tenant, launched together: the rollout must put both in the tenant's mode.
    async with running_worker(stack, **env):
        nodes = await asyncio.gather(
            *(
                launch_running(control, new_spec(tenant, deployment))
                for tenant in expected
                for deployment in ("first", "second")
            )
        )
        await asyncio.gather(*(terminate(control, node) for node in nodes))

    for node in nodes:
        spec = node.spec
        mode = expected[spec.tenant]
        row = await repo.get(spec.node_id)
        assert row is not None
        assert row.status == NodeStatus.TERMINATED.value
        assert row.launch_mode == mode.value, (spec.tenant, spec.deployment)
        assert sim.counters()["launch_requests"][spec.cluster_name] == 1
        if mode is LaunchMode.CLI:
            assert logged_sky.calls("launch", spec.cluster_name) == 1
            assert logged_sky.calls("down", spec.cluster_name) == 1
        else:
            assert logged_sky.mentions(spec.cluster_name) == 0, spec.cluster_name
    modes_by_tenant: dict[str, set[str]] = {}
    for node in nodes:
        row = await repo.get(node.spec.node_id)
        assert row is not None
        modes_by_tenant.setdefault(row.tenant, set()).add(row.launch_mode)
    assert modes_by_tenant == {tenant: {mode.value} for tenant, mode in expected.items()}


async def test_rollback_keeps_api_nodes_on_the_api_and_sends_new_nodes_to_the_cli(
    stack: Stack, repo: NodeRepository, logged_sky: LoggedSky
) -> None:
    control = stack.control
    sim = stack.simulator
    tenant = f"rb{uuid.uuid4().hex[:6]}"
    old_spec, new_spec_ = new_spec(tenant, "before"), new_spec(tenant, "after")

    async with running_worker(
        stack, SKYPILOT_USE_API_SERVER="true", SKYPILOT_CLI_PATH=str(logged_sky.path)
    ):
        old = await launch_running(control, old_spec)
    row = await repo.get(old_spec.node_id)
    assert row is not None
    assert row.launch_mode == LaunchMode.API.value
    assert logged_sky.mentions(old_spec.cluster_name) == 0

    # Rollback: the API server stays configured, new nodes go to the CLI.
    async with running_worker(
        stack,
        SKYPILOT_USE_API_SERVER="false",
        SKYPILOT_CLI_PATH=str(logged_sky.path),
    ):
        await terminate(control, old)
        assert sim.cluster_status(old_spec.cluster_name) is None
        row = await repo.get(old_spec.node_id)
        assert row is not None
        assert row.status == NodeStatus.TERMINATED.value
        assert row.launch_mode == LaunchMode.API.value
        assert logged_sky.calls("down", old_spec.cluster_name) == 0
        assert logged_sky.mentions(old_spec.cluster_name) == 0

        new = await launch_running(control, new_spec_)
        row = await repo.get(new_spec_.node_id)
        assert row is not None
        assert row.launch_mode == LaunchMode.CLI.value
        assert logged_sky.calls("launch", new_spec_.cluster_name) == 1
        assert sim.cluster_status(new_spec_.cluster_name) == "UP"

        await terminate(control, new)
        assert logged_sky.calls("down", new_spec_.cluster_name) == 1
        assert sim.cluster_status(new_spec_.cluster_name) is None
        row = await repo.get(new_spec_.node_id)
        assert row is not None
        assert row.status == NodeStatus.TERMINATED.value
        assert row.launch_mode == LaunchMode.CLI.value
    assert sim.counters()["launch_requests"][old_spec.cluster_name] == 1
    assert sim.counters()["launch_requests"][new_spec_.cluster_name] == 1
