"""The worker: every workflow and activity of the node lifecycle, on one task queue (and the
launch-slot waits on its admission queue, see NodeWorkers).

Run it as `python worker.py`. Configuration comes from the environment (README); a mistake
stops start-up with the variable's name (exit 2). SIGTERM or SIGINT shut it down gracefully:
polling stops, in-flight activities get the graceful-shutdown timeout to finish or heartbeat
out, and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import PollerBehaviorAutoscaling, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.admission import AdmissionActivities
from activities.credentials import CredentialActivities
from activities.deployment_events import DeploymentEventActivities
from activities.health import HealthActivities
from activities.reconcile import ReconcileActivities
from activities.records import RecordActivities
from activities.skypilot import SkyPilotActivities
from controlplane.config import ConfigError, Settings, load_settings
from controlplane.db.deployment_events import DeploymentEventRepository
from controlplane.db.engine import create_engine
from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.db.launch_slots import LaunchSlotRepository
from controlplane.db.probes import ProbeRepository
from controlplane.db.repository import CredentialRepository, NodeRepository
from controlplane.events.service import relay_in_background
from controlplane.health.probe import probe_client
from controlplane.lifecycle import LaunchMode
from controlplane.logs import configure_logging
from controlplane.metrics import Metrics, MetricsServer
from controlplane.skypilot.backend import ApiBackend, CliBackend, SkyPilotBackend
from controlplane.skypilot.cli import SkyCLI
from controlplane.skypilot.cli_child import ServerAccess
from controlplane.skypilot.client import Identity, SkyPilotClient, Timeouts
from controlplane.skypilot.errors import AuthenticationError, SkyPilotError
from controlplane.skypilot.retry import RetryPolicy
from controlplane.skypilot.task import TaskSettings
from controlplane.urls import redact_url, scrub
from controlplane.vault import CredentialStore, Vault
from starter.connection import connect
from starter.schedules import ensure_fleet_health_schedules, ensure_reconcile_schedule
from starter.search_attributes import warn_if_missing
from workflows import activity_refs as acts
from workflows.deployment import DeploymentWorkflow
from workflows.fleet_health import FleetHealthWorkflow
from workflows.node import NodeWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.terminate import TerminateClusterWorkflow

log = logging.getLogger("worker")

WORKFLOWS: Sequence[type] = (
    NodeWorkflow,
    DeploymentWorkflow,
    TerminateClusterWorkflow,
    ReconcileWorkflow,
    FleetHealthWorkflow,
)
GRACEFUL_SHUTDOWN = timedelta(seconds=30)

# The deterministic, side-effect-free modules the workflows import: the sandbox takes them from
# the worker instead of executing them again for every workflow run. The workflows import them
# under imports_passed_through() too, but `from workflows import activity_refs` loads the
# submodule past that (importlib's fromlist path), so without this list activity_refs and
# search_attributes ran again per run (issue 11). The workflow modules themselves
# (node, deployment, ...) stay sandboxed: they are reloaded per run, with restricted globals.
# tests/replay/test_replay.py checks that a run executes nothing else.
SANDBOX_PASSTHROUGH = (
    "pydantic",
    "pydantic_core",
    "controlplane.backoff",
    "controlplane.db.models",
    "controlplane.launch_progress",
    "controlplane.lifecycle",
    "controlplane.metric_names",
    "controlplane.reconcile",
    "controlplane.search_attributes",
    "controlplane.skypilot.errors",
    "controlplane.spec",
    "workflows.activity_refs",
    "workflows.deployment_plan",
    "workflows.failures",
    "workflows.fleet_models",
    "workflows.inputs",
    "workflows.models",
    "workflows.options",
    "workflows.search_attributes",
    "workflows.user_metadata",
)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The worker's sandbox (the replay tests use the same one)."""
    restrictions = SandboxRestrictions.default.with_passthrough_modules(*SANDBOX_PASSTHROUGH)
    return SandboxedWorkflowRunner(restrictions=restrictions)


