"""The embedded PostgreSQL of the local stack: start, migrate, write, stop (also as root)."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from controlplane.db import migrate
from controlplane.db.embedded import start_embedded_postgres
from controlplane.db.engine import create_engine
from controlplane.db.repository import NewNode, NodeRepository
from controlplane.lifecycle import LaunchMode

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def pgdata() -> Iterator[Path]:
    """A data directory in the checkout, as the dev stack uses (.dev-stack/pgdata).

    Not under pytest's tmp_path: pytest keeps its base directory 0700 (and resets it whenever a
    session starts), while as root PostgreSQL runs as the `pgserver` user, who must reach it.
    """
    path = REPO / ".cache" / f"test-pgdata-{uuid.uuid4().hex[:8]}"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def test_start_migrate_write_stop(pgdata: Path) -> None:
    started = time.monotonic()
    server = await asyncio.to_thread(start_embedded_postgres, pgdata)
    try:
        assert server.url.startswith("postgresql+asyncpg://")
        if os.geteuid() == 0:
            assert server.system_user == "pgserver"
        migrate.upgrade(server.url)
        assert migrate.status(server.url).ok
        engine = create_engine(server.url)
        try:
            node = NewNode(
                node_id="embedded-node",
                tenant="acme",
                deployment="default",
                replica=0,
                cluster_name="cpn-embedded-0",
                spec={},
                launch_mode=LaunchMode.CLI,
                workflow_id="node-embedded",
            )
            row = await NodeRepository(engine).record_intent(node)
            assert row.status == "pending"
            async with engine.connect() as connection:
                version = await connection.scalar(text("SHOW server_version"))
            assert str(version).startswith("16")
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(server.stop)

    with pytest.raises(OSError, match=r"No such file|Connect call failed"):  # socket gone
        migrate.status(server.url)
    assert time.monotonic() - started < 20

    restarted = await asyncio.to_thread(start_embedded_postgres, pgdata)
    try:
        engine = create_engine(restarted.url)
        try:
            found = await NodeRepository(engine).get("embedded-node")
            assert found is not None  # the data survived the restart
        finally:
            await engine.dispose()
    finally:
        await asyncio.to_thread(restarted.stop)
