"""Who retries what, proven with the real SkyPilot activities inside the real NodeWorkflow.

The launch and down activities run for real over a scripted API server (an httpx transport);
the database steps are the in-memory fakes. Temporal's retry policy is the one owner of retries
of a call that may have reached the server (issue 9), and a teardown retries every failure
within its budget except the few proven permanent (issue 10, path 5).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from pydantic import SecretStr
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from activities.skypilot import SkyPilotActivities
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.skypilot.backend import ApiBackend
from controlplane.skypilot.client import Identity, SkyPilotClient, Timeouts
from controlplane.skypilot.errors import CommandError
from controlplane.skypilot.models import ClusterRecord, ClusterStatus, TerminateResult
from controlplane.skypilot.retry import RetryPolicy
from controlplane.skypilot.task import TaskSettings
from tests.support.scripted_sky import ScriptedServer, failed_request, reply
from tests.workflows.fakes import FakeActivities
from tests.workflows.test_node_workflow import SPEC, start
from tests.workflows.workers import running_worker
from workflows.models import NodeView, TerminateNodeRequest
from workflows.node import NodeWorkflow

MAX_RETRIES = 3  # SKYPILOT_MAX_RETRIES, for the client and the workflow's plan alike
TASK_SETTINGS = TaskSettings(
    control_plane_url="http://cp.test", vllm_version="0.11.0", torch_version="2.8.0"
)


class RetryCounter:
    """The client's CallObserver, keeping only the retries (skypilot_api_retries_total)."""

    def __init__(self) -> None:
        self.retried: list[str] = []

    def call_finished(self, operation: str, outcome: str, seconds: float) -> None:
        return None

    def call_failed(self, operation: str, error_type: str) -> None:
        return None

    def call_retried(self, operation: str) -> None:
        self.retried.append(operation)


