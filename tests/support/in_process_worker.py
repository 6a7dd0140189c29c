"""The worker running in the test's own process, built exactly as worker.py builds it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from temporalio.client import Client

from controlplane.config import Settings
from worker import create_worker, open_activities


@contextlib.asynccontextmanager
async def in_process_worker(client: Client, settings: Settings) -> AsyncIterator[None]:
    """The activities' dependencies opened from ``settings`` and the workers polling through
    ``client``, until the block ends; the start-up checks run as in worker.py."""
    async with (
        open_activities(settings) as activities,
        create_worker(client, settings, activities),
    ):
        yield
