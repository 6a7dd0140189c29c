"""Initial schema: nodes, node_events (append-only outbox), tenant_credentials.

Written by hand to match controlplane/db/schema.py; tests/db compare the two. Values of the
CHECK constraints are spelled out here, not imported, so this file never changes meaning.

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = (
    "pending",
    "launching",
    "running",
    "terminating",
    "terminated",
    "failed",
    "lost",
    "cleanup_failed",
)
EVENT_TYPES = (
    "node.launched",
    "node.ready",
    "node.failed",
    "node.terminating",
    "node.terminated",
    "node.lost",
    "node.cleanup_failed",
)


def _in(column: str, values: Sequence[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _timestamp(name: str, *, nullable: bool = True, default_now: bool = False) -> sa.Column[Any]:
    return sa.Column(
        name,
        sa.DateTime(timezone=True),
        nullable=nullable,
        server_default=sa.text("now()") if default_now else None,
    )


APPEND_ONLY_FUNCTION = """
CREATE FUNCTION node_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'node_events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'the outbox is never rewritten; append a new event instead';
END;
$$
"""


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("deployment", sa.Text(), nullable=False),
        sa.Column("replica", sa.Integer(), nullable=False),
        sa.Column("cluster_name", sa.Text(), nullable=False),
        sa.Column("spec", postgresql.JSONB(), nullable=False),
        sa.Column("launch_mode", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False, server_default="pending"),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("endpoint", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        _timestamp("status_deadline_at"),
        _timestamp("created_at", nullable=False, default_now=True),
        _timestamp("updated_at", nullable=False, default_now=True),
        _timestamp("ready_at"),
        _timestamp("terminated_at"),
        sa.PrimaryKeyConstraint("node_id", name="pk_nodes"),
        sa.UniqueConstraint("cluster_name", name="uq_nodes_cluster_name"),
        sa.CheckConstraint(_in("launch_mode", ("api", "cli")), name=op.f("ck_nodes_launch_mode")),
        sa.CheckConstraint(_in("status", STATUSES), name=op.f("ck_nodes_status")),
    )
    op.create_index("ix_nodes_tenant", "nodes", ["tenant"])
    op.create_index("ix_nodes_status", "nodes", ["status"])
    op.create_index(
        "ix_nodes_deadline",
        "nodes",
        ["status_deadline_at"],
        postgresql_where=sa.text(_in("status", ("launching", "terminating"))),
    )

    op.create_table(
        "node_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("from_status", sa.Text(), nullable=False),
        sa.Column("to_status", sa.Text(), nullable=False),
        sa.Column(
            "payload",
            postgresql.JSONB(),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        _timestamp("created_at", nullable=False, default_now=True),
        sa.PrimaryKeyConstraint("id", name="pk_node_events"),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.node_id"], name="fk_node_events_node_id_nodes"
        ),
        sa.UniqueConstraint("dedupe_key", name="uq_node_events_dedupe_key"),
        sa.CheckConstraint(_in("event_type", EVENT_TYPES), name=op.f("ck_node_events_event_type")),
    )
    op.create_index("ix_node_events_node_id", "node_events", ["node_id"])
    op.execute(APPEND_ONLY_FUNCTION)
    op.execute(
        "CREATE TRIGGER node_events_no_update_or_delete BEFORE UPDATE OR DELETE ON node_events "
        "FOR EACH ROW EXECUTE FUNCTION node_events_append_only()"
    )
    op.execute(
        "CREATE TRIGGER node_events_no_truncate BEFORE TRUNCATE ON node_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION node_events_append_only()"
    )

    op.create_table(
        "tenant_credentials",
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("key_id", sa.Text(), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        _timestamp("created_at", nullable=False, default_now=True),
        _timestamp("updated_at", nullable=False, default_now=True),
        sa.PrimaryKeyConstraint("tenant", "provider", name="pk_tenant_credentials"),
    )


def downgrade() -> None:
    op.drop_table("tenant_credentials")
    op.execute("DROP TRIGGER IF EXISTS node_events_no_truncate ON node_events")
    op.execute("DROP TRIGGER IF EXISTS node_events_no_update_or_delete ON node_events")
    op.execute("DROP FUNCTION IF EXISTS node_events_append_only()")
    op.drop_index("ix_node_events_node_id", table_name="node_events")
    op.drop_table("node_events")
    op.drop_index("ix_nodes_deadline", table_name="nodes")
    op.drop_index("ix_nodes_status", table_name="nodes")
    op.drop_index("ix_nodes_tenant", table_name="nodes")
    op.drop_table("nodes")
