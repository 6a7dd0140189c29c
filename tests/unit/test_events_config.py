"""EVENTS_* settings: off by default (nothing published, nothing fails), clear errors."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controlplane.config import load_settings
from controlplane.events.service import relay_in_background
from starter.health import events_relay_health
from tests.support.settings_errors import refused


def test_off_by_default() -> None:
    settings = load_settings({})
    assert settings.events_nats_url is None
    assert settings.events_relay_batch_size == 100
    assert settings.events_relay_poll_interval == timedelta(seconds=5)
    assert settings.events_nats_duplicate_window == timedelta(hours=1)


def test_reads_the_variables() -> None:
    settings = load_settings(
        {
            "EVENTS_NATS_URL": " nats://relay:s3cret@nats.internal:4222 ",
            "EVENTS_RELAY_BATCH_SIZE": "50",
            "EVENTS_RELAY_POLL_INTERVAL": "250ms",
            "EVENTS_NATS_DUPLICATE_WINDOW": "2h",
        }
    )
    assert settings.events_nats_url is not None
    assert settings.events_nats_url.get_secret_value() == "nats://relay:s3cret@nats.internal:4222"
    assert "s3cret" not in repr(settings)
    assert settings.events_relay_batch_size == 50
    assert settings.events_relay_poll_interval == timedelta(milliseconds=250)
    assert settings.events_nats_duplicate_window == timedelta(hours=2)


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("EVENTS_NATS_URL", "http://user:s3cret@nats:4222", "nats://127.0.0.1:4222"),
        ("EVENTS_NATS_URL", "s3cret", "nats://127.0.0.1:4222"),
        ("EVENTS_RELAY_BATCH_SIZE", "0", "greater than or equal to 1"),
        ("EVENTS_RELAY_POLL_INTERVAL", "0s", "positive"),
        ("EVENTS_NATS_DUPLICATE_WINDOW", "soon", "duration"),
    ],
)
def test_bad_values_name_the_variable_and_never_echo_it(
    name: str, value: str, expected: str
) -> None:
    message = refused({name: value}, name, expected)
    assert "s3cret" not in message


async def test_unset_url_starts_no_relay_and_health_says_so() -> None:
    settings = load_settings({})
    async with relay_in_background(settings, engine=None) as task:  # type: ignore[arg-type]
        assert task is None
    assert await events_relay_health(settings) == {"ok": True, "enabled": False}
