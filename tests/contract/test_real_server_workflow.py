"""NodeWorkflow end to end against the real skypilot 0.14.1 API server (issue 10, path 8).

Seen against the real server: it refused the worker's token at ``POST /validate``, before any
launch was sent, and compensation then tried to down a cluster that never existed, was refused
again and recorded ``cleanup_failed``: a leak alarm for GPUs nobody launched. These tests run the
node workflow for real — a Temporal dev server, the worker's own activities (``open_activities``
and ``create_worker``, as worker.py), a migrated Postgres database and the API-mode client —
against the real server the contract suite starts (one per session, service accounts on):

- with a token the server issued for the test and no cloud, a node ends ``failed`` with
  ``NoCloudAccessError``, its row and events say so, and the server lists no cluster;
- with a token the server refuses, the worker's start-up check names
  ``SKYPILOT_SERVICE_ACCOUNT_TOKEN`` and the server's reason, and the node ends ``failed`` with
  no ``cleanup_failed`` row or event and no down attempted (nothing was ever submitted). Two
  refusals: a token that server never issued, and the case that was seen, a real token sent to
  a server without service accounts (a second real server, started for this module).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from controlplane.config import Settings, load_settings
from controlplane.db.engine import create_engine
from controlplane.db.models import EventRow, NodeRow
from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.skypilot.client import Identity, SkyPilotClient
from controlplane.spec import NodeSpec
from devtools.devstack import ServerDatabases, Timings, new_encryption_key, worker_settings_env
from starter.api import ControlPlane
from tests.contract.conftest import Backend, _selected
from tests.support.in_process_worker import in_process_worker
from tests.support.real_skypilot import (
    RealSkyPilotServer,
    issue_service_account_token,
    skypilot_venv,
)
from tests.support.specs import new_spec
from workflows.models import NodeView
from workflows.node import NodeWorkflow

pytestmark = [
    pytest.mark.real_server,
    pytest.mark.skipif(
        not (skypilot_venv() / "bin" / "sky").exists(),
        reason=f"no skypilot 0.14.1 virtualenv at {skypilot_venv()} (scripts/bootstrap "
        "--skypilot-server makes it; scripts/test and .ci/run do so)",
    ),
    pytest.mark.skipif(
        "real" not in _selected(), reason="the real backend is not in CONTRACT_BACKENDS"
    ),
]

ENCRYPTION_KEY = new_encryption_key()
# The real server's pace: a launch without a cloud fails within seconds, a down of a cluster it
# never made answers at once.
REAL_SERVER_TIMINGS = Timings(
    retry_backoff="200ms", launch_timeout="180s", terminate_timeout="60s", heartbeat_timeout="10s"
)
# Shaped like the server's own tokens (sky_ + a JWT) but never issued by it.
REFUSED_TOKEN = "sky_eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJub2JvZHkifQ.not-issued-here"


@pytest.fixture
def temporal(dev_server: WorkflowEnvironment) -> WorkflowEnvironment:
    """The session's Temporal dev server (tests/conftest.py); each test has its own queue."""
    return dev_server


@pytest.fixture(scope="module")
async def node_database(databases: ServerDatabases) -> str:
    return await databases.create(migrated=True)


@pytest.fixture(scope="module")
def issued_token(real_backend: Backend) -> str:
    """A service-account token the real server issued for this test module."""
    return issue_service_account_token(real_backend.url, f"cp_wf_{uuid.uuid4().hex[:8]}")


