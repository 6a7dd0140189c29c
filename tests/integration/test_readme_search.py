"""The README's search-attribute commands, run verbatim with bash against dev servers: the
`temporal operator search-attribute create` block registers every attribute the worker checks
for, and the `temporal workflow list` queries find a tenant's running nodes and a deployment's
replicas."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import textwrap
import time
from pathlib import Path

import pytest

from controlplane import search_attributes as names
from controlplane.lifecycle import NodeStatus
from starter.search_attributes import missing_search_attributes, warn_if_missing
from tests.integration.conftest import Stack
from tests.integration.test_temporal_cli import FENCE, README, bash, bash_env
from tests.support.specs import deployment_spec
from tests.support.temporal_env import dev_server_path, local_temporal


def readme_commands(marker: str) -> list[str]:
    """The `temporal ...` commands of the fenced block between <!-- marker-start/end -->."""
    text = README.read_text()
    start, end = f"<!-- {marker}-start -->", f"<!-- {marker}-end -->"
    assert start in text, f"README.md lacks the {marker} block"
    assert end in text, f"README.md lacks the end of the {marker} block"
    match = FENCE.search(textwrap.dedent(text.split(start, 1)[1].split(end, 1)[0]))
    assert match, f"no fenced block between the {marker} markers"
    commands: list[list[str]] = []
    for line in match.group("body").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("temporal "):
            commands.append([])
        commands[-1].append(line)
    return ["\n".join(lines) for lines in commands]


async def test_readme_creates_every_attribute_the_worker_checks_for(
    caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    async with local_temporal(tmp_path, search_attributes_registered=False) as (bare, _):
        with caplog.at_level(logging.WARNING):
            assert await warn_if_missing(bare.client) == list(names.ALL_ATTRIBUTES)
        warning = " ".join(r.getMessage() for r in caplog.records)
        for name in names.ALL_ATTRIBUTES:
            assert name in warning, warning
        env = {
            "PATH": bash_path(),
            "TEMPORAL_ADDRESS": bare.client.service_client.config.target_host,
        }
        commands = readme_commands("search-attributes")
        assert len(commands) == len(names.ALL_ATTRIBUTES)
        for command in commands:
            await bash(command, env)
        assert await missing_search_attributes(bare.client) == []


def bash_path() -> str:
    return f"{os.path.dirname(dev_server_path())}{os.pathsep}{os.environ.get('PATH', '')}"


async def test_readme_queries_find_a_tenants_nodes_and_a_deployments_replicas(
    worker: Stack,
) -> None:
    control = worker.control
    spec = deployment_spec(name="blue")
    deployment_id = await control.launch_deployment(spec, 2)
    try:
        deadline = time.monotonic() + 60
        while True:
            view = await control.deployment_status(deployment_id)
            if sum(r.status is NodeStatus.RUNNING for r in view.replicas) == 2:
                break
            assert time.monotonic() < deadline, view
            await asyncio.sleep(0.3)
        replicas = [r.workflow_id for r in view.replicas]
        tenant_query, deployment_query = readme_commands("temporal-search")
        env = bash_env(worker)
        for command in (tenant_query, deployment_query):
            output = ""
            for _ in range(50):  # visibility lags the upsert a little
                output = await bash(command, env)
                if all(replica in output for replica in replicas):
                    break
                await asyncio.sleep(0.2)
            for replica in replicas:
                assert replica in output, f"{command}\n{output}"
        assert not re.search(rf"\b{re.escape(deployment_id)}\b", await bash(deployment_query, env))
    finally:
        await control.terminate_deployment(deployment_id)
