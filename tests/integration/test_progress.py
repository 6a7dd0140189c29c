"""Where a launch stands, end to end: the simulator's launch log reaches the status query
(API mode: /api/stream; CLI mode: `sky launch` output), a bounded number of Temporal actions
carries it, and the node is findable by its search attributes."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from temporalio.api.enums.v1 import EventType

from controlplane.launch_progress import NodePhase
from controlplane.lifecycle import LaunchMode, NodeStatus
from tests.integration.conftest import Stack, new_spec
from workflows import search_attributes as attrs
from workflows.models import NodeProgressSignal, NodeView


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
    worker.simulator.set_timings(launch_delay_s=2.0)
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
