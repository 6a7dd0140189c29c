"""The event feed from Python: an async iterator that remembers its cursor.

    async with EventStream(settings.database_url) as stream:
        async for event in stream.events(since=saved_cursor, tenant="acme", follow=True):
            handle(event)
            saved_cursor = stream.cursor   # store it; resume from it after a restart

Each event comes exactly once, in commit order; resuming from a stored cursor neither skips nor
repeats (docs/events.md).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from types import TracebackType

from controlplane.db.engine import create_engine
from controlplane.events.feed import EventFeed, FeedEvent, FeedFilter
from controlplane.lifecycle import EventType


def event_type(text: str) -> str:
    """``ready`` or ``node.ready`` -> ``node.ready``; ValueError naming the choices otherwise."""
    wanted = text if text.startswith("node.") else f"node.{text}"
    if wanted not in {e.value for e in EventType}:
        choices = ", ".join(e.value.removeprefix("node.") for e in EventType)
        raise ValueError(f"unknown event type {text!r}; expected one of {choices}")
    return wanted


class EventStream:
    """The feed over one database connection pool; close it with ``async with`` or ``aclose``."""

    def __init__(self, database_url: str) -> None:
        self._engine = create_engine(database_url, pool_size=2, max_overflow=0)
        self._feed = EventFeed(self._engine)
        self.cursor = 0

    async def events(
        self,
        since: int = 0,
        *,
        tenant: str | None = None,
        node_id: str | None = None,
        type: str | None = None,
        follow: bool = False,
        limit: int | None = None,
        poll_interval_s: float = 5.0,
    ) -> AsyncGenerator[FeedEvent, None]:
        """Events after ``since`` (``follow``: then wait for new ones); ``cursor`` tracks them."""
        if since < 0:
            raise ValueError(f"since must be a cursor (0 or more), not {since}")
        where = FeedFilter(
            tenant=tenant, node_id=node_id, type=None if type is None else event_type(type)
        )
        self.cursor = since
        async for event in self._feed.events(
            since, where=where, follow=follow, limit=limit, poll_interval_s=poll_interval_s
        ):
            self.cursor = event.cursor
            yield event

    async def aclose(self) -> None:
        await self._engine.dispose()

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
