"""Fleet health: the ``unhealthy`` status and its events, model probes, launch admission slots.

Values of the CHECK constraints are spelled out here, not imported, so this file never changes
meaning. The status and event-type constraints are replaced by ones that also allow
``unhealthy`` and ``node.unhealthy``/``node.healthy``; a downgrade first fails if a row uses
them (it would violate the old constraint), rather than rewriting history.

Revision ID: 0009
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = (
    "pending",
    "launching",
    "running",
    "terminating",
    "terminated",
    "failed",
    "lost",
    "cleanup_failed",
)
NEW_STATUSES = (*OLD_STATUSES[:3], "unhealthy", *OLD_STATUSES[3:])
OLD_EVENT_TYPES = (
    "node.launched",
    "node.ready",
    "node.failed",
    "node.terminating",
    "node.terminated",
    "node.lost",
    "node.cleanup_failed",
)
NEW_EVENT_TYPES = (*OLD_EVENT_TYPES, "node.unhealthy", "node.healthy")


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _replace_checks(statuses: Sequence[str], event_types: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_nodes_status"), "nodes", type_="check")
    op.create_check_constraint(op.f("ck_nodes_status"), "nodes", _in("status", statuses))
    op.drop_constraint(op.f("ck_node_events_event_type"), "node_events", type_="check")
    op.create_check_constraint(
        op.f("ck_node_events_event_type"), "node_events", _in("event_type", event_types)
    )


def upgrade() -> None:
    _replace_checks(NEW_STATUSES, NEW_EVENT_TYPES)
    op.create_table(
        "model_probes",
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("last_probe_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("node_id", name="pk_model_probes"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name="fk_model_probes_node_id_nodes"
        ),
    )
    op.create_table(
        "launch_slots",
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("budget_key", sa.Text(), nullable=False),
        sa.Column(
            "enqueued_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column(
            "seen_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")
        ),
        sa.Column("granted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("node_id", name="pk_launch_slots"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name="fk_launch_slots_node_id_nodes"
        ),
    )
    op.create_index(
        "ix_launch_slots_queue", "launch_slots", ["budget_key", "granted_at", "enqueued_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_launch_slots_queue", table_name="launch_slots")
    op.drop_table("launch_slots")
    op.drop_table("model_probes")
    _replace_checks(OLD_STATUSES, OLD_EVENT_TYPES)
