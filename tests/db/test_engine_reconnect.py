"""The worker's engine has no pre-ping (issue 11): a pooled connection the database dropped
fails ONE attempt with a retryable error, and the next attempt gets a fresh connection."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.db.engine import create_engine
from controlplane.db.errors import DATABASE_ERRORS
from controlplane.db.repository import NodeRepository
from workflows.options import DATABASE


@pytest.fixture
async def unpinged(database_url: str) -> AsyncIterator[AsyncEngine]:
    created = create_engine(database_url, pool_size=1, max_overflow=0, pre_ping=False)
    try:
        yield created
    finally:
        await created.dispose()


async def backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int((await connection.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def terminate_backend(admin: AsyncEngine, pid: int) -> None:
    """What a database restart or failover does to a pooled connection."""
    async with admin.connect() as connection:
        killed = await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        assert killed.scalar_one() is True


async def test_a_dropped_pooled_connection_fails_one_retryable_attempt(
    unpinged: AsyncEngine, engine: AsyncEngine
) -> None:
    nodes = NodeRepository(unpinged)
    before = await backend_pid(unpinged)  # the pool's only connection, checked back in
    await terminate_backend(engine, before)

    with pytest.raises(DATABASE_ERRORS) as failed:
        await nodes.count_by_status()

    # A disconnect, not a bad statement: SQLAlchemy invalidates the pool, and the database
    # step's retry policy retries it (its type is not one of the permanent ones).
    assert isinstance(failed.value, DBAPIError)
    assert failed.value.connection_invalidated
    permanent = DATABASE.retry_policy.non_retryable_error_types or ()
    assert type(failed.value).__name__ not in permanent
    # The retry works on a new connection.
    assert isinstance(await nodes.count_by_status(), dict)
    assert await backend_pid(unpinged) != before
