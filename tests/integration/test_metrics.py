"""The worker's /metrics endpoint, scraped after real work: every series and its labels.

The worker is wired as ``worker.serve`` wires it: a Temporal runtime exporting its own metrics
(``telemetry_runtime``), one ``Metrics`` registry given to the activities (and so to the SkyPilot
client and the CLI runner as their call observer), and a ``MetricsServer`` serving both on one
port. Then: a node's whole life in API mode, a launch that fails for good (compensated), a
reconcile that finds a planted orphan while the API server answers 503 once, and a node's whole
life in CLI mode.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import timedelta

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from pydantic import SecretStr
from temporalio.client import Client, WorkflowFailureError
from temporalio.contrib.pydantic import pydantic_data_converter

from controlplane.config import Settings, load_settings
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.metrics import Metrics, MetricsServer
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.task import TaskSettings, build_task
from controlplane.spec import NodeSpec
from starter.api import ControlPlane
from tests.integration.conftest import SIM_TOKEN, Stack
from tests.support.specs import node_spec
from worker import create_worker, open_activities, refresh_node_counts, telemetry_runtime
from workflows.models import ReconcileInput
from workflows.node import NodeWorkflow
from workflows.reconcile import ReconcileWorkflow

INJECTED_ERROR = "NoCloudAccessError"
WAIT = timedelta(seconds=60)


@dataclass
class Scrape:
    """One scrape: each family by name (with its type), each sample by sample name."""

    types: dict[str, str]
    samples: dict[str, list[Sample]]

    def of(self, name: str, **labels: str) -> list[Sample]:
        return [
            s
            for s in self.samples.get(name, [])
            if all(s.labels.get(k) == v for k, v in labels.items())
        ]

    def value(self, name: str, **labels: str) -> float:
        return sum(s.value for s in self.of(name, **labels))

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples.get(name, [])}

    def label_sets(self, name: str) -> set[frozenset[str]]:
        return {frozenset(s.labels) for s in self.samples.get(name, [])}


async def scrape(url: str) -> Scrape:
    async with httpx.AsyncClient() as http:
        response = await http.get(url, timeout=10)
        assert (await http.get(url.replace("/metrics", "/nope"), timeout=10)).status_code == 404
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    types: dict[str, str] = {}
    samples: dict[str, list[Sample]] = {}
    for family in text_string_to_metric_families(response.text):
        types[family.name] = family.type
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return Scrape(types, samples)


@dataclass
class Observed:
    stack: Stack
    settings: Settings
    client: Client
    metrics: Metrics
    url: str

    @property
    def control(self) -> ControlPlane:
        return ControlPlane(self.client, self.settings.temporal_task_queue)


@pytest.fixture
async def observed(stack: Stack) -> AsyncIterator[Observed]:
    settings = load_settings(
        {**stack.env, "RECONCILE_ORPHAN_GRACE": "1ms", "SKYPILOT_RETRY_BACKOFF": "100ms"}
    )
    runtime, temporal_metrics_url = telemetry_runtime()
    metrics = Metrics()
    server = MetricsServer(metrics, "127.0.0.1", 0, temporal_metrics_url).start()
    try:
        client = await Client.connect(
            settings.temporal_address,
            namespace=settings.temporal_namespace,
            runtime=runtime,
            data_converter=pydantic_data_converter,
        )
        async with (
            open_activities(settings, metrics) as activities,
            create_worker(client, settings, activities),
        ):
            yield Observed(stack, settings, client, metrics, server.url)
    finally:
        server.stop()


def new_spec(deployment: str) -> NodeSpec:
    return node_spec(tenant=f"mx{uuid.uuid4().hex[:6]}", deployment=deployment)


async def lifecycle(control: ControlPlane, mode: LaunchMode) -> NodeSpec:
    spec = new_spec(f"life-{mode.value}")
    started = await control.launch_node(spec, launch_mode=mode)
    view = await control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT
    )
    assert view.status is NodeStatus.RUNNING, view.error
    response = await control.terminate_node(started.workflow_id)
    assert response.status is NodeStatus.TERMINATED
    return spec


async def failed_launch(observed: Observed, repo: NodeRepository) -> None:
    """One launch SkyPilot fails with a permanent error: compensated and recorded failed."""
    sim = observed.stack.simulator
    spec = new_spec("fails")
    saved = sim.faults()
    sim.set_faults(fail_next_launches=1, launch_failure_types=[INJECTED_ERROR])
    try:
        started = await observed.control.launch_node(spec, launch_mode=LaunchMode.API)
        handle = observed.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), WAIT.total_seconds())
    finally:
        sim.set_faults(
            fail_next_launches=saved.fail_next_launches,
            launch_failure_types=saved.launch_failure_types,
        )
    row = await repo.get(spec.node_id)
    assert row is not None
    assert row.status == NodeStatus.FAILED.value
    assert INJECTED_ERROR in (row.error or "")
    assert spec.cluster_name not in sim.counters()["live_clusters"]


async def reconcile_with_orphan_and_a_503(observed: Observed) -> None:
    """A planted orphan is found; the scan's first call meets a 503 and is retried."""
    sim = observed.stack.simulator
    orphan = f"cpn-mx-orphan-{uuid.uuid4().hex[:8]}"
    async with SkyPilotClient(sim.url, token=SecretStr(SIM_TOKEN)) as sky:
        task = build_task(
            new_spec("orphan"), TaskSettings("http://localhost:8080", "0.11.0", "2.8.0")
        )
        await sky.wait_for_request(await sky.launch(orphan, task), timeout=30)
        try:
            unavailable = sim.counters()["unavailable_responses"]
            saved = sim.faults()
            sim.set_faults(unavailable_burst=1, retry_after_s=0)
            try:
                report = await observed.client.execute_workflow(
                    ReconcileWorkflow.run,
                    ReconcileInput(cleanup=False),
                    id=f"reconcile-{uuid.uuid4().hex[:8]}",
                    task_queue=observed.settings.temporal_task_queue,
                    execution_timeout=WAIT,
                )
            finally:
                sim.set_faults(
                    unavailable_burst=saved.unavailable_burst, retry_after_s=saved.retry_after_s
                )
            assert sim.counters()["unavailable_responses"] == unavailable + 1
            assert orphan in {f.cluster_name for f in report.orphans}
        finally:
            await sky.terminate(orphan, timeout=30)


