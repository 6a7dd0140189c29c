"""The async engine and session factory every repository shares (one pool per process)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from controlplane.db.url import normalise_database_url

RECYCLE_S = 280  # under the idle timeouts of common proxies and load balancers (300 s and up)


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 30.0,
    pre_ping: bool = True,
    echo: bool = False,
) -> AsyncEngine:
    """An asyncpg engine for ``url`` (any accepted DATABASE_URL form).

    ``pre_ping`` checks each connection as it leaves the pool, so a restarted or failed-over
    database costs no failed call; on asyncpg the ping is a transaction of its own (``BEGIN``,
    ``;``, ``ROLLBACK``: three round trips before every checkout). Callers that retry anyway
    (the worker: every database step is retried, issue 11) turn it off and get one failed
    attempt per restart instead: the first statement on a dead connection raises a
    disconnect (``connection_invalidated``), and SQLAlchemy then discards every connection
    pooled before it. ``pool_recycle`` drops connections before typical proxy idle timeouts
    (5 min and more) cut them.
    """
    return _create_async_engine(
        normalise_database_url(url),
        pool_pre_ping=pre_ping,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        pool_recycle=RECYCLE_S,
        echo=echo,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose loaded values stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