@pytest.fixture(scope="module")
def server_without_service_accounts() -> Iterator[str]:
    """A second real server, as the one the refusal was seen on: service accounts off."""
    server = RealSkyPilotServer(service_accounts=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@dataclass
class Refusal:
    url: str  # the server the worker talks to
    token: str  # the worker's SKYPILOT_SERVICE_ACCOUNT_TOKEN, which that server refuses
    reason: str  # the server's own words
    lookup_token: str | None  # what the test looks the server up with afterwards


@pytest.fixture(params=["token-never-issued", "service-accounts-off"])
def refusal(request: pytest.FixtureRequest, real_backend: Backend, issued_token: str) -> Refusal:
    if request.param == "token-never-issued":
        return Refusal(
            real_backend.url,
            REFUSED_TOKEN,
            "Invalid or expired service account token",
            issued_token,
        )
    url: str = request.getfixturevalue("server_without_service_accounts")
    # A token a real server issued, sent to a server that does not take tokens (the seen case).
    return Refusal(url, issued_token, "Service account authentication disabled", None)


@dataclass
class Outcome:
    view: NodeView | None  # the workflow's result, when it completed
    failure: WorkflowFailureError | None  # or how it failed
    row: NodeRow
    events: list[EventRow]
    activities: list[str]  # every activity the workflow scheduled, in order


def settings_for(
    temporal: WorkflowEnvironment, database_url: str, server_url: str, token: str
) -> Settings:
    """The worker's settings as devtools/devstack.py builds them, on the real server."""
    env = worker_settings_env(
        temporal_address=temporal.client.service_client.config.target_host,
        database_url=database_url,
        simulator_url=server_url,  # the real server here
        token=token,
        encryption_key=ENCRYPTION_KEY,
        timings=REAL_SERVER_TIMINGS,
        task_queue=f"real-{uuid.uuid4().hex[:8]}",
        # Bounded, so a teardown refused over and over (before the fix) ends within the test.
        extra={"NODE_CLEANUP_BUDGET": "60s"},
    )
    return load_settings(env)


@contextlib.asynccontextmanager
async def running_worker(temporal: WorkflowEnvironment, settings: Settings) -> AsyncIterator[None]:
    """The worker as worker.py builds it; its start-up checks run against the real server."""
    async with in_process_worker(temporal.client, settings):
        yield


async def scheduled_activities(handle: WorkflowHandle[NodeWorkflow, NodeView]) -> list[str]:
    names = []
    async for event in handle.fetch_history_events():
        if event.event_type == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names.append(event.activity_task_scheduled_event_attributes.activity_type.name)
    return names


async def run_node(temporal: WorkflowEnvironment, settings: Settings, spec: NodeSpec) -> Outcome:
    control = ControlPlane(temporal.client, settings.temporal_task_queue)
    started = await control.launch_node(spec, launch_mode=LaunchMode.API)
    handle = temporal.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
    view: NodeView | None = None
    failure: WorkflowFailureError | None = None
    try:
        view = await handle.result()
    except WorkflowFailureError as exc:
        failure = exc
    engine = create_engine(settings.database_url or "")
    try:
        repo = NodeRepository(engine)
        row = await repo.get(spec.node_id)
        events = await repo.events(spec.node_id)
    finally:
        await engine.dispose()
    assert row is not None, "record_intent wrote no row"
    return Outcome(view, failure, row, events, await scheduled_activities(handle))


async def server_side(
    url: str, token: str | None, cluster_name: str
) -> tuple[list[str], list[str]]:
    """What the real server knows afterwards: its clusters (POST /status, every user) and the
    names of the requests recorded for this cluster."""
    async with SkyPilotClient(
        url,
        token=SecretStr(token) if token else None,
        identity=Identity("orch0001", "orchestrator"),
    ) as sky:
        clusters = [record.name for record in await sky.status()]
        requests = [record.name for record in await sky.find_requests(cluster_name)]
    return clusters, requests


async def test_a_node_without_a_cloud_fails_with_no_cloud_access_and_leaves_no_cluster(
    real_backend: Backend,
    temporal: WorkflowEnvironment,
    node_database: str,
    issued_token: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(temporal, node_database, real_backend.url, issued_token)
    spec = new_spec()
    with caplog.at_level(logging.INFO, logger="worker"):
        async with running_worker(temporal, settings):
            outcome = await run_node(temporal, settings, spec)
    # The start-up check's authenticated call was accepted: no alarm about the token.
    assert "REFUSED" not in caplog.text, caplog.text

    assert outcome.failure is not None, outcome.view
    assert "NoCloudAccessError" in str(outcome.failure.cause), outcome.failure.cause
    row = outcome.row
    assert row.status == NodeStatus.FAILED.value, row
    assert row.error is not None
    assert "NoCloudAccessError" in row.error, row.error
    assert row.request_id is not None  # the launch was submitted, and the server took it
    kinds = [event.event_type for event in outcome.events]
    assert kinds == ["node.launched", "node.failed"], kinds
    assert "NoCloudAccessError" in str(outcome.events[-1].payload), outcome.events[-1]

    clusters, requests = await server_side(real_backend.url, issued_token, row.cluster_name)
    assert row.cluster_name not in clusters, clusters
    # One launch request for the node. It was submitted, so compensation downed the cluster
    # (which SkyPilot never made): "failed", not "cleanup_failed".
    assert requests.count("sky.launch") == 1, requests
    assert "down_cluster" in outcome.activities, outcome.activities


async def test_a_refused_token_fails_the_node_without_a_leak_marker(
    refusal: Refusal,
    temporal: WorkflowEnvironment,
    node_database: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = settings_for(temporal, node_database, refusal.url, refusal.token)
    spec = new_spec()
    with caplog.at_level(logging.INFO, logger="worker"):
        async with running_worker(temporal, settings):
            refused = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
            outcome = await run_node(temporal, settings, spec)
    # The start-up check names the variable and the real server's own reason, not the token.
    assert len(refused) == 1, caplog.text
    assert "SKYPILOT_SERVICE_ACCOUNT_TOKEN" in refused[0], refused
    assert refusal.reason in refused[0], refused
    assert refusal.token not in caplog.text

    assert outcome.failure is not None, outcome.view
    row = outcome.row
    assert row.status == NodeStatus.FAILED.value, row
    assert row.error is not None
    assert "operation=validate" in row.error, row.error
    assert refusal.reason in row.error, row.error
    kinds = [event.event_type for event in outcome.events]
    assert kinds == ["node.failed"], kinds
    assert "node.cleanup_failed" not in kinds
    # Nothing was submitted, so nothing was downed: the workflow never scheduled a down.
    assert "launch_cluster" in outcome.activities, outcome.activities
    assert "down_cluster" not in outcome.activities, outcome.activities

    clusters, requests = await server_side(refusal.url, refusal.lookup_token, row.cluster_name)
    assert row.cluster_name not in clusters, clusters
    assert requests == [], requests
