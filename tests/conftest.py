"""Shared fixtures. A fresh, migrated PostgreSQL database for the session, dropped at the end.

The server is the one at TEST_DATABASE_ADMIN_URL (default: postgres@127.0.0.1:5432/test; the
``root`` role is tried too). An unreachable server fails the session loudly: these tests guard
the outbox and the credential store, and must never be skipped by accident.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from controlplane.db import migrate
from controlplane.db.engine import create_engine
from controlplane.db.repository import CredentialRepository, NodeRepository
from controlplane.db.url import normalise_database_url, redact_database_url

DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _admin_candidates() -> list[str]:
    configured = os.environ.get("TEST_DATABASE_ADMIN_URL")
    if configured:
        return [normalise_database_url(configured)]
    url = make_url(normalise_database_url(DEFAULT_ADMIN_URL))
    return [url.render_as_string(hide_password=False) for url in (url, url.set(username="root"))]


class Databases:
    """Creates uniquely named databases on the admin server and drops them all at the end."""

    def __init__(self, admin: AsyncEngine, admin_url: str) -> None:
        self.admin = admin
        self.admin_url = admin_url
        self.created: list[str] = []

    async def create(self, *, migrated: bool) -> str:
        name = f"cp_test_{uuid.uuid4().hex[:12]}"
        async with self.admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        self.created.append(name)
        url = make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)
        if migrated:
            migrate.upgrade(url)  # called with this loop running: migrate must cope
        return url

    async def drop_all(self) -> None:
        async with self.admin.connect() as connection:
            for name in self.created:
                await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[Databases]:
    problems = []
    for candidate in _admin_candidates():
        admin = create_async_engine(
            candidate, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool
        )
        try:
            async with admin.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except (SQLAlchemyError, OSError) as exc:
            problems.append(f"{redact_database_url(candidate)}: {type(exc).__name__}: {exc}")
            await admin.dispose()
            continue
        factory = Databases(admin, candidate)
        try:
            yield factory
        finally:
            await factory.drop_all()
            await admin.dispose()
        return
    pytest.fail(
        "PostgreSQL is not reachable for the database tests. Start it (e.g. "
        "`pg_ctlcluster 15 main start`, or `docker run -d -p 5432:5432 "
        "-e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`) or point TEST_DATABASE_ADMIN_URL at "
        "one. Tried:\n  " + "\n  ".join(problems),
        pytrace=False,
    )


@pytest.fixture(scope="session")
async def database_url(databases: Databases) -> str:
    """A database migrated to head, shared by the session's tests (use unique ids)."""
    return await databases.create(migrated=True)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    created = create_engine(database_url)
    try:
        yield created
    finally:
        await created.dispose()


@pytest.fixture
def nodes(engine: AsyncEngine) -> NodeRepository:
    return NodeRepository(engine)


@pytest.fixture
def credential_rows(engine: AsyncEngine) -> CredentialRepository:
    return CredentialRepository(engine)
