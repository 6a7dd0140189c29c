"""The async engine and session factory every repository shares (one pool per process)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.ext.asyncio import create_async_engine as _create_async_engine

from controlplane.db.url import normalise_database_url


def create_engine(
    url: str,
    *,
    pool_size: int = 5,
    max_overflow: int = 10,
    pool_timeout_s: float = 30.0,
    echo: bool = False,
) -> AsyncEngine:
    """An asyncpg engine for ``url`` (any accepted DATABASE_URL form).

    ``pool_pre_ping`` survives a restarted or failed-over database; ``pool_recycle`` drops
    connections before typical proxy idle timeouts cut them.
    """
    return _create_async_engine(
        normalise_database_url(url),
        pool_pre_ping=True,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout_s,
        pool_recycle=1800,
        echo=echo,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions whose loaded values stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)
