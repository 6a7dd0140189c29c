"""The relay as a background task of the worker, on only when EVENTS_NATS_URL is set.

NATS being down never stops the worker: connecting is retried in the background, and the
relay resumes from its stored position once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncEngine

from controlplane.config import Settings
from controlplane.events.nats_publisher import open_publisher
from controlplane.events.relay import EventRelay, LagObserver

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def relay_in_background(
    settings: Settings, engine: AsyncEngine, observer: LagObserver | None = None
) -> AsyncIterator[asyncio.Task[None] | None]:
    """Run the relay while the block runs; yields None (and does nothing) when it is off."""
    if settings.events_nats_url is None:
        yield None
        return
    task = asyncio.create_task(_serve(settings, engine, observer), name="event-relay")
    try:
        yield task
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _serve(settings: Settings, engine: AsyncEngine, observer: LagObserver | None) -> None:
    assert settings.events_nats_url is not None
    url = settings.events_nats_url.get_secret_value()
    wait_s = settings.events_relay_poll_interval.total_seconds()
    while True:
        try:
            async with open_publisher(
                url, duplicate_window=settings.events_nats_duplicate_window
            ) as publisher:
                log.info("event relay: connected to NATS, stream ready")
                relay = EventRelay(
                    engine,
                    publisher,
                    batch_size=settings.events_relay_batch_size,
                    poll_interval_s=wait_s,
                    observer=observer,
                )
                await relay.run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - NATS unreachable: retry, never stop the worker
            # The message never includes the URL, which may carry a password.
            log.warning(
                "event relay: NATS unavailable (%s); retrying in %ss", type(exc).__name__, wait_s
            )
        await asyncio.sleep(wait_s)
