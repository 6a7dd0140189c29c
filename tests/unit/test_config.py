"""Configuration: the guide's names and defaults, and clear start-up failures."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from datetime import timedelta

import pytest

from controlplane.config import ConfigError, Settings, load_settings
from controlplane.durations import format_duration, parse_duration
from tests.support.settings_errors import refused

KEY = base64.b64encode(os.urandom(32)).decode()
TOKEN = "sky_eyJhbGciOiJIUzI1NiJ9.payload.signature"


def test_guide_defaults() -> None:
    settings = load_settings({})
    assert settings.skypilot_use_api_server is False
    assert settings.skypilot_launch_timeout == timedelta(minutes=10)
    assert settings.skypilot_terminate_timeout == timedelta(minutes=5)
    assert settings.skypilot_status_timeout == timedelta(seconds=30)
    assert settings.skypilot_max_retries == 3
    assert settings.skypilot_retry_backoff == timedelta(seconds=5)
    assert settings.skypilot_submit_commit_horizon == timedelta(seconds=30)
    assert settings.skypilot_api_server_url is None
    assert settings.skypilot_credential_encryption_key is None


def test_reads_the_guide_variable_names() -> None:
    settings = load_settings(
        {
            "SKYPILOT_API_SERVER_URL": "https://sky.example.com/",
            "SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN,
            "SKYPILOT_USE_API_SERVER": "true",
            "SKYPILOT_LAUNCH_TIMEOUT": "1h30m",
            "SKYPILOT_TERMINATE_TIMEOUT": "90s",
            "SKYPILOT_STATUS_TIMEOUT": "250ms",
            "SKYPILOT_MAX_RETRIES": "0",
            "SKYPILOT_RETRY_BACKOFF": "2s",
            "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": KEY,
        }
    )
    assert settings.skypilot_api_server_url == "https://sky.example.com"
    assert settings.skypilot_launch_timeout == timedelta(hours=1, minutes=30)
    assert settings.skypilot_terminate_timeout == timedelta(seconds=90)
    assert settings.skypilot_status_timeout == timedelta(milliseconds=250)
    assert settings.skypilot_max_retries == 0
    assert settings.encryption_key == base64.b64decode(KEY)


def test_fleet_health_defaults() -> None:
    settings = load_settings({})
    assert settings.model_probe_path == "/health"
    assert settings.model_probe_interval == timedelta(seconds=30)
    assert settings.model_probe_timeout == timedelta(seconds=5)
    assert settings.model_probe_threshold == 3
    assert settings.model_probe_startup_grace == timedelta(minutes=2)
    assert settings.model_probe_check_models is False
    assert settings.model_probe_shards == 16
    assert settings.skypilot_max_inflight_launches == 8
    assert load_settings({"MODEL_PROBE_STARTUP_GRACE": "0s"}).model_probe_startup_grace == (
        timedelta(0)
    )


def test_hex_key_is_accepted() -> None:
    key = os.urandom(32)
    settings = load_settings({"SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": key.hex()})
    assert settings.encryption_key == key


@pytest.mark.parametrize(
    ("env", "variable", "expected"),
    [
        (
            {"SKYPILOT_USE_API_SERVER": "true", "SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN},
            "SKYPILOT_API_SERVER_URL",
            "required",
        ),
        (
            {"SKYPILOT_USE_API_SERVER": "true", "SKYPILOT_API_SERVER_URL": "http://x:1"},
            "SKYPILOT_SERVICE_ACCOUNT_TOKEN",
            "required",
        ),
        ({"SKYPILOT_LAUNCH_TIMEOUT": "ten minutes"}, "SKYPILOT_LAUNCH_TIMEOUT", "Go duration"),
        ({"SKYPILOT_RETRY_BACKOFF": "-5s"}, "SKYPILOT_RETRY_BACKOFF", "positive"),
        ({"SKYPILOT_MAX_RETRIES": "-1"}, "SKYPILOT_MAX_RETRIES", "greater than or equal to 0"),
        (
            {"SKYPILOT_SUBMIT_COMMIT_HORIZON": "5m"},
            "SKYPILOT_SUBMIT_COMMIT_HORIZON",
            "at most 90s",
        ),
        ({"SKYPILOT_SUBMIT_COMMIT_HORIZON": "0s"}, "SKYPILOT_SUBMIT_COMMIT_HORIZON", "positive"),
        ({"NODE_LOST_SECOND_LOOK": "10m"}, "NODE_LOST_SECOND_LOOK", "at most 300s"),
        ({"NODE_LOST_SECOND_LOOK": "0s"}, "NODE_LOST_SECOND_LOOK", "positive"),
        ({"ADMISSION_MAX_CONCURRENT_WAITS": "0"}, "ADMISSION_MAX_CONCURRENT_WAITS", "greater"),
        ({"SKYPILOT_API_SERVER_URL": "ftp://sky"}, "SKYPILOT_API_SERVER_URL", "http(s)"),
        ({"SKYPILOT_API_SERVER_URL": "sky.example.com"}, "SKYPILOT_API_SERVER_URL", "http(s)"),
        (
            {"SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": "your-32-byte-encryption-key"},
            "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY",
            "os.urandom(32)",
        ),
        (
            {"SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": "a" * 32},
            "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY",
            "32 random bytes",
        ),
        (
            {"SKYPILOT_SERVICE_ACCOUNT_TOKEN": "sa_123456789"},
            "SKYPILOT_SERVICE_ACCOUNT_TOKEN",
            "starts with 'sky_'",
        ),
        ({"TEMPORAL_TLS_CERT": "/nonexistent/cert.pem"}, "TEMPORAL_TLS_CERT", "PEM file"),
        ({"MODEL_PROBE_PATH": "health"}, "MODEL_PROBE_PATH", "should match pattern"),
        ({"MODEL_PROBE_INTERVAL": "0s"}, "MODEL_PROBE_INTERVAL", "positive"),
        ({"FLEET_HEALTH_LEASE": "0s"}, "FLEET_HEALTH_LEASE", "positive"),
        (
            {"FLEET_HEALTH_LEASE": "5m", "NODE_HEALTH_CHECK_INTERVAL": "10m"},
            "FLEET_HEALTH_LEASE",
            "at least NODE_HEALTH_CHECK_INTERVAL",
        ),
        ({"MODEL_PROBE_STARTUP_GRACE": "-1m"}, "MODEL_PROBE_STARTUP_GRACE", "zero or more"),
        ({"MODEL_PROBE_THRESHOLD": "0"}, "MODEL_PROBE_THRESHOLD", "greater than or equal to 1"),
        (
            {"SKYPILOT_MAX_INFLIGHT_LAUNCHES": "0"},
            "SKYPILOT_MAX_INFLIGHT_LAUNCHES",
            "greater than or equal to 1",
        ),
    ],
)
def test_startup_failures_name_the_variable(
    env: dict[str, str], variable: str, expected: str
) -> None:
    refused(env, variable, expected)


def test_secrets_never_in_repr_or_errors() -> None:
    settings = load_settings(
        {"SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN, "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": KEY}
    )
    assert TOKEN not in repr(settings)
    assert KEY not in repr(settings)
    assert TOKEN not in str(settings.model_dump())
    bad_key = "not-a-key-but-a-long-passphrase-someone-typed"
    with pytest.raises(ConfigError) as failure:
        load_settings(
            {
                "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": bad_key,
                "SKYPILOT_SERVICE_ACCOUNT_TOKEN": "wrong_" + TOKEN,
            }
        )
    assert bad_key not in str(failure.value)
    assert TOKEN not in str(failure.value)


def test_secret_values_feed_the_redactor() -> None:
    settings = load_settings(
        {"SKYPILOT_SERVICE_ACCOUNT_TOKEN": TOKEN, "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": KEY}
    )
    assert set(settings.secret_values()) == {TOKEN, KEY}


def test_process_environment_is_read() -> None:
    code = (
        "from controlplane.config import Settings; "
        "print(Settings().skypilot_status_timeout.total_seconds())"
    )
    env = {**os.environ, "SKYPILOT_STATUS_TIMEOUT": "45s"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "45.0"
    assert isinstance(Settings.model_fields["skypilot_max_retries"].default, int)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10m", 600),
        ("30s", 30),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("1.5h", 5400),
        ("0", 0),
        ("2h45m30s", 9930),
    ],
)
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "m", "10 m", "10x", "1h-30m", "ten"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for text in ("10m", "30s", "1h30m"):
        assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


def test_deployment_settings_fill_the_controllers_policy() -> None:
    from starter.api import deployment_policy
    from workflows.models import ReplaceOrder

    policy = deployment_policy(
        load_settings(
            {
                "DEPLOYMENT_REPLACE_ORDER": "old_first",
                "DEPLOYMENT_BACKOFF_INITIAL": "5s",
                "DEPLOYMENT_BACKOFF_MAX": "1m",
                "DEPLOYMENT_CRASH_LOOP_THRESHOLD": "4",
                "DEPLOYMENT_ROLLOUT_DEADLINE": "1h",
                "DEPLOYMENT_SPOT_FALLBACK_AFTER": "2",
            }
        )
    )
    assert policy.replace_order is ReplaceOrder.OLD_FIRST
    assert (policy.backoff_initial_s, policy.backoff_max_s) == (5, 60)
    assert policy.crash_loop_threshold == 4
    assert policy.rollout_deadline_s == 3600
    assert policy.spot_fallback_after == 2
    assert deployment_policy(load_settings({})).spot_fallback_after is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DEPLOYMENT_REPLACE_ORDER", "sideways"),
        ("DEPLOYMENT_BACKOFF_INITIAL", "0s"),
        ("DEPLOYMENT_CRASH_LOOP_THRESHOLD", "0"),
        ("DEPLOYMENT_SPOT_FALLBACK_AFTER", "-1"),
    ],
)
def test_bad_deployment_settings_name_the_variable(name: str, value: str) -> None:
    refused({name: value}, name)
