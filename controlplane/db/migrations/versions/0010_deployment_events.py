"""Deployment events: the deployments' append-only outbox (repairs, replacements, rollouts).

Revision ID: 0010
Revises: 0001 (chained after 0009 on this branch; the lead orders the final chain)
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "deployment_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("tenant", sa.Text(), nullable=False),
        sa.Column("deployment", sa.Text(), nullable=False),
        sa.Column("generation", sa.Text(), nullable=False),
        sa.Column("workflow_id", sa.Text(), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("replica", sa.BigInteger(), nullable=True),
        sa.Column("node_id", sa.Text(), nullable=True),
        sa.Column(
            "payload",
            postgresql.JSONB(astext_type=sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'::jsonb"),
        ),
        sa.Column("dedupe_key", sa.Text(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("id", name="pk_deployment_events"),
        sa.UniqueConstraint("dedupe_key", name="uq_deployment_events_dedupe_key"),
    )
    op.create_index(
        "ix_deployment_events_deployment", "deployment_events", ["tenant", "deployment"]
    )
    # Append-only, with the function 0001 made for node_events.
    op.execute(
        "CREATE TRIGGER deployment_events_no_update_or_delete BEFORE UPDATE OR DELETE "
        "ON deployment_events FOR EACH ROW EXECUTE FUNCTION node_events_append_only()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS deployment_events_no_update_or_delete ON deployment_events")
    op.drop_index("ix_deployment_events_deployment", table_name="deployment_events")
    op.drop_table("deployment_events")
