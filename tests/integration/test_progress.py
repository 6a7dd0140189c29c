"""Where a launch stands, end to end: the simulator's launch log reaches the status query
(API mode: /api/stream; CLI mode: `sky launch` output), a bounded number of Temporal actions
carries it, and the node is findable by its search attributes."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType

from controlplane.launch_progress import NodePhase
from controlplane.lifecycle import LaunchMode, NodeStatus
from tests.integration.conftest import Stack, new_spec
from tests.support.processes import run_text
from workflows import search_attributes as attrs
from workflows.deployment import deployment_workflow_id
from workflows.models import NodeProgressSignal, NodeView

REPO = Path(__file__).resolve().parents[2]


async def phases_seen(stack: Stack, workflow_id: str) -> list[NodeProgressSignal]:
    converter = stack.client.data_converter
    history = await stack.client.get_workflow_handle(workflow_id).fetch_history()
    seen = []
    for event in history.events:
        if event.event_type != EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            continue
        signaled = event.workflow_execution_signaled_event_attributes
        if signaled.signal_name == "launch_progress":
            [decoded] = await converter.decode(signaled.input.payloads, [NodeProgressSignal])
            seen.append(decoded)
    return seen


@pytest.mark.parametrize("mode", [LaunchMode.API, LaunchMode.CLI])
async def test_launch_progress_reaches_the_status_query(worker: Stack, mode: LaunchMode) -> None:
    # 2 s a phase: each outlasts the reporter's quiet start (activities/progress.py), which
    # tells the first second of an activity as one signal at its end.
    worker.simulator.set_timings(launch_delay_s=4.0)
    try:
        spec = new_spec()
        control = worker.control
        started = await control.launch_node(spec, launch_mode=mode)
        views: list[NodeView] = []
        async with asyncio.timeout(60):
            while True:
                view = await control.node_status(started.workflow_id)
                views.append(view)
                if view.status is NodeStatus.RUNNING or view.status.final:
                    break
                await asyncio.sleep(0.1)
    finally:
        worker.simulator.set_timings(launch_delay_s=0.5)
    assert view.status is NodeStatus.RUNNING, view
    assert view.phase is NodePhase.READY
    seen = {v.phase for v in views}
    assert {NodePhase.PROVISIONING, NodePhase.SETTING_UP} <= seen, seen
    lines = {v.progress for v in views if v.phase is NodePhase.PROVISIONING}
    assert "Launching on AWS us-east-1 (us-east-1a) (A100:1)." in lines, lines

    signals = await phases_seen(worker, started.workflow_id)
    assert (
        [s.phase for s in signals]
        == [
            NodePhase.PROVISIONING,
            NodePhase.SETTING_UP,
            NodePhase.LOADING_MODEL,
            NodePhase.LOADING_MODEL,  # the activity's own "waiting for the model" line
        ][: len(signals)]
    )
    assert 3 <= len(signals) <= 4, signals

    described = await worker.client.get_workflow_handle(started.workflow_id).describe()
    summary = await described.static_summary()
    assert summary is not None
    assert spec.tenant in summary, summary
    assert spec.model in summary, summary
    assert described.typed_search_attributes.get(attrs.NODE_STATUS) == "running"
    listed = await control.list_nodes(
        tenant=spec.tenant, deployment=spec.deployment, status=NodeStatus.RUNNING
    )
    for _ in range(50):
        if listed:
            break
        await asyncio.sleep(0.1)
        listed = await control.list_nodes(
            tenant=spec.tenant, deployment=spec.deployment, status=NodeStatus.RUNNING
        )
    assert [item["workflow_id"] for item in listed] == [started.workflow_id]
    await control.terminate_node(started.workflow_id)
    final = await control.wait_for_node(
        started.workflow_id, until=set(), timeout=timedelta(seconds=30)
    )
    assert final.status is NodeStatus.TERMINATED


async def run_starter(stack: Stack, *args: str) -> tuple[int, list[dict[str, Any]]]:
    """`python -m starter ...` redirected (not a TTY): exit code and its JSON lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "TEMPORAL_"))}
    done = await asyncio.to_thread(
        run_text, [sys.executable, "-m", "starter", *args], env={**env, **stack.env}, timeout=120
    )
    assert done.stdout.strip(), done.stderr
    return done.returncode, [json.loads(line) for line in done.stdout.splitlines()]


async def test_launch_and_deploy_wait_write_json_lines_when_redirected(worker: Stack) -> None:
    spec = new_spec()
    worker.simulator.set_timings(launch_delay_s=3.0)  # provisioning outlasts a display tick
    try:
        code, lines = await run_starter(
            worker,
            *("launch", "--tenant", spec.tenant, "--model", spec.model, "--provider", "aws"),
            *("--region", "us-east-1", "--gpu", "A100:1", "--deployment", spec.deployment),
            *("--wait", "60"),
        )
        assert code == 0, lines
        *progress, result = lines
        assert result["node"]["status"] == "running"
        assert all(line["event"] == "progress" for line in progress)
        phases = [line["phase"] for line in progress]
        assert "provisioning" in phases, phases
        assert phases[-1] == "ready"
        await worker.control.terminate_node(result["workflow_id"])

        name = f"w{uuid.uuid4().hex[:6]}"
        code, lines = await run_starter(
            worker,
            *("deploy", "--tenant", spec.tenant, "--model", spec.model, "--provider", "aws"),
            *("--region", "us-east-1", "--gpu", "A100:1", "--name", name, "--replicas", "2"),
            *("--wait", "60"),
        )
    finally:
        worker.simulator.set_timings(launch_delay_s=0.5)
    assert code == 0, lines
    *progress, deployment = lines
    assert [r["status"] for r in deployment["replicas"]] == ["running", "running"]
    # A replica is labelled "replica N" until it reports its cluster: the id is what is stable.
    assert {line["workflow_id"] for line in progress} == {
        r["workflow_id"] for r in deployment["replicas"]
    }
    last_label = {line["workflow_id"]: line["node"] for line in progress}
    assert sorted(last_label.values()) == sorted(r["cluster_name"] for r in deployment["replicas"])
    await worker.control.terminate_deployment(deployment_workflow_id(spec.tenant, name))
