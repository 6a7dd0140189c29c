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

from controlplane import metric_names as names
from controlplane.lifecycle import NodeStatus

log = logging.getLogger(__name__)

# Simulated launches take seconds, real ones minutes: buckets cover both.
LIFECYCLE_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600)
API_BUCKETS: tuple[float, ...] = (
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    120,
    300,
)


def _labels(name: str) -> tuple[str, ...]:
    """The series' label names, as metric_names lists them."""
    return names.ALL_SERIES[name]


class Metrics:
    """One registry per process; also the SkyPilot client's CallObserver.

    Every series is built from controlplane/metric_names.py: its name and its label names.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        def counter(name: str, documentation: str) -> Counter:
            return Counter(name, documentation, _labels(name), registry=r)

        def gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, _labels(name), registry=r)

        def histogram(name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, documentation, _labels(name), buckets=buckets, registry=r)

        self.api_requests = counter(
            names.SKYPILOT_API_REQUESTS,
            "SkyPilot calls by operation and outcome (API and CLI mode)",
        )
        self.api_duration = histogram(
            names.SKYPILOT_API_REQUEST_DURATION, "Duration of SkyPilot calls", API_BUCKETS
        )
        self.api_errors = counter(
            names.SKYPILOT_API_ERRORS, "Failed SkyPilot calls by SkyPilot error type"
        )
        self.api_retries = counter(
            names.SKYPILOT_API_RETRIES, "Retries of transient SkyPilot failures"
        )
        self.nodes = gauge(names.NODES, "Nodes by lifecycle state")
        self.cleanup_failed = gauge(
            names.CLEANUP_FAILED_NODES, "Nodes whose teardown was never confirmed"
        )
        self.launch_to_ready = histogram(
            names.NODE_LAUNCH_TO_READY,
            "From recorded intent to the model answering /health",
            LIFECYCLE_BUCKETS,
        )
        self.terminate_seconds = histogram(
            names.NODE_TERMINATE, "From terminating to confirmed terminated", LIFECYCLE_BUCKETS
        )
        self.compensations = counter(
            names.COMPENSATIONS, "Launches undone (cancel, down, record failed)"
        )
        self.orphans_found = counter(
            names.ORPHANS_FOUND, "Clusters found with our prefix and no live node"
        )
        self.relay_lag_events = gauge(
            names.EVENT_RELAY_LAG_EVENTS, "Feed events the JetStream relay has not published yet"
        )
        self.relay_lag_seconds = gauge(
            names.EVENT_RELAY_LAG_SECONDS,
            "Age of the oldest feed event the JetStream relay has not published (0 if none)",
        )
        self.probe_failures = counter(
            names.MODEL_PROBE_FAILURES, "Failed liveness probes of serving nodes' models, by reason"
        )
        self.probe_suspect_rounds = counter(
            names.MODEL_PROBE_SUSPECT_ROUNDS,
            "Probe rounds whose unanswered probes were not counted (a late or starved prober)",
        )
        self.launch_queue_wait = histogram(
            names.LAUNCH_QUEUE,
            "How long a launch waited for a slot (SKYPILOT_MAX_INFLIGHT_LAUNCHES)",
            LIFECYCLE_BUCKETS,
        )
        self.database_step_failures = counter(
            names.DATABASE_STEP_FAILURES,
            "Attempts of database steps that failed (each is retried, with no total deadline)",
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
