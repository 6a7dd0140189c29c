"""Configuration from the environment, read once at each entry point and passed down.

Every variable of the integration guide keeps its name and default. A wrong value fails at
start-up with the variable's name and what was expected (:class:`ConfigError`), never with a
stack trace, and secret values (tokens, keys) never appear in a repr or an error message.
"""

from __future__ import annotations

import json
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
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from controlplane.cluster_names import CLUSTER_PREFIX, check_cluster_prefix
from controlplane.credential_policy import Workspace
from controlplane.durations import DURATION_HELP, parse_duration
from controlplane.keyring import KEY_HELP as KEY_HELP  # re-exported: callers import them here
from controlplane.keyring import decode_key as decode_key
from controlplane.keyring import decode_keys
from controlplane.keyring import key_id as key_id
from controlplane.lifecycle import LOST_SECOND_LOOK_DEFAULT_S
from controlplane.spec import TenantId
from controlplane.urls import redact_url, url_credentials

CODEC_TOKEN_MIN_LENGTH = 16
CODEC_TOKEN_HELP = 'generate one: python -c "import secrets; print(secrets.token_urlsafe(32))"'


class ConfigError(Exception):
    """A configuration mistake, worded for the person who set the variable."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


# The longest SKYPILOT_SUBMIT_COMMIT_HORIZON: it must fit in one launch attempt.
MAX_DURATIONS = {
    # The look must fit in one API launch attempt (a 120 s start-to-close), lookups included.
    "skypilot_submit_commit_horizon": timedelta(seconds=90),
    # A second look, not a second sweep interval: `lost` is due within one interval + 5 s.
    "node_lost_second_look": timedelta(minutes=5),
}


def _to_duration(value: Any) -> Any:
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return timedelta(seconds=value)
    return value


Duration = Annotated[timedelta, BeforeValidator(_to_duration)]


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
    # How long the server may take to commit a POST whose response was lost: until then the
    # POST is not sent again (docs/reliability.md).
    skypilot_submit_commit_horizon: Duration = timedelta(seconds=30)
    skypilot_user_id: str = Field(default="c0a7b1e5", pattern=r"^[0-9a-z-]{1,64}$")
    skypilot_user_name: str = Field(default="controlplane", min_length=1, max_length=64)

    # --- the node lifecycle ---
    node_health_check_interval: Duration = timedelta(seconds=60)
    node_cleanup_budget: Duration = timedelta(minutes=30)
    node_heartbeat_timeout: Duration = timedelta(seconds=30)
    # The wait between the two refreshed looks that confirm a cluster lost (at most 5 minutes).
    node_lost_second_look: Duration = timedelta(seconds=LOST_SECOND_LOOK_DEFAULT_S)

    # --- fleet health (controlplane/health, workflows/fleet_health.py) ---
    model_probe_path: str = Field(default="/health", pattern=r"^/[A-Za-z0-9._~/-]*$")
    model_probe_interval: Duration = timedelta(seconds=30)
    model_probe_timeout: Duration = timedelta(seconds=5)
    model_probe_threshold: int = Field(default=3, ge=1, le=100)
    model_probe_startup_grace: Duration = timedelta(minutes=2)
    model_probe_check_models: bool = False
    model_probe_shards: int = Field(default=16, ge=1, le=1024)
    # How long one scheduled fleet-health run holds its sweeping activities (lease mode,
    # workflows/fleet_health.py): its history events are paid once per lease, not per sweep.
    fleet_health_lease: Duration = timedelta(minutes=30)
    # A round the prober cannot be trusted with (controlplane/health/verdict.py suspect_round):
    # its loop ran later than this, or at least _MIN and more than _FRACTION of its models that
    # answered until now got no answer. _MIN of 2 or more: one model's crash is always believed.
    model_probe_max_loop_lag: Duration = timedelta(seconds=1)
    model_probe_suspect_fraction: float = Field(default=0.5, gt=0, le=1)
    model_probe_suspect_min: int = Field(default=10, ge=2, le=1_000_000)
    # 2 x the real API server's 4 LONG workers on 2 vCPU (docs/performance.md, "Admission").
    skypilot_max_inflight_launches: int = Field(default=8, ge=1, le=10_000)
    # Launch-slot waits one worker runs at once, on its admission task queue (worker.py); more
    # queued nodes wait in Temporal. It bounds the worker's Postgres polling (admission.py).
    admission_max_concurrent_waits: int = Field(default=200, ge=1, le=100_000)

    # --- operations ---
    skypilot_api_rollout_percent: int = Field(default=100, ge=0, le=100)
    reconcile_interval: Duration = timedelta(minutes=5)
    reconcile_cleanup: bool = False
    reconcile_orphan_grace: Duration = timedelta(minutes=15)
    # A live row whose workflow ended: "adopt" resumes the node, "teardown" downs it.
    reconcile_recover_live: Literal["adopt", "teardown"] = "adopt"
    metrics_port: int = Field(default=9464, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"

    # --- deployments (the controller's policy, passed in each deployment's input) ---
    deployment_replace_order: Literal["new_first", "old_first"] = "new_first"
    deployment_backoff_initial: Duration = timedelta(seconds=30)
    deployment_backoff_max: Duration = timedelta(minutes=10)
    deployment_crash_loop_threshold: int = Field(default=3, ge=1, le=100)
    deployment_rollout_deadline: Duration = timedelta(minutes=30)
    deployment_spot_fallback_after: int | None = Field(default=None, ge=1, le=100)

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

    # --- events out: the JetStream relay (controlplane/events/) ---
    events_nats_url: SecretStr | None = None  # unset = nothing is published; may hold a password
    events_relay_batch_size: int = Field(default=100, ge=1, le=10_000)
    events_relay_poll_interval: Duration = timedelta(seconds=5)
    events_nats_duplicate_window: Duration = timedelta(hours=1)
    # --- the SkyPilot workspaces each tenant's credential may name (credential_policy.py) ---
    tenant_workspaces: str = ""  # JSON {"tenant": ["workspace", ...]}; unset = none allowed

    # --- this installation's cluster names (controlplane/spec.py; the reconciler's filter) ---
    cluster_name_prefix: str = CLUSTER_PREFIX

    @field_validator("cluster_name_prefix")
    @classmethod
    def _cluster_prefix_shape(cls, value: str) -> str:
        return check_cluster_prefix(value)

    @field_validator("skypilot_api_server_url", "control_plane_url", "r2_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                f"{redact_url(value)!r} is not an http(s) URL; expected e.g. https://host:port"
            )
        return value.rstrip("/")

    @field_validator(
        "skypilot_launch_timeout",
        "skypilot_terminate_timeout",
        "skypilot_status_timeout",
        "skypilot_retry_backoff",
        "skypilot_submit_commit_horizon",
        "node_health_check_interval",
        "node_cleanup_budget",
        "node_heartbeat_timeout",
        "node_lost_second_look",
        "reconcile_interval",
        "reconcile_orphan_grace",
        "deployment_backoff_initial",
        "deployment_backoff_max",
        "deployment_rollout_deadline",
        "events_relay_poll_interval",
        "events_nats_duplicate_window",
        "model_probe_interval",
        "model_probe_timeout",
        "model_probe_max_loop_lag",
        "fleet_health_lease",
    )
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError(f"must be positive; expected {DURATION_HELP}")
        return value

    @field_validator("skypilot_submit_commit_horizon", "node_lost_second_look")
    @classmethod
    def _at_most(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        limit = MAX_DURATIONS[info.field_name or ""]
        if value > limit:
            raise ValueError(f"must be at most {limit.total_seconds():.0f}s")
        return value

    @field_validator("model_probe_startup_grace")
    @classmethod
    def _not_negative(cls, value: timedelta) -> timedelta:
        if value < timedelta(0):
            raise ValueError(f"must be zero or more; expected {DURATION_HELP}")
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

    @field_validator("events_nats_url")
    @classmethod
    def _nats_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or value.get_secret_value().strip() == "":
            return None
        parsed = urlparse(value.get_secret_value().strip())
        if parsed.scheme not in ("nats", "tls", "ws", "wss") or not parsed.hostname:
            raise ValueError(
                "not a NATS server URL; expected e.g. nats://127.0.0.1:4222 "
                "(schemes nats, tls, ws, wss)"
            )
        return SecretStr(value.get_secret_value().strip())

    @field_validator("tenant_workspaces")
    @classmethod
    def _tenant_workspaces_shape(cls, value: str) -> str:
        parse_tenant_workspaces(value)
        return value

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
        longest = max(self.node_health_check_interval, self.model_probe_interval)
        if self.fleet_health_lease < longest:
            problems.append(
                f"FLEET_HEALTH_LEASE ({self.fleet_health_lease.total_seconds():g}s) must be at "
                "least NODE_HEALTH_CHECK_INTERVAL and MODEL_PROBE_INTERVAL "
                f"({longest.total_seconds():g}s): a lease holds several sweeps"
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
        return decode_keys(self.skypilot_credential_previous_keys.get_secret_value())

    @property
    def payload_encryption_key(self) -> bytes | None:
        if self.temporal_payload_encryption_key is None:
            return None
        return decode_key(self.temporal_payload_encryption_key.get_secret_value())

    @property
    def payload_previous_keys(self) -> list[bytes]:
        if self.temporal_payload_previous_keys is None:
            return []
        return decode_keys(self.temporal_payload_previous_keys.get_secret_value())

    @property
    def codec_server_cors_origin_list(self) -> list[str]:
        return [part for part in self.codec_server_cors_origins.split(",") if part]

    @property
    def tenant_workspace_map(self) -> dict[str, frozenset[str]]:
        return parse_tenant_workspaces(self.tenant_workspaces)

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
            self.events_nats_url,
        ):
            if field is not None and field.get_secret_value():
                out.extend(p for p in field.get_secret_value().split(",") if p.strip())
        # Passwords inside addresses (messages show addresses through controlplane.urls).
        for address in (self.skypilot_api_server_url, self.database_url, self.temporal_address):
            password = url_credentials(address).password
            if password:
                out.append(password)
        return out


TENANT_WORKSPACES_HELP = 'a JSON object of tenant ids to workspace names, e.g. {"acme": ["team-a"]}'
_TENANT_WORKSPACES: TypeAdapter[dict[TenantId, list[Workspace]]] = TypeAdapter(
    dict[TenantId, list[Workspace]]
)


def parse_tenant_workspaces(text: str) -> dict[str, frozenset[str]]:
    """TENANT_WORKSPACES as a map; ValueError names the bad entry, never a whole document."""
    if not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"not JSON ({exc.msg} at column {exc.colno}); expected {TENANT_WORKSPACES_HELP}"
        ) from None
    try:
        parsed = _TENANT_WORKSPACES.validate_python(data)
    except ValidationError as exc:
        error = exc.errors(include_input=False, include_url=False)[0]
        where = ".".join(str(part) for part in error["loc"]) or "document"
        raise ValueError(f"{where}: {error['msg']}; expected {TENANT_WORKSPACES_HELP}") from None
    return {tenant: frozenset(names) for tenant, names in parsed.items()}


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
