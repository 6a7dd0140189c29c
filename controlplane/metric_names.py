"""Every metric series the control plane exports, by name, for code, alerts and dashboards.

This is the one list: ``controlplane/metrics.py`` builds its prometheus_client objects from
these names, and ``deploy/prometheus/alerts.yml`` and ``deploy/grafana/dashboard.json`` may
only query names listed here (``tests/unit/test_deploy_files.py`` checks it).

Names are the exposition names, as Prometheus stores them: counters carry their ``_total``
suffix (prometheus_client's ``Counter`` strips a trailing ``_total`` and adds it back), and a
histogram ``h`` is queried as ``h_bucket``, ``h_sum`` and ``h_count``.

The ``temporal_*`` series come from the Temporal SDK's runtime (sdk-core), whose Prometheus
exporter the worker serves on the same port (METRICS_PORT). With the default
``PrometheusConfig`` they carry no unit suffix, their histograms are in **milliseconds**, and
every one has ``namespace``, ``task_queue`` and ``service_name="temporal-core-sdk"`` labels.
Only the series the alerts and the dashboard use are listed.
"""

from __future__ import annotations

from typing import Final

# --- the integration guide's four: SkyPilot calls, API and CLI mode alike -----------------
SKYPILOT_API_REQUESTS: Final = "skypilot_api_requests_total"
SKYPILOT_API_REQUEST_DURATION: Final = "skypilot_api_request_duration_seconds"
SKYPILOT_API_ERRORS: Final = "skypilot_api_errors_total"
SKYPILOT_API_RETRIES: Final = "skypilot_api_retries_total"

# --- the node lifecycle -------------------------------------------------------------------
NODES: Final = "controlplane_nodes"  # gauge: nodes by state (read from the database)
NODE_LAUNCH_TO_READY: Final = "controlplane_node_launch_to_ready_seconds"
NODE_TERMINATE: Final = "controlplane_node_terminate_seconds"
COMPENSATIONS: Final = "controlplane_compensations_total"
ORPHANS_FOUND: Final = "controlplane_orphans_found_total"
CLEANUP_FAILED_NODES: Final = "controlplane_cleanup_failed_nodes"  # gauge
MODEL_PROBE_FAILURES: Final = "controlplane_model_probe_failures_total"
# Probe rounds (one shard, one sweep) whose no-answer failures were not counted: the prober
# was late or nearly all of its probes went unanswered at once (controlplane/health/verdict.py).
MODEL_PROBE_SUSPECT_ROUNDS: Final = "controlplane_model_probe_suspect_rounds_total"
LAUNCH_QUEUE: Final = "controlplane_launch_queue_seconds"  # histogram

# --- events out: the JetStream relay (only while EVENTS_NATS_URL is set) -------------------
EVENT_RELAY_LAG_EVENTS: Final = "controlplane_event_relay_lag_events"  # gauge
EVENT_RELAY_LAG_SECONDS: Final = "controlplane_event_relay_lag_seconds"  # gauge: oldest unsent

# --- deployments: set by DeploymentWorkflow through the Temporal runtime's metric meter ------
# They come out of the same exporter as temporal_* (with its namespace, service_name,
# task_queue and workflow_type labels), as gauges per tenant and deployment.
DEPLOYMENT_DESIRED: Final = "controlplane_deployment_desired_replicas"
DEPLOYMENT_SERVING: Final = "controlplane_deployment_serving_replicas"
DEPLOYMENT_DEGRADED: Final = "controlplane_deployment_degraded"  # 1: the crash-loop guard holds
# A database step's attempt failed (Postgres unreachable...): the step retries without a total
# deadline, so an outage shows here, by activity, rather than as failed workflows.
DATABASE_STEP_FAILURES: Final = "controlplane_database_step_failures_total"

# --- Temporal SDK worker metrics (prefix temporal_, durations in milliseconds) ------------
TEMPORAL_WORKFLOW_TASK_SCHEDULE_TO_START_LATENCY: Final = (
    "temporal_workflow_task_schedule_to_start_latency"
)
TEMPORAL_ACTIVITY_SCHEDULE_TO_START_LATENCY: Final = "temporal_activity_schedule_to_start_latency"
TEMPORAL_WORKER_TASK_SLOTS_AVAILABLE: Final = "temporal_worker_task_slots_available"
TEMPORAL_WORKER_TASK_SLOTS_USED: Final = "temporal_worker_task_slots_used"
TEMPORAL_REQUEST_FAILURE: Final = "temporal_request_failure"

_TEMPORAL: Final = ("namespace", "service_name", "task_queue")
_DEPLOYMENT: Final = (*_TEMPORAL, "workflow_type", "tenant", "deployment")

#: Every series, with the label names it carries (``le`` of histograms not included).
ALL_SERIES: Final[dict[str, tuple[str, ...]]] = {
    SKYPILOT_API_REQUESTS: ("operation", "status"),
    SKYPILOT_API_REQUEST_DURATION: ("operation",),
    SKYPILOT_API_ERRORS: ("operation", "error_type"),
    SKYPILOT_API_RETRIES: ("operation",),
    NODES: ("state",),
    NODE_LAUNCH_TO_READY: (),
    NODE_TERMINATE: (),
    COMPENSATIONS: ("reason",),
    ORPHANS_FOUND: (),
    CLEANUP_FAILED_NODES: (),
    EVENT_RELAY_LAG_EVENTS: (),
    EVENT_RELAY_LAG_SECONDS: (),
    MODEL_PROBE_FAILURES: ("reason",),
    MODEL_PROBE_SUSPECT_ROUNDS: ("reason",),
    LAUNCH_QUEUE: (),
    DEPLOYMENT_DESIRED: _DEPLOYMENT,
    DEPLOYMENT_SERVING: _DEPLOYMENT,
    DEPLOYMENT_DEGRADED: _DEPLOYMENT,
    DATABASE_STEP_FAILURES: ("activity",),
    TEMPORAL_WORKFLOW_TASK_SCHEDULE_TO_START_LATENCY: _TEMPORAL,
    TEMPORAL_ACTIVITY_SCHEDULE_TO_START_LATENCY: _TEMPORAL,
    TEMPORAL_WORKER_TASK_SLOTS_AVAILABLE: (*_TEMPORAL, "worker_type"),
    TEMPORAL_WORKER_TASK_SLOTS_USED: (*_TEMPORAL, "worker_type"),
    TEMPORAL_REQUEST_FAILURE: (*_TEMPORAL, "operation", "status_code"),
}

#: The histograms among ALL_SERIES: queried through ``_bucket``, ``_sum`` and ``_count``.
HISTOGRAMS: Final[frozenset[str]] = frozenset(
    {
        SKYPILOT_API_REQUEST_DURATION,
        NODE_LAUNCH_TO_READY,
        NODE_TERMINATE,
        LAUNCH_QUEUE,
        TEMPORAL_WORKFLOW_TASK_SCHEDULE_TO_START_LATENCY,
        TEMPORAL_ACTIVITY_SCHEDULE_TO_START_LATENCY,
    }
)

#: The series workflows set through the Temporal runtime's meter (not prometheus_client).
WORKFLOW_SERIES: Final[frozenset[str]] = frozenset(
    {DEPLOYMENT_DESIRED, DEPLOYMENT_SERVING, DEPLOYMENT_DEGRADED}
)

#: The series this process defines itself (the rest come from the Temporal runtime).
CONTROLPLANE_SERIES: Final[frozenset[str]] = frozenset(
    name for name in ALL_SERIES if not name.startswith("temporal_") and name not in WORKFLOW_SERIES
)
