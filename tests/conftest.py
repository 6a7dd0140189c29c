"""Shared fixtures: the Temporal dev server (``dev_server``, one per session, built as
devtools.devstack builds it for the demo) and a fresh, migrated PostgreSQL database for the
session, dropped at the end.

The server is the one at TEST_DATABASE_ADMIN_URL (default: postgres@127.0.0.1:5432/test; the
``root`` role is tried too). An unreachable server fails the session loudly: these tests guard
the outbox and the credential store, and must never be skipped by accident.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.testing import WorkflowEnvironment

from controlplane.db.engine import create_engine
from controlplane.db.repository import CredentialRepository, NodeRepository
from devtools.devstack import ServerDatabases, reachable_server
from tests.support.temporal_env import local_temporal


@pytest.fixture(scope="session")
async def databases() -> AsyncIterator[ServerDatabases]:
    try:
        factory = await reachable_server(os.environ.get("TEST_DATABASE_ADMIN_URL"), "cp_test")
    except RuntimeError as exc:
        pytest.fail(
            "PostgreSQL is not reachable for the database tests. Start it (e.g. "
            "`pg_ctlcluster 15 main start`, or `docker run -d -p 5432:5432 "
            "-e POSTGRES_HOST_AUTH_METHOD=trust postgres:16`) or point TEST_DATABASE_ADMIN_URL at "
            f"one. {exc}",
            pytrace=False,
        )
    try:
        yield factory
    finally:
        await factory.drop_all()


@pytest.fixture(scope="session")
async def database_url(databases: ServerDatabases) -> str:
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


@pytest.fixture(scope="session")
async def dev_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[WorkflowEnvironment]:
    """The real Temporal dev server with the control plane's search attributes, for the session
    (tests use their own task queues and workflow ids)."""
    async with local_temporal(tmp_path_factory.mktemp("temporal")) as (environment, _):
        yield environment