class FlakyCli:
    """The CLI backend's seam: `sky down` exits with an unclassified error ``failures`` times."""

    mode = LaunchMode.CLI

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.downs = 0

    async def launch(self, *args: Any, **kwargs: Any) -> str | None:
        raise AssertionError("not launched in these tests")

    async def wait_launched(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("not launched in these tests")

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        return ClusterStatus.TERMINATED

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        return None

    async def cancel_launches(self, cluster_name: str) -> list[str]:
        return []

    async def terminate(self, cluster_name: str, timeout: float) -> TerminateResult:
        self.downs += 1
        if self.downs <= self.failures:
            raise CommandError("`sky down` exited 1: connection reset", operation="down")
        return TerminateResult(cluster_name=cluster_name)

    async def list_clusters(self) -> list[ClusterRecord]:
        return []


@asynccontextmanager
async def node_worker(
    env: WorkflowEnvironment,
    task_queue: str,
    server: ScriptedServer,
    *,
    real: tuple[str, ...],
    cli: FlakyCli | None = None,
    observer: RetryCounter | None = None,
    commit_horizon: float = 30.0,
) -> AsyncIterator[FakeActivities]:
    """A worker whose ``real`` activities talk to ``server``; the rest are the fakes."""
    fakes = FakeActivities(max_retries=MAX_RETRIES)
    client = SkyPilotClient(
        "http://sky.test",
        token=SecretStr("sky_workflow-test-token"),
        identity=Identity("orch0001", "orchestrator"),
        retry=RetryPolicy(max_retries=MAX_RETRIES, backoff_s=0.01, jitter=0),
        transport=httpx.MockTransport(server.handler),
        observer=observer,
        timeouts=Timeouts(commit_horizon=commit_horizon),
    )
    backends: dict[LaunchMode, Any] = {LaunchMode.API: ApiBackend(client)}
    if cli is not None:
        backends[LaunchMode.CLI] = cli
    async with client, httpx.AsyncClient() as probe:
        sky = SkyPilotActivities(backends, None, TASK_SETTINGS, probe)
        chosen: dict[str, Callable[..., Any]] = {
            "launch_cluster": sky.launch_cluster
            if "launch_cluster" in real
            else fakes.launch_cluster,
            "down_cluster": sky.down_cluster if "down_cluster" in real else fakes.down_cluster,
        }
        # Every activity the workflow may call (fakes.all()), with the chosen ones made real.
        activities: list[Callable[..., Any]] = [
            chosen.get(getattr(fake, "__temporal_activity_definition").name, fake)
            for fake in fakes.all()
        ]
        async with running_worker(env, task_queue, fakes, activities=activities):
            yield fakes


async def test_a_submit_answered_503_forever_is_sent_at_most_max_retries_plus_one_times(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    server = ScriptedServer()
    server.always("POST /launch", reply(503, {"detail": "busy"}))
    retries = RetryCounter()
    # Each retried attempt first looks for an earlier attempt's late commit, until the commit
    # horizon: 1 s here rather than the default 30 s (which made this test take 90 s).
    async with node_worker(
        env, task_queue, server, real=("launch_cluster",), observer=retries, commit_horizon=1.0
    ) as fakes:
        handle = await start(env, task_queue, launch_mode=LaunchMode.API)
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    # One send per activity attempt, and the node's SkyPilot retry policy allows
    # max_retries + 1 attempts: 4 sends, where three retry layers used to make 16.
    assert server.count("POST", "/launch") == MAX_RETRIES + 1
    assert fakes.statuses() == [NodeStatus.FAILED]
    # Temporal's retries still show in skypilot_api_retries_total: each retried attempt's
    # first call (the launch activity validates first).
    assert retries.retried == ["validate"] * MAX_RETRIES


async def test_a_launch_committed_after_the_horizon_is_found_by_the_next_attempt(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    """Issue 10 path 3, across attempts: the first attempt's POST loses its response and the
    server commits it only after that attempt gave up looking (SubmitUnconfirmedError); the next
    attempt looks the node's marker up before sending, and reattaches."""
    server = ScriptedServer()
    held: list[httpx.Request] = []

    def accept_but_commit_later(request: httpx.Request) -> httpx.Response | None:
        held.append(request)
        raise httpx.ReadTimeout("response lost", request=request)

    def commit_once_the_first_attempt_gave_up(request: httpx.Request) -> httpx.Response | None:
        # Attempt 1: one look before sending, three in its 1 s horizon (at 0, 0.5 and 1 s).
        if len(server.status_queries) > 4 and held:
            server.store(held.pop(), "sky.launch")
        return None

    server.on("POST /launch", accept_but_commit_later)
    server.always("GET /api/status", commit_once_the_first_attempt_gave_up)
    async with node_worker(
        env, task_queue, server, real=("launch_cluster",), commit_horizon=1.0
    ) as fakes:
        view = await _run_to_terminate(env, task_queue)
    assert view.status is NodeStatus.TERMINATED, view.error
    assert server.count("POST", "/launch") == 1
    assert server.launches_of(SPEC.cluster_name) == 1
    [launched] = fakes.rows.values()
    assert launched.request_id == next(iter(server.requests))


def _down_fails_once(server: ScriptedServer, shape: str) -> None:
    """Make the first down fail the way ``shape`` names (issue 10, path 5)."""
    if shape in ("RuntimeError", "ClientError"):
        server.on("GET /api/get", failed_request(server, shape, "the server's down raised"))
    elif shape == "401":
        detail = {"detail": "Invalid or expired service account token"}
        server.on("POST /down", reply(401, detail))
    elif shape == "404":
        server.on("GET /api/get", reply(404, {"detail": "Request 'x' not found"}))
    else:
        raise AssertionError(shape)


async def _run_to_terminate(
    env: WorkflowEnvironment, task_queue: str, launch_mode: LaunchMode = LaunchMode.API
) -> NodeView:
    handle = await start(env, task_queue, launch_mode=launch_mode)
    for _ in range(400):
        if (await handle.query(NodeWorkflow.status)).status is NodeStatus.RUNNING:
            break
        await env.sleep(0.05)
    await handle.signal(NodeWorkflow.request_terminate, TerminateNodeRequest(reason="done"))
    return await handle.result()


@pytest.mark.parametrize("shape", ["RuntimeError", "ClientError", "401", "404"])
async def test_a_teardown_error_that_may_pass_is_retried_until_the_node_is_terminated(
    env: WorkflowEnvironment, task_queue: str, shape: str
) -> None:
    server = ScriptedServer()
    async with node_worker(env, task_queue, server, real=("down_cluster",)) as fakes:
        _down_fails_once(server, shape)
        view = await _run_to_terminate(env, task_queue)
    assert view.status is NodeStatus.TERMINATED, view.error
    assert server.count("POST", "/down") == 2
    assert fakes.statuses() == [NodeStatus.TERMINATED]


async def test_a_cli_command_error_on_down_is_retried_until_the_node_is_terminated(
    env: WorkflowEnvironment, task_queue: str
) -> None:
    cli = FlakyCli(failures=2)
    async with node_worker(env, task_queue, ScriptedServer(), real=("down_cluster",), cli=cli):
        view = await _run_to_terminate(env, task_queue, LaunchMode.CLI)
    assert view.status is NodeStatus.TERMINATED, view.error
    assert cli.downs == 3


@pytest.mark.parametrize(
    "answer",
    [
        "InvalidClusterNameError",
        "422",
    ],
)
async def test_a_teardown_error_proven_permanent_is_not_retried(
    env: WorkflowEnvironment, task_queue: str, answer: str
) -> None:
    server = ScriptedServer()
    if answer == "422":
        detail = [{"type": "missing", "loc": ["body", "cluster_name"], "msg": "Field required"}]
        server.always("POST /down", reply(422, {"detail": detail}))
    else:
        server.always("GET /api/get", failed_request(server, answer, "bad name"))
    async with node_worker(env, task_queue, server, real=("down_cluster",)):
        view = await _run_to_terminate(env, task_queue)
    assert view.status is NodeStatus.CLEANUP_FAILED
    assert server.count("POST", "/down") == 1