# Which method implements each activity the workflows call (workflows/activity_refs.py): the
# worker registers exactly the references in acts.ALL, each by the name the reference gives
# (tests/unit/test_activity_refs.py checks names and types).
IMPLEMENTATIONS: Mapping[acts.ActivityRef[Any, Any], Callable[..., Awaitable[BaseModel]]] = {
    acts.RECORD_INTENT: RecordActivities.record_intent,
    acts.RECORD_TRANSITION: RecordActivities.record_transition,
    acts.LOOKUP_CLUSTER: RecordActivities.lookup_cluster,
    acts.CREDENTIAL_REFERENCE: CredentialActivities.credential_reference,
    acts.LAUNCH_CLUSTER: SkyPilotActivities.launch_cluster,
    acts.WAIT_READY: SkyPilotActivities.wait_ready,
    acts.CLUSTER_HEALTH: SkyPilotActivities.cluster_health,
    acts.DOWN_CLUSTER: SkyPilotActivities.down_cluster,
    acts.RESTART_MODEL: SkyPilotActivities.restart_model,
    acts.RECOVER_NODE: ReconcileActivities.recover_node,
    acts.RECONCILE_SCAN: ReconcileActivities.reconcile_scan,
    acts.SWEEP_CLUSTERS: HealthActivities.sweep_clusters,
    acts.COUNT_SERVING: HealthActivities.count_serving_nodes,
    acts.PROBE_MODEL_SHARD: HealthActivities.probe_model_shard,
    acts.MONITOR_CLUSTERS: HealthActivities.monitor_clusters,
    acts.MONITOR_MODEL_SHARD: HealthActivities.monitor_model_shard,
    acts.ACQUIRE_LAUNCH_SLOT: AdmissionActivities.acquire_launch_slot,
    acts.TRY_LAUNCH_SLOT: AdmissionActivities.try_launch_slot,
    acts.RELEASE_LAUNCH_SLOT: AdmissionActivities.release_launch_slot,
    acts.RECORD_DEPLOYMENT_EVENTS: DeploymentEventActivities.record_deployment_events,
}


@dataclass
class Activities:
    records: RecordActivities
    credentials: CredentialActivities
    skypilot: SkyPilotActivities
    reconcile: ReconcileActivities
    health: HealthActivities
    admission: AdmissionActivities
    deployment_events: DeploymentEventActivities

    def all(self) -> list[Callable[..., Awaitable[BaseModel]]]:
        """Every reference's implementation, bound to its instance here, in acts.ALL's order."""
        owners = [
            self.records,
            self.credentials,
            self.skypilot,
            self.reconcile,
            self.health,
            self.admission,
            self.deployment_events,
        ]
        bound: list[Callable[..., Awaitable[BaseModel]]] = []
        for ref in acts.ALL:
            method = IMPLEMENTATIONS[ref]
            owner = next(o for o in owners if getattr(type(o), method.__name__, None) is method)
            bound.append(getattr(owner, method.__name__))
        return bound


def task_settings(settings: Settings) -> TaskSettings:
    return TaskSettings(
        control_plane_url=settings.control_plane_url,
        vllm_version=settings.vllm_version,
        torch_version=settings.torch_version,
        r2_endpoint=settings.r2_endpoint,
        r2_bucket=settings.r2_bucket,
        r2_access_key_id=settings.r2_access_key_id,
        r2_secret_access_key=settings.r2_secret_access_key,
    )


def skypilot_identity(settings: Settings) -> Identity:
    """Who the worker's requests belong to on a server without auth, in both modes."""
    return Identity(settings.skypilot_user_id, settings.skypilot_user_name)


def api_client(settings: Settings, metrics: Metrics | None = None) -> SkyPilotClient:
    assert settings.skypilot_api_server_url is not None
    return SkyPilotClient(
        settings.skypilot_api_server_url,
        token=settings.skypilot_service_account_token,
        identity=skypilot_identity(settings),
        retry=RetryPolicy(
            max_retries=settings.skypilot_max_retries,
            backoff_s=settings.skypilot_retry_backoff.total_seconds(),
        ),
        timeouts=Timeouts(
            read=settings.skypilot_status_timeout.total_seconds(),
            commit_horizon=settings.skypilot_submit_commit_horizon.total_seconds(),
        ),
        observer=metrics,
    )


def cli_runner(settings: Settings) -> SkyCLI:
    """The `sky` runner of CLI mode: the API server and identity it is given, nothing else."""
    return SkyCLI(
        settings.skypilot_cli_path,
        launch_timeout=settings.skypilot_launch_timeout.total_seconds(),
        terminate_timeout=settings.skypilot_terminate_timeout.total_seconds(),
        status_timeout=settings.skypilot_status_timeout.total_seconds(),
        server=ServerAccess.from_environment(
            settings.skypilot_api_server_url, settings.skypilot_service_account_token, os.environ
        ),
        identity=skypilot_identity(settings).env_vars(),
    )


