"""Configuration from the environment, read once at each entry point and passed down.

Every variable of the integration guide keeps its name and default. A wrong value fails at
start-up with the variable's name and what was expected (:class:`ConfigError`), never with a
stack trace, and secret values (tokens, keys) never appear in a repr or an error message.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
from collections.abc import Mapping
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.durations import DURATION_HELP, parse_duration

KEY_HELP = (
    "32 random bytes, base64- or hex-encoded. Generate one with: "
    'python -c "import base64, os; print(base64.b64encode(os.urandom(32)).decode())"'
)


CODEC_TOKEN_MIN_LENGTH = 16
CODEC_TOKEN_HELP = 'generate one: python -c "import secrets; print(secrets.token_urlsafe(32))"'


class ConfigError(Exception):
    """A configuration mistake, worded for the person who set the variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def _to_duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]


def decode_key(text: str) -> bytes:
    """Decode a 32-byte key from hex or base64; the error never repeats the key."""
    raw = text.strip()
    candidates: list[bytes] = []
    if len(raw) == 64:
        with contextlib.suppress(ValueError):  # not hex: base64 is tried next
            candidates.append(bytes.fromhex(raw))
    for decoder in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decoder(raw + "=" * (-len(raw) % 4)))
        except (binascii.Error, ValueError):
            continue
    for key in candidates:
        if len(key) == 32:
            return key
    raise ValueError(
        f"not a valid key (a passphrase or a key of the wrong length); expected {KEY_HELP}"
    )


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key, stored beside each ciphertext to pick the key."""
    return hashlib.sha256(b"controlplane-key-id:" + key).hexdigest()[:12]


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class Settings(BaseSettings):
    """All settings. Field names are the environment variables, lower-cased."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore", env_file=None)

    # --- the integration guide's variables ---
    skypilot_api_server_url: str | None = None
    skypilot_service_account_token: SecretStr | None = None
    skypilot_use_api_server: bool = False
    skypilot_launch_timeout: Duration = timedelta(minutes=10)
    skypilot_terminate_timeout: Duration = timedelta(minutes=5)
    skypilot_status_timeout: Duration = timedelta(seconds=30)
    skypilot_max_retries: int = Field(default=3, ge=0, le=100)
    skypilot_retry_backoff: Duration = timedelta(seconds=5)
    skypilot_credential_encryption_key: SecretStr | None = None

    # --- SkyPilot access beyond the guide ---
    skypilot_credential_previous_keys: SecretStr | None = None  # comma-separated, decrypt only
    skypilot_cli_path: str = "sky"
    skypilot_user_id: str = Field(default="c0a7b1e5", pattern=r"^[0-9a-z-]{1,64}$")
    skypilot_user_name: str = Field(default="controlplane", min_length=1, max_length=64)

    # --- the node lifecycle ---
    node_health_check_interval: Duration = timedelta(seconds=60)
    node_cleanup_budget: Duration = timedelta(minutes=30)
    node_heartbeat_timeout: Duration = timedelta(seconds=30)

    # --- operations ---
    skypilot_api_rollout_percent: int = Field(default=100, ge=0, le=100)
    reconcile_interval: Duration = timedelta(minutes=5)
    reconcile_cleanup: bool = False
    reconcile_orphan_grace: Duration = timedelta(minutes=15)
    # A live row whose workflow ended: "adopt" resumes the node, "teardown" downs it.
    reconcile_recover_live: Literal["adopt", "teardown"] = "adopt"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # --- the rest of the system ---
    database_url: str | None = None
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "gpu-nodes"
    temporal_api_key: SecretStr | None = None
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    control_plane_url: str = "http://localhost:8080"
    vllm_version: str = Field(default="0.11.0", pattern=r"^[0-9A-Za-z.+-]+$")
    torch_version: str = Field(default="2.8.0", pattern=r"^[0-9A-Za-z.+-]+$")
    r2_endpoint: str | None = None
    r2_bucket: str | None = None
    r2_access_key_id: SecretStr | None = None
    r2_secret_access_key: SecretStr | None = None
    log_level: LogLevel = LogLevel.INFO

    # --- Temporal payload encryption and its codec server (starter/codec*.py) ---
    temporal_payload_encryption_key: SecretStr | None = None  # unset = plain payloads
    temporal_payload_previous_keys: SecretStr | None = None  # comma-separated, decrypt only
    codec_server_token: SecretStr | None = None
    codec_server_host: str = Field(default="127.0.0.1", min_length=1)
    codec_server_port: int = Field(default=8081, ge=1, le=65535)
    codec_server_cors_origins: str = "http://localhost:8233,http://127.0.0.1:8233"

    @field_validator("skypilot_api_server_url", "control_plane_url", "r2_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"{value!r} is not an http(s) URL; expected e.g. https://host:port")
        return value.rstrip("/")

    @field_validator(
        "skypilot_launch_timeout",
        "skypilot_terminate_timeout",
        "skypilot_status_timeout",
        "skypilot_retry_backoff",
        "node_health_check_interval",
        "node_cleanup_budget",
        "node_heartbeat_timeout",
        "reconcile_interval",
        "reconcile_orphan_grace",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"must be positive; expected {DURATION_HELP}")
        return value

    @field_validator("skypilot_service_account_token")
    @classmethod
    def _token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        if not value.get_secret_value().startswith("sky_"):
            raise ValueError("expected a SkyPilot service-account token, which starts with 'sky_'")
        return value

    @field_validator("skypilot_credential_encryption_key")
    @classmethod
    def _key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        decode_key(value.get_secret_value())
        return value

    @field_validator("skypilot_credential_previous_keys")
    @classmethod
    def _previous_keys_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        for part in value.get_secret_value().split(","):
            decode_key(part)
        return value

    @field_validator("temporal_payload_encryption_key")
    @classmethod
    def _payload_key_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        decode_key(value.get_secret_value())
        return value

    @field_validator("temporal_payload_previous_keys")
    @classmethod
    def _payload_previous_keys_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        parts = value.get_secret_value().split(",")
        for position, part in enumerate(parts, start=1):
            if not part.strip():
                continue
            try:
                decode_key(part)
            except ValueError as exc:
                raise ValueError(f"key #{position} of {len(parts)}: {exc}") from None
        return value

    @field_validator("codec_server_token")
    @classmethod
    def _codec_token_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value() == "":
            return None
        token = value.get_secret_value()
        if len(token) < CODEC_TOKEN_MIN_LENGTH or not all(33 <= ord(c) <= 126 for c in token):
            raise ValueError(
                f"expected at least {CODEC_TOKEN_MIN_LENGTH} printable ASCII characters "
                f"without spaces; {CODEC_TOKEN_HELP}"
            )
        return value

    @field_validator("codec_server_cors_origins")
    @classmethod
    def _cors_origins_shape(cls, value: str) -> str:
        origins = [part.strip() for part in value.split(",") if part.strip()]
        for origin in origins:
            parsed = urlparse(origin)
            if (
                parsed.scheme not in ("http", "https")
                or not parsed.netloc
                or parsed.path not in ("", "/")
                or parsed.query
                or parsed.fragment
                or "*" in origin
            ):
                raise ValueError(
                    f"{origin!r} is not an origin; expected comma-separated scheme://host[:port] "
                    "values such as http://localhost:8233 (no path, no wildcard)"
                )
        return ",".join(origin.rstrip("/") for origin in origins)

    @field_validator("temporal_tls_cert", "temporal_tls_key", "temporal_tls_ca")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"{str(value)!r} is not a readable file; expected a PEM file path")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> Settings:
        problems = []
        if self.skypilot_use_api_server:
            if not self.skypilot_api_server_url:
                problems.append(
                    "SKYPILOT_API_SERVER_URL is required when SKYPILOT_USE_API_SERVER is true"
                )
            if self.skypilot_service_account_token is None:
                problems.append(
                    "SKYPILOT_SERVICE_ACCOUNT_TOKEN is required "
                    "when SKYPILOT_USE_API_SERVER is true"
                )
        if (self.temporal_tls_cert is None) != (self.temporal_tls_key is None):
            problems.append("TEMPORAL_TLS_CERT and TEMPORAL_TLS_KEY must be set together")
        if (
            self.temporal_payload_previous_keys is not None
            and self.temporal_payload_encryption_key is None
        ):
            problems.append(
                "TEMPORAL_PAYLOAD_PREVIOUS_KEYS is set but TEMPORAL_PAYLOAD_ENCRYPTION_KEY is not; "
                "previous keys only decrypt, so set the current key too (or unset both)"
            )
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- derived values ---
    @property
    def encryption_key(self) -> bytes | None:
        if self.skypilot_credential_encryption_key is None:
            return None
        return decode_key(self.skypilot_credential_encryption_key.get_secret_value())

    @property
    def previous_encryption_keys(self) -> list[bytes]:
        if self.skypilot_credential_previous_keys is None:
            return []
        raw = self.skypilot_credential_previous_keys.get_secret_value()
        return [decode_key(part) for part in raw.split(",") if part.strip()]

    @property
    def payload_encryption_key(self) -> bytes | None:
        if self.temporal_payload_encryption_key is None:
            return None
        return decode_key(self.temporal_payload_encryption_key.get_secret_value())

    @property
    def payload_previous_keys(self) -> list[bytes]:
        if self.temporal_payload_previous_keys is None:
            return []
        raw = self.temporal_payload_previous_keys.get_secret_value()
        return [decode_key(part) for part in raw.split(",") if part.strip()]

    @property
    def codec_server_cors_origin_list(self) -> list[str]:
        return [part for part in self.codec_server_cors_origins.split(",") if part]

    def secret_values(self) -> list[str]:
        """Every secret string configured, for the log redactor."""
        out: list[str] = []
        for field in (
            self.skypilot_service_account_token,
            self.skypilot_credential_encryption_key,
            self.skypilot_credential_previous_keys,
            self.temporal_api_key,
            self.r2_access_key_id,
            self.r2_secret_access_key,
            self.temporal_payload_encryption_key,
            self.temporal_payload_previous_keys,
            self.codec_server_token,
        ):
            if field is not None and field.get_secret_value():
                out.extend(p for p in field.get_secret_value().split(",") if p.strip())
        return out


def _describe(error: Mapping[str, Any]) -> str:
    loc = [str(part) for part in error.get("loc", ()) if part != "__root__"]
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not loc:
        return message
    # Never echo the input: it may be a token or a key.
    return f"{loc[0].upper()}: {message}"


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read settings from ``env`` (default: the process environment) or raise ConfigError."""
    try:
        if env is None:
            return Settings()
        lowered = {k.lower(): v for k, v in env.items()}
        known = {name: lowered[name] for name in Settings.model_fields if name in lowered}
        return Settings.model_validate(known)
    except ValidationError as exc:
        raise ConfigError([_describe(e) for e in exc.errors(include_input=False)]) from None
