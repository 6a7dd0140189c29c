"""The worker: every workflow and activity of the node lifecycle, on one task queue.

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
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import PollerBehaviorAutoscaling, Worker

from activities.credentials import CredentialActivities
from activities.reconcile import ReconcileActivities
from activities.records import RecordActivities
from activities.skypilot import SkyPilotActivities
from controlplane.config import ConfigError, Settings, load_settings
from controlplane.db.engine import create_engine
from controlplane.db.errors import DATABASE_ERRORS, summarize_database_error
from controlplane.db.repository import CredentialRepository, NodeRepository
from controlplane.lifecycle import LaunchMode
from controlplane.logs import configure_logging
from controlplane.metrics import Metrics, MetricsServer
from controlplane.skypilot.backend import ApiBackend, CliBackend, SkyPilotBackend
from controlplane.skypilot.cli import SkyCLI
from controlplane.skypilot.client import Identity, SkyPilotClient, Timeouts
from controlplane.skypilot.errors import AuthenticationError, SkyPilotError
from controlplane.skypilot.retry import RetryPolicy
from controlplane.skypilot.task import TaskSettings
from controlplane.vault import CredentialStore, Vault
from starter.connection import connect
from starter.schedules import ensure_reconcile_schedule
from workflows.deployment import DeploymentWorkflow
from workflows.node import NodeWorkflow
from workflows.reconcile import ReconcileWorkflow
from workflows.terminate import TerminateClusterWorkflow

log = logging.getLogger("worker")

WORKFLOWS: Sequence[type] = (
    NodeWorkflow,
    DeploymentWorkflow,
    TerminateClusterWorkflow,
    ReconcileWorkflow,
)
GRACEFUL_SHUTDOWN = timedelta(seconds=30)


@dataclass
class Activities:
    records: RecordActivities
    credentials: CredentialActivities
    skypilot: SkyPilotActivities
    reconcile: ReconcileActivities

    def all(self) -> list[Any]:
        return [
            self.records.record_intent,
            self.records.record_transition,
            self.records.lookup_cluster,
            self.credentials.credential_reference,
            self.skypilot.launch_cluster,
            self.skypilot.wait_ready,
            self.skypilot.cluster_health,
            self.skypilot.down_cluster,
            self.reconcile.recover_node,
            self.reconcile.reconcile_scan,
        ]


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


def api_client(settings: Settings, metrics: Metrics | None = None) -> SkyPilotClient:
    assert settings.skypilot_api_server_url is not None
    return SkyPilotClient(
        settings.skypilot_api_server_url,
        token=settings.skypilot_service_account_token,
        identity=Identity(settings.skypilot_user_id, settings.skypilot_user_name),
        retry=RetryPolicy(
            max_retries=settings.skypilot_max_retries,
            backoff_s=settings.skypilot_retry_backoff.total_seconds(),
        ),
        timeouts=Timeouts(read=settings.skypilot_status_timeout.total_seconds()),
        observer=metrics,
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
                settings.skypilot_api_server_url,
                settings.skypilot_use_api_server,
            )
            await check_api_health(client)
        if not settings.skypilot_use_api_server:
            log.info(
                "SkyPilot API client not configured for new nodes, using CLI mode (%s)",
                settings.skypilot_cli_path,
            )
        backends[LaunchMode.CLI] = CliBackend(
            SkyCLI(
                settings.skypilot_cli_path,
                launch_timeout=settings.skypilot_launch_timeout.total_seconds(),
                terminate_timeout=settings.skypilot_terminate_timeout.total_seconds(),
                status_timeout=settings.skypilot_status_timeout.total_seconds(),
            ),
            observer=metrics,
        )
        engine = create_engine(settings.database_url)
        stack.push_async_callback(engine.dispose)
        store = None
        if settings.encryption_key is not None:
            vault = Vault(settings.encryption_key, settings.previous_encryption_keys)
            store = CredentialStore(vault, CredentialRepository(engine))
        probe_http = await stack.enter_async_context(httpx.AsyncClient())
        nodes = NodeRepository(engine)
        records = RecordActivities(nodes, settings, metrics)
        refresher = asyncio.create_task(refresh_node_counts(metrics, nodes))
        stack.callback(refresher.cancel)
        yield Activities(
            records=records,
            credentials=CredentialActivities(
                CredentialRepository(engine), can_decrypt=store is not None
            ),
            skypilot=SkyPilotActivities(backends, store, task_settings(settings), probe_http),
            reconcile=ReconcileActivities(
                backends, nodes, settings, records.default_mode(), metrics
            ),
        )


async def refresh_node_counts(
    metrics: Metrics, nodes: NodeRepository, interval: float = 15.0
) -> None:
    """Keep the nodes-by-state gauge current; a database hiccup only skips one refresh."""
    while True:
        try:
            metrics.set_node_counts(await nodes.count_by_status())
        except DATABASE_ERRORS as exc:
            log.warning("could not refresh node counts: %s", summarize_database_error(exc))
        await asyncio.sleep(interval)


def create_worker(client: Client, settings: Settings, activities: Activities) -> Worker:
    return Worker(
        client,
        task_queue=settings.temporal_task_queue,
        workflows=list(WORKFLOWS),
        activities=activities.all(),
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )


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
            settings.temporal_address,
            settings.temporal_namespace,
            exc,
        )
        return 1
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
        log.info(
            "worker polling task queue %s on %s (namespace %s)",
            settings.temporal_task_queue,
            settings.temporal_address,
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
