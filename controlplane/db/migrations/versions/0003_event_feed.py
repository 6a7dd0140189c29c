"""The commit-ordered event feed: a transaction id on each event, the feed, relay positions.

``node_events`` stays append-only: it only gains ``txid`` (the id of the transaction that wrote
the event, from ``pg_current_xact_id()``, a server default) and a trigger that wakes LISTENers
when events commit. Everything the feed and the relay write lives in tables of their own.

Revision ID: 0003
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TXID_DEFAULT = "(pg_current_xact_id()::text)::bigint"
NOTIFY_FUNCTION = """
CREATE FUNCTION node_events_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('node_events', '');
    RETURN NULL;
END;
$$
"""


def upgrade() -> None:
    op.add_column(
        "node_events",
        sa.Column("txid", sa.BigInteger(), nullable=False, server_default=sa.text(TXID_DEFAULT)),
    )
    op.create_index("ix_node_events_txid", "node_events", ["txid"])
    op.execute(NOTIFY_FUNCTION)
    op.execute(
        "CREATE TRIGGER node_events_notify AFTER INSERT ON node_events "
        "FOR EACH STATEMENT EXECUTE FUNCTION node_events_notify()"
    )
    op.create_table(
        "node_event_feed",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "sequenced_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("seq", name="pk_node_event_feed"),
        sa.ForeignKeyConstraint(
            ["event_id"], ["node_events.id"], name="fk_node_event_feed_event_id_node_events"
        ),
        sa.UniqueConstraint("event_id", name="uq_node_event_feed_event_id"),
    )
    op.create_table(
        "event_feed_state",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.PrimaryKeyConstraint("name", name="pk_event_feed_state"),
    )


def downgrade() -> None:
    op.drop_table("event_feed_state")
    op.drop_table("node_event_feed")
    op.execute("DROP TRIGGER node_events_notify ON node_events")
    op.execute("DROP FUNCTION node_events_notify()")
    op.drop_index("ix_node_events_txid", table_name="node_events")
    op.drop_column("node_events", "txid")
