"""Issue 8.6: a user or password in SKYPILOT_API_SERVER_URL, DATABASE_URL or TEMPORAL_ADDRESS is
never printed: not in configuration errors, start-up logs, nor ``starter health``.

The addresses below point at loopback ports where nothing (or nothing that knows the user)
listens, so every dependency fails and every error path is taken.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

import pytest

from controlplane.config import load_settings
from controlplane.db.url import redact_database_url
from controlplane.logs import REDACTOR
from controlplane.urls import redact_url, scrub, url_credentials
from tests.support.ports import free_port
from tests.support.processes import run_text
from tests.support.settings_errors import refused
from worker import open_activities, serve

ROOT = Path(__file__).resolve().parents[2]
USER = "alice-url-user"
PASSWORD = "pw-S3cret-in-url"  # an '@' and a '/' in a raw password must not break redaction
RAW_PASSWORD = "pw@S3cret/in?url"
LEAKS = (USER, PASSWORD, RAW_PASSWORD, "S3cret")


def addresses() -> dict[str, str]:
    closed = free_port()
    return {
        "SKYPILOT_API_SERVER_URL": f"http://{USER}:{PASSWORD}@127.0.0.1:{closed}",
        # Postgres answers (trust), and names the unknown role in its error.
        "DATABASE_URL": f"postgresql://{USER}:{PASSWORD}@127.0.0.1:5432/no_such_db_for_url_test",
        "TEMPORAL_ADDRESS": f"{USER}:{PASSWORD}@127.0.0.1:{free_port()}",
        "METRICS_PORT": "0",
    }


def assert_no_credentials(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} printed in:\n{text}"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"http://{USER}:{PASSWORD}@api:46580", "http://***@api:46580"),
        (f"https://{USER}@api/prefix?token=x#f", "https://***@api/prefix"),
        (f"postgresql://{USER}:{RAW_PASSWORD}@db:5432/cp", "postgresql://***@db:5432/cp"),
        (f"{USER}:{PASSWORD}@temporal:7233", "***@temporal:7233"),
        ("temporal:7233", "temporal:7233"),
        ("postgresql://db/cp?user=u&password=p", "postgresql://db/cp"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_masks_the_address_and_its_user_and_password_as_words() -> None:
    url = f"postgresql://{USER}:{RAW_PASSWORD}@db/cp"
    message = f'role "{USER}" does not exist at {url}; password {RAW_PASSWORD}; postgresql ok'
    scrubbed = scrub(message, url)
    assert_no_credentials(scrubbed)
    assert "postgresql://***@db/cp" in scrubbed
    assert scrubbed.endswith("postgresql ok")
    assert url_credentials(url) == (USER, RAW_PASSWORD)
    assert url_credentials("postgresql://db/cp?user=u1&password=p1") == ("u1", "p1")


def test_the_database_url_is_shown_without_user_or_password() -> None:
    shown = redact_database_url(f"postgres://{USER}:{PASSWORD}@db:5432/cp?sslmode=require")
    assert shown == "postgresql+asyncpg://***@db:5432/cp"


@pytest.mark.parametrize("scheme", ["ftp", "file", ""])
def test_a_bad_api_url_error_hides_user_and_password(scheme: str) -> None:
    prefix = f"{scheme}://" if scheme else ""
    message = refused(
        {"SKYPILOT_API_SERVER_URL": f"{prefix}{USER}:{PASSWORD}@host:1"},
        "SKYPILOT_API_SERVER_URL",
        "not an http(s) URL",
    )
    assert_no_credentials(message)


def test_passwords_in_addresses_join_the_log_redactor() -> None:
    settings = load_settings(addresses())
    assert PASSWORD in settings.secret_values()


def test_starter_health_never_prints_a_user_or_password() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SKYPILOT_", "DATABASE_", "TEMPORAL_"))
    }
    env.update(addresses())
    result = run_text([sys.executable, "-m", "starter", "health"], env=env, cwd=ROOT, timeout=120)
    report = json.loads(result.stdout)
    assert report["ok"] is False
    # Every part failed, and each says where and why, without the credentials.
    assert report["temporal"]["ok"] is False
    assert report["temporal"]["address"].startswith("***@127.0.0.1:")
    assert report["database"]["ok"] is False
    assert report["database"]["url"].startswith("postgresql+asyncpg://***@127.0.0.1:5432/")
    assert "***" in report["database"]["error"]  # the driver named the role; it is masked
    assert report["skypilot_api"]["ok"] is False
    assert report["skypilot_api"]["url"].startswith("http://***@127.0.0.1:")
    assert (
        "cannot reach the SkyPilot API server at http://***@127.0.0.1:"
        in (report["skypilot_api"]["error"])
    )
    assert_no_credentials(result.stdout + result.stderr)


async def test_worker_start_up_logs_never_show_a_user_or_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The start-up lines: API client, API health, node-count refresh, Temporal connect."""
    settings = load_settings(addresses())
    caplog.set_level(logging.INFO)
    async with open_activities(settings):
        for _ in range(600):  # the node-count refresher's first database call fails
            if "could not refresh node counts" in caplog.text:
                break
            await asyncio.sleep(0.05)
    assert await serve(settings) == 1  # Temporal unreachable
    text = caplog.text
    assert "initialized SkyPilot API client api_url=http://***@127.0.0.1:" in text
    assert "SkyPilot API server health check failed" in text
    assert "could not refresh node counts" in text
    assert "cannot connect to Temporal at TEMPORAL_ADDRESS=***@127.0.0.1:" in text
    # caplog sees records before handlers' filters run: these are the raw messages.
    assert_no_credentials(text)
    assert REDACTOR.scrub(PASSWORD) == PASSWORD  # nothing above relied on the redactor