async def check_api_health(client: SkyPilotClient) -> None:
    """Warn, never fail: the API server may be down for a moment (the guide's constructor)."""
    try:
        async with asyncio.timeout(10):
            health = await client.health()
    except AuthenticationError as exc:  # a bad Bearer token is refused even here
        log_refused_token(exc)
        return
    except (SkyPilotError, TimeoutError) as exc:
        log.warning("SkyPilot API server health check failed: %s", exc)
        return
    if health.healthy:
        log.info(
            "SkyPilot API server is healthy (version %s, API %s)",
            health.version,
            health.api_version,
        )
    else:
        log.warning("SkyPilot API server reports status %r", health.status)
    await check_api_token(client)


async def check_api_token(client: SkyPilotClient) -> None:
    """One authenticated call (/api/health is open to all): warn loudly if the token is refused.

    A refused token fails every launch at its first step; saying so at start-up, with the
    server's own reason, saves hunting through failed nodes (issue 10, path 8).
    """
    try:
        async with asyncio.timeout(10):
            await client.find_requests("controlplane-startup-check", name="sky.launch")
    except AuthenticationError as exc:
        log_refused_token(exc)
    except (SkyPilotError, TimeoutError) as exc:
        log.warning("SkyPilot API server token check failed: %s", exc)


def log_refused_token(exc: AuthenticationError) -> None:
    log.error(
        "SkyPilot API server REFUSED SKYPILOT_SERVICE_ACCOUNT_TOKEN: %s. Every API-mode launch "
        "will fail until the token is fixed (create a service account on the server and set "
        "its sky_... token)",
        exc.message,
    )


@contextlib.asynccontextmanager
async def open_activities(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[Activities]:
    """Build every dependency the activities need, and close them on the way out."""
    metrics = metrics or Metrics()
    if not settings.database_url:
        raise ConfigError(["DATABASE_URL: required by the worker (postgresql://user@host/db)"])
    async with contextlib.AsyncExitStack() as stack:
        backends: dict[LaunchMode, SkyPilotBackend] = {}
        if settings.skypilot_api_server_url:
            client = api_client(settings, metrics)
            stack.push_async_callback(client.aclose)
            backends[LaunchMode.API] = ApiBackend(client)
            log.info(
                "initialized SkyPilot API client api_url=%s use_api_server=%s",
                redact_url(settings.skypilot_api_server_url),
                settings.skypilot_use_api_server,
            )
            await check_api_health(client)
        if not settings.skypilot_use_api_server:
            log.info(
                "SkyPilot API client not configured for new nodes, using CLI mode (%s)",
                settings.skypilot_cli_path,
            )
        backends[LaunchMode.CLI] = CliBackend(
            cli_runner(settings),
            observer=metrics,
            commit_horizon=settings.skypilot_submit_commit_horizon.total_seconds(),
        )
        # No pre-ping: every database step is retried, so a dead pooled connection costs one
        # failed attempt after a database restart instead of 3 round trips per step (issue 11).
        engine = create_engine(settings.database_url, pre_ping=False)
        stack.push_async_callback(engine.dispose)
        store = None
        if settings.encryption_key is not None:
            vault = Vault(settings.encryption_key, settings.previous_encryption_keys)
            store = CredentialStore(vault, CredentialRepository(engine))
        probe_http = await stack.enter_async_context(httpx.AsyncClient())
        health_http = await stack.enter_async_context(probe_client())  # the fleet's probes
        nodes = NodeRepository(engine)
        records = RecordActivities(nodes, settings, metrics)
        refresher = asyncio.create_task(
            refresh_node_counts(metrics, nodes, database_url=settings.database_url)
        )
        stack.callback(refresher.cancel)
        await stack.enter_async_context(relay_in_background(settings, engine, metrics))
        yield Activities(
            records=records,
            credentials=CredentialActivities(CredentialRepository(engine), store=store),
            skypilot=SkyPilotActivities(
                backends,
                store,
                task_settings(settings),
                probe_http,
                tenant_workspaces=settings.tenant_workspace_map,
            ),
            reconcile=ReconcileActivities(
                backends, nodes, settings, records.default_mode(), metrics
            ),
            deployment_events=DeploymentEventActivities(DeploymentEventRepository(engine)),
            health=HealthActivities(
                backends, nodes, ProbeRepository(engine), settings, health_http, metrics
            ),
            admission=AdmissionActivities(LaunchSlotRepository(engine), settings, metrics),
        )


async def refresh_node_counts(
    metrics: Metrics,
    nodes: NodeRepository,
    interval: float = 15.0,
    *,
    database_url: str | None = None,
) -> None:
    """Keep the nodes-by-state gauge current; a database hiccup only skips one refresh.

    ``database_url``'s user and password are masked in the warning (drivers name the user)."""
    while True:
        try:
            metrics.set_node_counts(await nodes.count_by_status())
        except DATABASE_ERRORS as exc:
            problem = scrub(summarize_database_error(exc), database_url)
            log.warning("could not refresh node counts: %s", problem)
        await asyncio.sleep(interval)


class NodeWorkers:
    """The worker's two Temporal workers, run together (``async with``).

    One polls TEMPORAL_TASK_QUEUE for every workflow and activity; the other polls its
    admission queue (acts.admission_task_queue) for the launch-slot waits only, with room for
    ADMISSION_MAX_CONCURRENT_WAITS of them. The waits are cheap async sleeps, and on their own
    queue no number of queued nodes can take the activity slots the admitted nodes need.
    """

    def __init__(self, main: Worker, admission: Worker) -> None:
        self.main = main
        self.admission = admission
        self._stack = contextlib.AsyncExitStack()

    async def __aenter__(self) -> NodeWorkers:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.main)
            await stack.enter_async_context(self.admission)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()


