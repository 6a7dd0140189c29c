"""Run and check Alembic migrations from code (scripts, tests, the worker's start-up).

The functions are synchronous. Alembic's env.py drives the asyncpg engine with
``asyncio.run``, which cannot nest inside a running event loop, so when the calling thread has
one the work moves to a short-lived thread (the caller's loop is blocked meanwhile).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from controlplane.db.schema import Base
from controlplane.db.url import normalise_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

T = TypeVar("T")


def alembic_config(url: str | None = None) -> Config:
    """A Config that needs no alembic.ini; the URL travels in ``attributes`` (no % escaping)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = normalise_database_url(url)
    return config


def head_revision() -> str:
    """The newest revision in ``migrations/versions``."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships 0001
        raise RuntimeError("no migrations found in " + str(MIGRATIONS_DIR))
    return head


def upgrade(url: str, revision: str = "head") -> None:
    """``alembic upgrade head`` against ``url``; safe to call from many processes at once."""
    config = alembic_config(url)
    _outside_event_loop(lambda: command.upgrade(config, revision))


def downgrade(url: str, revision: str) -> None:
    """``alembic downgrade <revision>`` (``base`` removes every table)."""
    config = alembic_config(url)
    _outside_event_loop(lambda: command.downgrade(config, revision))


@dataclass(frozen=True)
class MigrationStatus:
    """Where a database stands against the migrations and against schema.py."""

    current: tuple[str, ...]
    head: str
    differences: tuple[str, ...]

    @property
    def at_head(self) -> bool:
        return self.current == (self.head,)

    @property
    def ok(self) -> bool:
        return self.at_head and not self.differences

    def describe(self) -> str:
        current = ", ".join(self.current) or "none (empty database)"
        if not self.at_head:
            return (
                f"database is at revision {current}, head is {self.head}; "
                "run `python -m controlplane.db migrate`"
            )
        if self.differences:
            return f"database is at head {self.head} but differs from schema.py: " + "; ".join(
                self.differences
            )
        return f"database is at head {self.head} and matches schema.py"


def status(url: str) -> MigrationStatus:
    """The database's revision, the head, and any difference from schema.py's tables."""
    head = head_revision()
    current, differences = _outside_event_loop(lambda: asyncio.run(_inspect(url)))
    return MigrationStatus(current=current, head=head, differences=differences)


async def _inspect(url: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    engine = create_async_engine(normalise_database_url(url), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(_inspect_sync)
    finally:
        await engine.dispose()


def _inspect_sync(connection: Connection) -> tuple[tuple[str, ...], tuple[str, ...]]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    current = tuple(sorted(context.get_current_heads()))
    if not current:
        return current, ()
    diffs: list[Any] = compare_metadata(context, Base.metadata)
    return current, tuple(_describe_diff(d) for d in diffs)


def _describe_diff(diff: Any) -> str:
    # Alembic gives tuples like ("add_table", Table) or lists of ("modify_type", ...).
    items = diff if isinstance(diff, list) else [diff]
    parts = []
    for item in items:
        kind, *rest = item
        names = [getattr(x, "name", None) or str(x) for x in rest if x is not None]
        parts.append(f"{kind} {' '.join(str(n) for n in names[:3])}".strip())
    return ", ".join(parts)


def _outside_event_loop(work: Callable[[], T]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return work()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="alembic") as executor:
        return executor.submit(work).result()
