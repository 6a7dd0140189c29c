"""Alembic environment: runs migrations through the asyncpg engine.

The URL comes from, in order: ``config.attributes["url"]`` (programmatic use, see
controlplane.db.migrate), ``-x url=...`` on the alembic command line, then DATABASE_URL.
A transaction-scoped advisory lock lets many workers start at once and migrate only once.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy import pool, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from controlplane.db.schema import Base
from controlplane.db.url import normalise_database_url

MIGRATION_LOCK_ID = 0x6370_6D69_6772  # "cpmigr": any fixed number, shared by every process

config = context.config
target_metadata = Base.metadata

if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_url() -> str:
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("DATABASE_URL")
    )
    if not url:
        raise RuntimeError(
            "DATABASE_URL is not set; expected postgresql://user:password@host:5432/dbname "
            "(or pass -x url=...)"
        )
    return normalise_database_url(str(url))


def run_migrations_offline() -> None:
    """Print the SQL instead of running it (``alembic upgrade head --sql``)."""
    context.configure(
        url=_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata)
    with context.begin_transaction():
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
        context.run_migrations()


async def run_migrations_online() -> None:
    engine = create_async_engine(_database_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
