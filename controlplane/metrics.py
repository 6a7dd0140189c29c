"""Prometheus metrics: the guide's four SkyPilot series, lifecycle series, and Temporal's own.

Everything is served on one port (METRICS_PORT): this process's series from its registry,
followed by the Temporal SDK runtime's series, which the runtime exposes on a private loopback
port and this server passes through as they are.
"""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from controlplane.lifecycle import NodeStatus

log = logging.getLogger(__name__)

# Simulated launches take seconds, real ones minutes: buckets cover both.
LIFECYCLE_BUCKETS = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)
API_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    """One registry per process; also the SkyPilot client's CallObserver."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.api_requests = Counter(
            "skypilot_api_requests",
            "SkyPilot calls by operation and outcome (API and CLI mode)",
            ["operation", "status"],
            registry=r,
        )
        self.api_duration = Histogram(
            "skypilot_api_request_duration_seconds",
            "Duration of SkyPilot calls",
            ["operation"],
            buckets=API_BUCKETS,
            registry=r,
        )
        self.api_errors = Counter(
            "skypilot_api_errors",
            "Failed SkyPilot calls by SkyPilot error type",
            ["operation", "error_type"],
            registry=r,
        )
        self.api_retries = Counter(
            "skypilot_api_retries",
            "Retries of transient SkyPilot failures",
            ["operation"],
            registry=r,
        )
        self.nodes = Gauge("controlplane_nodes", "Nodes by lifecycle state", ["state"], registry=r)
        self.cleanup_failed = Gauge(
            "controlplane_cleanup_failed_nodes",
            "Nodes whose teardown was never confirmed",
            registry=r,
        )
        self.launch_to_ready = Histogram(
            "controlplane_node_launch_to_ready_seconds",
            "From recorded intent to the model answering /health",
            buckets=LIFECYCLE_BUCKETS,
            registry=r,
        )
        self.terminate_seconds = Histogram(
            "controlplane_node_terminate_seconds",
            "From terminating to confirmed terminated",
            buckets=LIFECYCLE_BUCKETS,
            registry=r,
        )
        self.compensations = Counter(
            "controlplane_compensations",
            "Launches undone (cancel, down, record failed)",
            ["reason"],
            registry=r,
        )
        self.orphans_found = Counter(
            "controlplane_orphans_found",
            "Clusters found with our prefix and no live node",
            registry=r,
        )
        self.relay_lag_events = Gauge(
            "controlplane_event_relay_lag_events",
            "Feed events the JetStream relay has not published yet",
            registry=r,
        )
        self.relay_lag_seconds = Gauge(
            "controlplane_event_relay_lag_seconds",
            "Age of the oldest feed event the JetStream relay has not published (0 if none)",
            registry=r,
        )
        self.probe_failures = Counter(
            "controlplane_model_probe_failures",
            "Failed liveness probes of serving nodes' models, by reason",
            ["reason"],
            registry=r,
        )
        self.launch_queue_wait = Histogram(
            "controlplane_launch_queue_seconds",
            "How long a launch waited for a slot (SKYPILOT_MAX_INFLIGHT_LAUNCHES)",
            buckets=LIFECYCLE_BUCKETS,
            registry=r,
        )
        self.database_step_failures = Counter(
            "controlplane_database_step_failures",
            "Attempts of database steps that failed (each is retried, with no total deadline)",
            ["activity"],
            registry=r,
        )
        for state in NodeStatus:
            self.nodes.labels(state=state.value).set(0)

    # --- CallObserver --------------------------------------------------------------------------
    def call_finished(self, operation: str, outcome: str, seconds: float) -> None:
        self.api_requests.labels(operation=operation, status=outcome).inc()
        self.api_duration.labels(operation=operation).observe(seconds)

    def call_failed(self, operation: str, error_type: str) -> None:
        self.api_errors.labels(operation=operation, error_type=error_type).inc()

    def call_retried(self, operation: str) -> None:
        self.api_retries.labels(operation=operation).inc()

    # --- lifecycle -----------------------------------------------------------------------------
    def set_node_counts(self, counts: dict[str, int]) -> None:
        for state in NodeStatus:
            self.nodes.labels(state=state.value).set(counts.get(state.value, 0))
        self.cleanup_failed.set(counts.get(NodeStatus.CLEANUP_FAILED.value, 0))

    def set_relay_lag(self, events: int, seconds: float) -> None:
        self.relay_lag_events.set(events)
        self.relay_lag_seconds.set(seconds)

    def exposition(self, temporal_metrics_url: str | None = None) -> bytes:
        """This process's series, then the Temporal runtime's (if it serves any)."""
        body = generate_latest(self.registry)
        if temporal_metrics_url:
            try:
                with urllib.request.urlopen(temporal_metrics_url, timeout=2) as response:
                    body += b"\n" + response.read()
            except (urllib.error.URLError, OSError) as exc:
                log.warning("Temporal runtime metrics unavailable: %s", exc)
        return body


def compensation_reason(error: str | None) -> str:
    """A low-cardinality label for why a launch was undone."""
    text = (error or "").lower()
    if "skypilot_launch_timeout" in text or "timed out" in text:
        return "timeout"
    if text.startswith("cancelled"):
        return "cancelled"
    return "error"


class MetricsServer:
    """GET /metrics on one port, in a daemon thread."""

    def __init__(
        self, metrics: Metrics, host: str, port: int, temporal_metrics_url: str | None = None
    ) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = outer.metrics.exposition(outer.temporal_metrics_url)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return None  # scrapes every 15 s would flood the log

        self.metrics = metrics
        self.temporal_metrics_url = temporal_metrics_url
        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, daemon=True, name="metrics"
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    @property
    def host(self) -> str:
        return str(self.server.server_address[0])

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> MetricsServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