async def refreshed_scrape(
    observed: Observed, repo: NodeRepository
) -> tuple[Scrape, dict[str, int]]:
    """Run the worker's node-count refresher until the gauge shows the database's counts."""
    expected = await repo.count_by_status()
    refresher = asyncio.create_task(refresh_node_counts(observed.metrics, repo, interval=0.1))
    try:
        async with asyncio.timeout(10):
            while True:
                scraped = await scrape(observed.url)
                shown = {s.labels["state"]: int(s.value) for s in scraped.of("controlplane_nodes")}
                if all(shown.get(state, 0) == n for state, n in expected.items()):
                    return scraped, expected
                await asyncio.sleep(0.1)
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher


def operations(scraped: Scrape, name: str) -> set[str]:
    return scraped.label_values(name, "operation")


def only_labels(scraped: Scrape, names: Iterable[str], labels: set[str]) -> None:
    for name in names:
        assert scraped.samples.get(name), f"no {name} series"
        assert scraped.label_sets(name) == {frozenset(labels)}, name


async def test_metrics_endpoint_after_a_lifecycle(observed: Observed, repo: NodeRepository) -> None:
    control = observed.control
    await lifecycle(control, LaunchMode.API)
    await failed_launch(observed, repo)
    await reconcile_with_orphan_and_a_503(observed)

    # The CLI's calls are recorded in the same series as the REST client's.
    before_cli = await scrape(observed.url)
    await lifecycle(control, LaunchMode.CLI)
    m, counts = await refreshed_scrape(observed, repo)

    launches = "skypilot_api_requests_total"
    for operation in ("launch", "down"):
        grew = m.value(launches, operation=operation, status="success") - before_cli.value(
            launches, operation=operation, status="success"
        )
        assert grew == 1, operation

    # --- the guide's four SkyPilot series ---
    assert m.types["skypilot_api_requests"] == "counter"
    only_labels(m, [launches], {"operation", "status"})
    assert m.label_values(launches, "status") == {"success", "error"}
    assert {"launch", "validate", "wait", "status", "endpoints", "down"} <= operations(m, launches)
    assert m.value(launches, operation="wait", status="error") >= 1  # the failed launch

    duration = "skypilot_api_request_duration_seconds"
    assert m.types[duration] == "histogram"
    only_labels(m, [f"{duration}_count", f"{duration}_sum"], {"operation"})
    assert m.label_sets(f"{duration}_bucket") == {frozenset({"operation", "le"})}
    for operation in operations(m, launches):
        # Every finished call is timed once: as many observations as calls.
        assert m.value(f"{duration}_count", operation=operation) == m.value(
            launches, operation=operation
        ), operation
        assert m.value(f"{duration}_bucket", operation=operation, le="+Inf") == m.value(
            launches, operation=operation
        )

    errors = "skypilot_api_errors_total"
    assert m.types["skypilot_api_errors"] == "counter"
    only_labels(m, [errors], {"operation", "error_type"})
    assert m.value(errors, operation="wait", error_type=INJECTED_ERROR) == 1
    assert m.value(errors) == m.value(launches, status="error")

    retries = "skypilot_api_retries_total"
    assert m.types["skypilot_api_retries"] == "counter"
    only_labels(m, [retries], {"operation"})
    assert m.value(retries) >= 1  # the reconcile scan's first call (health, then status) met a 503

    # --- lifecycle series ---
    assert m.types["controlplane_nodes"] == "gauge"
    only_labels(m, ["controlplane_nodes"], {"state"})
    assert m.label_values("controlplane_nodes", "state") == {s.value for s in NodeStatus}
    for state in NodeStatus:
        assert m.value("controlplane_nodes", state=state.value) == counts.get(state.value, 0)
    assert counts[NodeStatus.TERMINATED.value] >= 2
    assert counts[NodeStatus.FAILED.value] >= 1
    assert m.types["controlplane_cleanup_failed_nodes"] == "gauge"
    assert m.value("controlplane_cleanup_failed_nodes") == counts.get(
        NodeStatus.CLEANUP_FAILED.value, 0
    )

    assert m.types["controlplane_node_launch_to_ready_seconds"] == "histogram"
    assert m.value("controlplane_node_launch_to_ready_seconds_count") >= 2
    assert m.value("controlplane_node_launch_to_ready_seconds_sum") > 0
    assert m.types["controlplane_node_terminate_seconds"] == "histogram"
    assert m.value("controlplane_node_terminate_seconds_count") >= 2
    assert m.types["controlplane_compensations"] == "counter"
    only_labels(m, ["controlplane_compensations_total"], {"reason"})
    assert m.value("controlplane_compensations_total", reason="error") == 1
    assert m.types["controlplane_orphans_found"] == "counter"
    assert m.value("controlplane_orphans_found_total") >= 1

    # --- the Temporal runtime's own series, passed through on the same port ---
    queue = observed.settings.temporal_task_queue
    temporal = {name for name in m.samples if name.startswith("temporal_")}
    assert temporal, "no temporal_ series on the endpoint"
    # Counters come without a _total suffix (PrometheusConfig's default); the parser adds it.
    assert m.types["temporal_workflow_completed"] == "counter"
    completed = "temporal_workflow_completed_total"
    assert m.value(completed, task_queue=queue, workflow_type="NodeWorkflow") >= 2
    assert m.value(completed, task_queue=queue, workflow_type="ReconcileWorkflow") >= 1
    assert (
        m.value("temporal_workflow_failed_total", task_queue=queue, workflow_type="NodeWorkflow")
        >= 1
    )
    assert m.types["temporal_activity_execution_latency"] == "histogram"
    latency = m.of("temporal_activity_execution_latency_count", task_queue=queue)
    assert {s.labels["activity_type"] for s in latency} >= {
        "launch_cluster",
        "wait_ready",
        "down_cluster",
        "reconcile_scan",
    }
    # The node's database steps are local activities (workflows/node.py, local-db-steps).
    local = m.of("temporal_local_activity_execution_latency_count", task_queue=queue)
    assert {s.labels["activity_type"] for s in local} >= {"record_intent", "record_transition"}
    assert m.value("temporal_worker_start_total", task_queue=queue) == 1
