"""GPU usage from crafted transition sequences: what counts, until when, and for whom."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controlplane.events.usage import (
    GroupBy,
    NodeUsageInput,
    Transition,
    billed_intervals,
    summarise,
)
from starter.events_cli import usage_table

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# A node's usage input unless a test says otherwise: acme's blue deployment, 1 A100.
NODE: dict[str, Any] = {
    "node_id": "n1",
    "tenant": "acme",
    "deployment": "blue",
    "model": "m/llama",
    "gpu_type": "A100",
    "gpu_count": 1,
}


def node(steps: Sequence[tuple[float, str]], **fields: Any) -> NodeUsageInput:
    """``NODE`` with ``fields`` changed, through ``steps`` ((minute, status), ...)."""
    transitions = [Transition(at(m), s) for m, s in steps]
    return NodeUsageInput(**{**NODE, **fields}, transitions=transitions)


LIFECYCLE = [(0, "launching"), (5, "running"), (65, "terminating"), (70, "terminated")]


def seconds(inputs: list[NodeUsageInput], start: float | None, end: float) -> float:
    rows = summarise(inputs, start=None if start is None else at(start), end=at(end))
    return sum(r.gpu_seconds for r in rows)


def test_counts_from_launching_until_teardown_is_confirmed() -> None:
    # Pending time is free; terminating is billed (the cluster runs until it is down).
    steps = [(-30, "pending"), *LIFECYCLE]
    assert seconds([node(steps)], None, 1000) == 70 * 60


def test_gpu_seconds_multiply_by_gpu_count_and_node_hours_do_not() -> None:
    [row] = summarise([node(LIFECYCLE, gpu_count=8)], start=None, end=at(1000))
    assert row.gpu_seconds == 8 * 70 * 60
    assert row.node_hours == pytest.approx(70 / 60)


def test_a_node_still_running_at_to_counts_until_to() -> None:
    steps = [(0, "launching"), (5, "running")]
    [row] = summarise([node(steps)], start=None, end=at(30))
    assert row.gpu_seconds == 30 * 60
    assert row.counting_at_end == 1
    # Transitions after --to are ignored: the node was still running at --to.
    assert seconds([node(LIFECYCLE)], None, 30) == 30 * 60


def test_the_window_clips_both_ends() -> None:
    assert seconds([node(LIFECYCLE)], 10, 20) == 10 * 60
    assert seconds([node(LIFECYCLE)], 100, 200) == 0


def test_a_failed_launch_counts_until_failed() -> None:
    steps = [(0, "launching"), (3, "launching"), (12, "failed")]  # one relaunch, then failed
    assert seconds([node(steps)], None, 1000) == 12 * 60


def test_cleanup_failed_keeps_counting_until_confirmed_gone() -> None:
    leaking = [(0, "launching"), (5, "running"), (10, "terminating"), (15, "cleanup_failed")]
    [row] = summarise([node(leaking)], start=None, end=at(120))
    assert row.gpu_seconds == 120 * 60
    assert row.cleanup_failed == 1
    assert row.counting_at_end == 1
    confirmed = [*leaking, (90, "terminated")]  # the reconciler downed it later
    assert seconds([node(confirmed)], None, 120) == 90 * 60


def test_lost_stops_the_meter_unless_its_teardown_failed() -> None:
    lost = [(0, "launching"), (5, "running"), (40, "lost")]
    assert seconds([node(lost)], None, 120) == 40 * 60
    lost_and_leaking = [*lost, (45, "cleanup_failed")]
    assert seconds([node(lost_and_leaking)], None, 120) == 120 * 60


def test_cleanup_failed_before_any_launch_counts_from_then() -> None:
    steps = [(0, "pending"), (10, "cleanup_failed")]
    assert seconds([node(steps)], None, 60) == 50 * 60


def test_grouping_and_tenants() -> None:
    inputs = [
        node(LIFECYCLE, node_id="a", model="m/one", gpu_count=2),
        node(LIFECYCLE, node_id="b", model="m/two"),
        node(LIFECYCLE, node_id="c", model="m/one", tenant="zeta"),
    ]
    rows = summarise(inputs, start=None, end=at(1000), by=GroupBy.MODEL)
    assert [(r.tenant, r.group, r.nodes, r.gpu_seconds) for r in rows] == [
        ("acme", "m/one", 1, 2 * 70 * 60),
        ("acme", "m/two", 1, 70 * 60),
        ("zeta", "m/one", 1, 70 * 60),
    ]
    assert rows[0].as_dict(GroupBy.MODEL)["model"] == "m/one"
    by_tenant = summarise(inputs, start=None, end=at(1000))
    assert [(r.tenant, r.nodes) for r in by_tenant] == [("acme", 2), ("zeta", 1)]


def test_intervals_of_a_relaunch_are_one() -> None:
    steps = [(0, "launching"), (2, "launching"), (4, "running"), (9, "terminating")]
    [interval] = billed_intervals([Transition(at(m), s) for m, s in steps])
    assert interval.start == at(0)
    assert interval.end is None


def test_the_terminal_table_has_a_column_per_field_and_a_line_per_row() -> None:
    summary = summarise([node(LIFECYCLE)], start=None, end=at(99), by=GroupBy.GPU_TYPE)
    rows = [r.as_dict(GroupBy.GPU_TYPE) for r in summary]
    header, line = usage_table(rows).splitlines()
    assert header.split() == [
        "tenant",
        "gpu_type",
        "nodes",
        "gpu_seconds",
        "node_hours",
        "counting_at_end",
        "cleanup_failed",
    ]
    assert line.split()[:4] == ["acme", "A100", "1", "4200.0"]
    assert usage_table([]) == "no GPU usage in this window"
