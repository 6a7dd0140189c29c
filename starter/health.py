"""`python -m starter health`: is every dependency reachable and as expected? One JSON answer.

Addresses are shown without the user or password they may carry (controlplane.urls).
"""

from __future__ import annotations

import asyncio
import shutil
from typing import Any

from controlplane.config import Settings
from controlplane.db.engine import create_engine
from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.db.migrate import status as migration_status
from controlplane.db.url import redact_database_url
from controlplane.events.relay import relay_lag
from controlplane.skypilot.client import Identity, SkyPilotClient
from controlplane.skypilot.errors import SkyPilotError
from controlplane.skypilot.retry import RetryPolicy
from controlplane.urls import redact_url, scrub
from starter.connection import connect


async def temporal_health(settings: Settings) -> dict[str, Any]:
    try:
        async with asyncio.timeout(10):
            client = await connect(settings)
            await client.service_client.check_health()
    except (RuntimeError, TimeoutError) as exc:
        return {
            "ok": False,
            "address": redact_url(settings.temporal_address),
            "error": scrub(str(exc), settings.temporal_address) or "timeout",
        }
    return {
        "ok": True,
        "address": redact_url(settings.temporal_address),
        "namespace": settings.temporal_namespace,
        "task_queue": settings.temporal_task_queue,
    }


def database_health(settings: Settings) -> dict[str, Any]:
    if not settings.database_url:
        return {"ok": False, "error": "DATABASE_URL is not set"}
    where = redact_database_url(settings.database_url)
    try:
        migrations = migration_status(settings.database_url)
    except DATABASE_ERRORS as exc:
        error = scrub(summarize_database_error(exc), settings.database_url)
        return {"ok": False, "url": where, "error": error}
    return {"ok": migrations.ok, "url": where, "migrations": migrations.describe()}


async def skypilot_api_health(settings: Settings) -> dict[str, Any]:
    if not settings.skypilot_api_server_url:
        return {"ok": not settings.skypilot_use_api_server, "configured": False}
    async with SkyPilotClient(
        settings.skypilot_api_server_url,
        token=settings.skypilot_service_account_token,
        identity=Identity(settings.skypilot_user_id, settings.skypilot_user_name),
        retry=RetryPolicy(max_retries=0),
    ) as client:
        try:
            health = await client.health()
            await client.status(["controlplane-health-probe"])  # proves the token works too
        except SkyPilotError as exc:
            error = scrub(str(exc), settings.skypilot_api_server_url)
            return {
                "ok": False,
                "url": redact_url(settings.skypilot_api_server_url),
                "error": error,
            }
    return {
        "ok": health.healthy,
        "url": redact_url(settings.skypilot_api_server_url),
        "status": health.status,
        "version": health.version,
        "api_version": health.api_version,
    }


def sky_cli_health(settings: Settings) -> dict[str, Any]:
    path = shutil.which(settings.skypilot_cli_path)
    return {
        "ok": path is not None or settings.skypilot_use_api_server,
        "path": path or settings.skypilot_cli_path,
        "found": path is not None,
    }


async def events_relay_health(settings: Settings) -> dict[str, Any]:
    """The JetStream relay's lag, from the database (the relay may run in any worker)."""
    if settings.events_nats_url is None:
        return {"ok": True, "enabled": False}
    if not settings.database_url:
        return {"ok": False, "enabled": True, "error": "DATABASE_URL is not set"}
    engine = create_engine(settings.database_url, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as connection:
            lag = await relay_lag(connection)
    except DATABASE_ERRORS as exc:
        return {"ok": False, "enabled": True, "error": summarize_database_error(exc)}
    finally:
        await engine.dispose()
    return {
        "ok": True,
        "enabled": True,
        "lag_events": lag.events,
        "lag_seconds": round(lag.seconds, 3),
    }


async def check(settings: Settings) -> dict[str, Any]:
    report: dict[str, Any] = {
        "temporal": await temporal_health(settings),
        "database": await asyncio.to_thread(database_health, settings),
        "skypilot_api": await skypilot_api_health(settings),
        "sky_cli": sky_cli_health(settings),
        "events_relay": await events_relay_health(settings),
        "mode_for_new_nodes": "api" if settings.skypilot_use_api_server else "cli",
    }
    report["ok"] = all(part["ok"] for part in report.values() if isinstance(part, dict))
    return report
