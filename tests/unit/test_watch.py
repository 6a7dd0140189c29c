"""`launch --wait` / `deploy --wait`: a live display on a terminal, JSON lines when redirected;
and `starter list` filters on the search attributes."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from controlplane.launch_progress import NodePhase
from controlplane.lifecycle import NodeStatus
from starter.__main__ import main
from starter.api import node_list_query
from starter.watch import ProgressDisplay, Row
from workflows.models import NodeView

NOW = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


def view(status: NodeStatus, phase: NodePhase, progress: str, since_s: float = 0) -> NodeView:
    return NodeView(
        node_id="n1",
        cluster_name="cpn-acme-x-0",
        status=status,
        phase=phase,
        progress=progress,
        since=NOW - timedelta(seconds=since_s),
    )


def test_a_terminal_gets_one_line_per_node_redrawn_in_place() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True, now=lambda: NOW)
    launching = view(NodeStatus.LAUNCHING, NodePhase.PROVISIONING, "Launching on AWS", 75)
    display.show([Row("node-a", "cpn-a", launching), Row("node-b", "cpn-b", None)])
    display.show([Row("node-a", "cpn-a", launching), Row("node-b", "cpn-b", None)])
    text = out.getvalue()
    first, second = text.split("\x1b[2F")  # the second frame starts two lines up
    assert first.count("\n") == 2
    assert "cpn-a  launching   provisioning" in first
    assert "(1m15s in phase)  Launching on AWS" in first
    assert "cpn-b  starting" in first
    assert second.count("\x1b[2K") == 2  # each line erased before it is redrawn


def test_redirected_output_gets_a_json_line_per_change_only() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=False, now=lambda: NOW)
    provisioning = view(NodeStatus.LAUNCHING, NodePhase.PROVISIONING, "Launching on AWS")
    display.show([Row("node-a", "cpn-a", provisioning)])
    display.show([Row("node-a", "cpn-a", provisioning)])  # unchanged: nothing written
    display.show(
        [Row("node-a", "cpn-a", view(NodeStatus.LAUNCHING, NodePhase.SETTING_UP, "Setup"))]
    )
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["node"], e["phase"], e["progress"]) for e in events] == [
        ("cpn-a", "provisioning", "Launching on AWS"),
        ("cpn-a", "setting_up", "Setup"),
    ]
    assert all(e["event"] == "progress" and e["status"] == "launching" for e in events)
    assert "\x1b" not in out.getvalue()


def test_a_json_line_keys_a_node_by_its_workflow_id_as_its_label_changes() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=False, now=lambda: NOW)
    provisioning = view(NodeStatus.LAUNCHING, NodePhase.PROVISIONING, "Launching on AWS")
    display.show([Row("node-a", "replica 0", None)])
    display.show([Row("node-a", "cpn-a", provisioning)])  # the replica reported its cluster
    display.show([Row("node-a", "cpn-a", provisioning)])
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["workflow_id"], e["node"]) for e in events] == [
        ("node-a", "replica 0"),
        ("node-a", "cpn-a"),
    ]


def test_list_query_uses_the_search_attributes() -> None:
    assert node_list_query() == "WorkflowType = 'NodeWorkflow'"
    assert node_list_query(tenant="acme", deployment="blue", status=NodeStatus.RUNNING) == (
        "WorkflowType = 'NodeWorkflow' AND Tenant = 'acme' AND Deployment = 'blue' "
        "AND NodeStatus = 'running'"
    )
    assert node_list_query(tenant="o'brien") == (
        "WorkflowType = 'NodeWorkflow' AND Tenant = 'o\\'brien'"
    )


def test_list_rejects_an_unknown_status_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["list", "--status", "sleeping"]) == 2
    error = json.loads(capsys.readouterr().err)
    assert "--status" in error["error"]
    assert "running" in error["error"]
