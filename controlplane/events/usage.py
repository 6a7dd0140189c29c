"""GPU usage per tenant from the recorded transitions: what the cloud bills, not what we hoped.

A node counts from its first ``launching`` until its teardown is *confirmed*:

* ``terminated`` and ``failed`` are recorded only after SkyPilot confirmed the cluster down,
  so they stop the meter;
* ``lost`` stops it too (the cluster is gone or stopped) unless a ``cleanup_failed`` follows:
  then the cluster may still be there, and the time since the ``lost`` is billed after all;
* ``cleanup_failed`` never stops the meter (a leak costs money, the report shows it); a later
  confirmed teardown (``terminated``/``failed``) does;
* a node still counting at ``--to`` counts until ``--to``.

Intervals are clipped to [``start``, ``end``]. GPU-seconds are seconds times the node's GPU count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.db.schema import node_events, nodes
from controlplane.lifecycle import CONFIRMED_DOWN_STATUSES, NodeStatus


class GroupBy(StrEnum):
    MODEL = "model"
    GPU_TYPE = "gpu_type"
    DEPLOYMENT = "deployment"


@dataclass(frozen=True)
class Transition:
    at: datetime
    to_status: str


@dataclass(frozen=True)
class NodeUsageInput:
    """One node: what it ran on, and its transitions in order."""

    node_id: str
    tenant: str
    deployment: str
    model: str
    gpu_type: str
    gpu_count: int
    transitions: Sequence[Transition]


@dataclass(frozen=True)
class Interval:
    start: datetime
    end: datetime | None  # None: still counting


def billed_intervals(transitions: Iterable[Transition]) -> list[Interval]:
    """When the node was billable, from its transitions (oldest first)."""
    closed: list[Interval] = []
    open_at: datetime | None = None
    closed_by_lost = False
    for step in transitions:
        status = NodeStatus(step.to_status)
        if status is NodeStatus.LAUNCHING and open_at is None:
            open_at, closed_by_lost = step.at, False
        elif status is NodeStatus.CLEANUP_FAILED and open_at is None:
            # After "lost": its cluster could not be downed, it kept billing. Otherwise nothing
            # ran before, but a cluster may exist from now on.
            open_at = closed.pop().start if closed_by_lost else step.at
            closed_by_lost = False
        elif (
            status in CONFIRMED_DOWN_STATUSES or status is NodeStatus.LOST
        ) and open_at is not None:
            closed.append(Interval(open_at, step.at))
            open_at, closed_by_lost = None, status is NodeStatus.LOST
    if open_at is not None:
        closed.append(Interval(open_at, None))
    return closed


def clipped_seconds(intervals: Iterable[Interval], start: datetime | None, end: datetime) -> float:
    total = 0.0
    for interval in intervals:
        begin = interval.start if start is None else max(interval.start, start)
        finish = min(interval.end or end, end)
        total += max(0.0, (finish - begin).total_seconds())
    return total


@dataclass
class UsageRow:
    tenant: str
    group: str | None
    nodes: int = 0
    gpu_seconds: float = 0.0
    node_hours: float = 0.0
    counting_at_end: int = 0  # nodes still billable at --to (running, or a leak)
    cleanup_failed: int = 0
    node_ids: list[str] = field(default_factory=list)

    def as_dict(self, by: GroupBy | None) -> dict[str, Any]:
        out: dict[str, Any] = {"tenant": self.tenant}
        if by is not None:
            out[by.value] = self.group
        out.update(
            nodes=self.nodes,
            gpu_seconds=round(self.gpu_seconds, 3),
            node_hours=round(self.node_hours, 6),
            counting_at_end=self.counting_at_end,
            cleanup_failed=self.cleanup_failed,
        )
        return out


def summarise(
    inputs: Iterable[NodeUsageInput],
    *,
    start: datetime | None,
    end: datetime,
    by: GroupBy | None = None,
) -> list[UsageRow]:
    """Usage per tenant (and per ``by``), sorted; nodes with no billable time are left out."""
    rows: dict[tuple[str, str | None], UsageRow] = {}
    for node in inputs:
        intervals = billed_intervals(t for t in node.transitions if t.at <= end)
        seconds = clipped_seconds(intervals, start, end)
        if seconds <= 0:
            continue
        group = None if by is None else str(getattr(node, by.value))
        row = rows.setdefault((node.tenant, group), UsageRow(node.tenant, group))
        row.nodes += 1
        row.gpu_seconds += seconds * node.gpu_count
        row.node_hours += seconds / 3600
        row.node_ids.append(node.node_id)
        if intervals and intervals[-1].end is None:
            row.counting_at_end += 1
        last = [t for t in node.transitions if t.at <= end][-1:]
        if last and last[0].to_status == NodeStatus.CLEANUP_FAILED.value:
            row.cleanup_failed += 1
    return [rows[key] for key in sorted(rows, key=lambda k: (k[0], k[1] or ""))]


async def load_usage_inputs(
    engine: AsyncEngine, *, tenant: str | None, end: datetime
) -> list[NodeUsageInput]:
    """Every node with a transition before ``end``, with its transitions in order."""
    statement = (
        select(
            nodes.c.node_id,
            nodes.c.tenant,
            nodes.c.deployment,
            nodes.c.spec,
            node_events.c.created_at,
            node_events.c.to_status,
        )
        .select_from(nodes.join(node_events, node_events.c.node_id == nodes.c.node_id))
        .where(node_events.c.created_at <= end)
        .order_by(nodes.c.node_id, node_events.c.id)
    )
    if tenant is not None:
        statement = statement.where(nodes.c.tenant == tenant)
    by_node: dict[str, tuple[Any, list[Transition]]] = {}
    async with engine.connect() as connection:
        for row in await connection.execute(statement):
            entry = by_node.setdefault(row.node_id, (row, []))
            entry[1].append(Transition(row.created_at, row.to_status))
    return [
        NodeUsageInput(
            node_id=row.node_id,
            tenant=row.tenant,
            deployment=row.deployment,
            model=str(row.spec.get("model", "")),
            gpu_type=str(row.spec.get("gpu_type", "")),
            gpu_count=int(row.spec.get("gpu_count", 1)),
            transitions=transitions,
        )
        for row, transitions in by_node.values()
    ]