def create_worker(client: Client, settings: Settings, activities: Activities) -> NodeWorkers:
    activities.health.temporal = client  # lease-mode sweeps signal the changed nodes themselves
    admission_names = {ref.name for ref in acts.ADMISSION_ACTIVITIES}
    bound = dict(zip((ref.name for ref in acts.ALL), activities.all(), strict=True))
    main = Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=list(WORKFLOWS),
        activities=list(bound.values()),
        workflow_runner=workflow_runner(),
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
    admission = Worker(
        client,
        task_queue=acts.admission_task_queue(settings.temporal_task_queue),
        activities=[bound[name] for name in sorted(admission_names)],
        max_concurrent_activities=settings.admission_max_concurrent_waits,
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
    return NodeWorkers(main, admission)


def telemetry_runtime() -> tuple[Runtime, str]:
    """A Temporal runtime exporting its worker metrics on a private loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    runtime = Runtime(
        telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"127.0.0.1:{port}"))
    )
    return runtime, f"http://127.0.0.1:{port}/metrics"


async def serve(settings: Settings) -> int:
    runtime, temporal_metrics_url = telemetry_runtime()
    metrics = Metrics()
    try:
        metrics_server = MetricsServer(
            metrics, settings.metrics_host, settings.metrics_port, temporal_metrics_url
        ).start()
    except OSError as exc:
        log.error(
            "cannot serve metrics on %s:%s (%s); set METRICS_PORT (0 picks a free port)",
            settings.metrics_host,
            settings.metrics_port,
            exc.strerror or exc,
        )
        return 1
    log.info("metrics on %s", metrics_server.url)
    try:
        client = await connect(settings, runtime=runtime)
    except RuntimeError as exc:
        log.error(
            "cannot connect to Temporal at TEMPORAL_ADDRESS=%s (namespace %s): %s",
            redact_url(settings.temporal_address),
            settings.temporal_namespace,
            scrub(str(exc), settings.temporal_address),
        )
        return 1
    await warn_if_missing(client)
    async with open_activities(settings, metrics) as activities:
        activities.reconcile.temporal = client  # sees whether a live row's workflow runs
        worker = create_worker(client, settings, activities)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        outcome = await ensure_reconcile_schedule(
            client, settings.temporal_task_queue, settings.reconcile_interval
        )
        log.info("reconciler schedule %s (every %s)", outcome, settings.reconcile_interval)
        fleet = await ensure_fleet_health_schedules(
            client,
            settings.temporal_task_queue,
            lease=settings.fleet_health_lease,
            shards=settings.model_probe_shards,
        )
        log.info("fleet health schedules %s", fleet)
        log.info(
            "worker polling task queue %s on %s (namespace %s)",
            settings.temporal_task_queue,
            redact_url(settings.temporal_address),
            settings.temporal_namespace,
        )
        async with worker:
            await stop.wait()
            log.info(
                "shutting down: finishing in-flight activities (up to %ss)",
                int(GRACEFUL_SHUTDOWN.total_seconds()),
            )
    metrics_server.stop()
    log.info("worker stopped")
    return 0


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        code = 2
    else:
        configure_logging(settings.log_level.value, settings.secret_values())
        try:
            code = asyncio.run(serve(settings))
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            code = 2
    # Flush, then leave without interpreter finalisation (sdk-python #300 corrupts exit codes).
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    main()
