"""Settings of the SkyPilot API server simulator: timings fixed at start, faults set at run time.

Delays are small real sleeps, so a demo looks like a real server and a test stays fast when it
passes tiny values. Faults are a separate model because ``POST /sim/faults`` replaces them while
the server runs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Exception class names a simulated launch may fail with (contract §9); any name is accepted.
DEFAULT_LAUNCH_FAILURE_TYPES = ["ResourcesUnavailableError"]


class Faults(BaseModel):
    """Misbehaviour to inject. Counters (``fail_next_launches``, ...) count down as they fire."""

    model_config = ConfigDict(extra="forbid")

    launch_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    launch_failure_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LAUNCH_FAILURE_TYPES), min_length=1
    )
    fail_next_launches: int = Field(default=0, ge=0)
    unavailable_burst: int = Field(default=0, ge=0)
    retry_after_s: int = Field(default=1, ge=0)
    drop_next_responses: int = Field(default=0, ge=0)
    drop_response_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    # An overloaded server's late commit: a request whose response is lost becomes visible
    # (in /api/status, /api/get, the counters) and starts only this many seconds later.
    late_commit_s: float = Field(default=0.0, ge=0.0)
    slow_response_s: float = Field(default=0.0, ge=0.0)
    preempt_after_s: float | None = Field(default=None, ge=0.0)
    # Locations ("aws/us-east-1") with no capacity: a launch skips them among its ordered/any_of
    # alternatives and fails with ResourcesUnavailableError when none is left.
    unavailable_locations: list[str] = Field(default_factory=list)
    seed: int | None = None


class SimConfig(BaseModel):
    """How the simulator behaves. Defaults imitate a local server on its own port."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=46590, ge=0, le=65535)
    launch_delay_s: float = Field(default=2.0, ge=0.0)  # INIT → UP
    down_delay_s: float = Field(default=0.5, ge=0.0)  # then the cluster is gone
    stop_delay_s: float = Field(default=0.5, ge=0.0)  # then the cluster is STOPPED
    model_warmup_s: float = Field(default=1.0, ge=0.0)  # UP → the model's /health answers 200
    # How long a request stays PENDING before a "worker" picks it up, and how long the quick
    # requests (status, endpoints, down/stop lookups) take once running.
    status_delay_s: float = Field(default=0.05, ge=0.0)
    # Valid ``sky_...`` tokens; a non-empty list means service accounts are enabled.
    service_account_tokens: list[str] = Field(default_factory=list)
    # When true, every call except /api/health and /sim/* needs a valid token.
    require_auth: bool = False
    server_user_hash: str = "fcd1e5cf"
    server_user_name: str = "skypilot"
    # LONG-queue workers (launches, refreshing status). None = unlimited; the real server has a
    # few, so launches beyond them stay PENDING.
    long_workers: int | None = Field(default=None, ge=1)
    # Answer without the ~40 ms Nagle/delayed-ACK stall per call (TCP_NODELAY on accepted
    # connections, as a real uvicorn-served API server has). Off by default: existing tests were
    # written against the slower timing. Benchmarks turn it on (--tcp-nodelay).
    tcp_nodelay: bool = False
    faults: Faults = Field(default_factory=Faults)
