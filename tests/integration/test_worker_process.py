"""The worker as a real process: killed mid-launch, stopped gracefully, started degraded or broken.

These tests run ``worker.py`` (tests/support/worker_process.py) against the session's Temporal
dev server and Postgres, and against a dedicated simulator whose launches take seconds, so a
signal lands while a launch is in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.service import RPCError

from controlplane.db.repository import NodeRepository
from controlplane.lifecycle import LaunchMode, NodeStatus
from controlplane.skypilot.client import SkyPilotClient
from controlplane.spec import NodeSpec
from devtools.devstack import worker_process_env
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer
from starter.api import ControlPlane, NodeStarted
from tests.integration.conftest import ENCRYPTION_KEY, SIM_TOKEN, Stack, new_spec
from tests.support.nodes import assert_terminated_cleanly
from tests.support.ports import free_port
from tests.support.worker_process import WorkerProcess
from workflows.models import NodeView
from workflows.node import NodeWorkflow

LAUNCH_DELAY_S = 4.0
# GRACEFUL_SHUTDOWN in worker.py is 30 s; a few seconds on top for the process to exit.
GRACEFUL_WINDOW_S = 35.0


@pytest.fixture(scope="module")
def slow_simulator() -> Iterator[SimulatorServer]:
    """A simulator whose launches stay INIT for seconds: long enough to kill a worker in them."""
    server = SimulatorServer(
        SimConfig(
            port=0,
            launch_delay_s=LAUNCH_DELAY_S,
            model_warmup_s=0.3,
            down_delay_s=0.2,
            service_account_tokens=[SIM_TOKEN],
        )
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def wait_row(repo: NodeRepository, node_id: str, status: NodeStatus, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        row = await repo.get(node_id)
        if row is not None and row.status == status.value:
            return
        if time.monotonic() > deadline:
            found = row.status if row is not None else "no row"
            raise AssertionError(f"node {node_id} not {status.value} after {timeout}s: {found}")
        await asyncio.sleep(0.1)


async def launch_in_flight(
    worker: WorkerProcess,
    control: ControlPlane,
    repo: NodeRepository,
    simulator: SimulatorServer,
    spec: NodeSpec,
) -> NodeStarted:
    """Once ``worker`` polls, start the node and wait until its launch is in flight: the row
    says launching and the cluster is still INIT."""
    await worker.wait_polling()
    started = await control.launch_node(spec, launch_mode=LaunchMode.API)
    await wait_row(repo, spec.node_id, NodeStatus.LAUNCHING, timeout=15)
    assert simulator.cluster_status(spec.cluster_name) == "INIT"
    return started


async def wait_view(
    control: ControlPlane, workflow_id: str, status: NodeStatus, timeout: float
) -> NodeView:
    """The status query until ``status``; tolerates RPC errors while a worker is (re)starting."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            view = await asyncio.wait_for(control.node_status(workflow_id), timeout=10)
        except (RPCError, TimeoutError) as exc:
            last = exc
        else:
            if view.status is status:
                return view
            last = view
            if view.status.final:
                break
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} not {status.value} within {timeout}s; last: {last!r}")


async def assert_no_orphan(
    stack: Stack,
    repo: NodeRepository,
    sim: SimulatorServer,
    spec: NodeSpec,
    workflow_id: str,
) -> None:
    """Terminate the running node, then: one launch request, no cluster, row and events clean."""
    response = await stack.control.terminate_node(workflow_id)
    assert response.status is NodeStatus.TERMINATED
    assert not response.still_terminating
    result = await stack.client.get_workflow_handle_for(NodeWorkflow.run, workflow_id).result()
    assert result.status is NodeStatus.TERMINATED

    counters = sim.counters()
    assert counters["launch_requests"].get(spec.cluster_name) == 1, counters["launch_requests"]
    assert spec.cluster_name not in counters["live_clusters"]
    await assert_terminated_cleanly(repo, spec.node_id)


@dataclass
class Takeover:
    """A node started through a first worker process on the slow simulator, and the second
    worker process that must take it over when the first is gone."""

    stack: Stack
    simulator: SimulatorServer
    repo: NodeRepository
    env: dict[str, str]
    logs: Path
    spec: NodeSpec = field(default_factory=new_spec)

    @contextlib.asynccontextmanager
    async def first_worker(
        self, launch: Callable[[WorkerProcess], Awaitable[NodeStarted]]
    ) -> AsyncIterator[tuple[WorkerProcess, NodeStarted]]:
        """The first worker, once ``launch`` (given it) has the node's launch in flight."""
        async with WorkerProcess(self.env, self.logs, "first") as first:
            yield first, await launch(first)

    async def launch_api(self, worker: WorkerProcess) -> NodeStarted:
        return await launch_in_flight(
            worker, self.stack.control, self.repo, self.simulator, self.spec
        )

    async def launch_cli(self, worker: WorkerProcess) -> NodeStarted:
        return await cli_launch_reaching_server(
            worker, self.stack.control, self.simulator, self.spec
        )

    async def first_killed_mid_launch(
        self, launch: Callable[[WorkerProcess], Awaitable[NodeStarted]], *, within: float = 30
    ) -> tuple[NodeView, str]:
        """The first worker SIGKILLed with the launch in flight; the launch was sent once, and
        the second worker takes the node over (``second_worker_runs_it``)."""
        async with self.first_worker(launch) as (first, started):
            assert await first.kill() == -9
        assert self.launch_requests() == 1
        return await self.second_worker_runs_it(started.workflow_id, within=within)

    def launch_requests(self) -> object:
        """The launch requests the simulator saw for the node's cluster (None: none)."""
        return self.simulator.counters()["launch_requests"].get(self.spec.cluster_name)

    async def second_worker_runs_it(
        self, workflow_id: str, *, within: float = 30
    ) -> tuple[NodeView, str]:
        """The second worker brings the node to RUNNING (row within ``within`` s); then it is
        terminated with no orphan and the worker exits 0. Returns the running view and the
        worker's log."""
        async with WorkerProcess(self.env, self.logs, "second") as second:
            await second.wait_polling()
            await wait_row(self.repo, self.spec.node_id, NodeStatus.RUNNING, timeout=within)
            view = await wait_view(self.stack.control, workflow_id, NodeStatus.RUNNING, timeout=15)
            await assert_no_orphan(self.stack, self.repo, self.simulator, self.spec, workflow_id)
            log = second.stderr()
            assert await second.terminate() == 0, second.output()
        return view, log


@pytest.fixture
def api_takeover(
    stack: Stack, slow_simulator: SimulatorServer, repo: NodeRepository, tmp_path: Path
) -> Takeover:
    env = worker_process_env(stack.env, SKYPILOT_API_SERVER_URL=slow_simulator.url)
    return Takeover(stack, slow_simulator, repo, env, tmp_path)


async def test_worker_killed_mid_launch_and_restarted_launches_once(
    api_takeover: Takeover,
) -> None:
    """Killed inside wait_ready (or finishing launch_cluster), the launch request submitted and
    the cluster still coming up: the dead worker's activity times out on its heartbeat (3 s)
    and the next worker retries it without launching again."""
    view, _ = await api_takeover.first_killed_mid_launch(api_takeover.launch_api)
    assert view.endpoint
    assert api_takeover.spec.cluster_name in view.endpoint


async def test_sigterm_with_activity_in_flight_is_graceful(api_takeover: Takeover) -> None:
    t = api_takeover
    async with t.first_worker(t.launch_api) as (first, started):
        began = time.monotonic()
        code = await first.terminate(timeout=GRACEFUL_WINDOW_S)
        elapsed = time.monotonic() - began
        assert code == 0, first.output()
        assert elapsed < GRACEFUL_WINDOW_S
        log = first.stderr()
        assert "shutting down" in log
        assert "worker stopped" in log
        assert "Traceback" not in log, log

    await t.second_worker_runs_it(started.workflow_id)


async def test_worker_starts_and_polls_while_api_server_is_down(
    stack: Stack, tmp_path: Path
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    env = worker_process_env(stack.env, SKYPILOT_API_SERVER_URL=closed)

    async with WorkerProcess(env, tmp_path) as worker:
        await worker.wait_polling()
        log = worker.stderr()
        assert "health check failed" in log
        assert log.index("health check failed") < log.index("worker polling")
        assert worker.returncode is None

        # Polling for real: the worker's identity (pid@host) is among the task queue's pollers.
        request = DescribeTaskQueueRequest(
            namespace=stack.client.namespace,
            task_queue=TaskQueue(name=stack.settings.temporal_task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
        deadline = time.monotonic() + 15
        identities: list[str] = []
        while time.monotonic() < deadline:
            described = await stack.client.workflow_service.describe_task_queue(request)
            identities = [poller.identity for poller in described.pollers]
            if any(identity.startswith(f"{worker.pid}@") for identity in identities):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"worker {worker.pid} not among the pollers: {identities}")

        assert await worker.terminate() == 0, worker.output()


async def test_configuration_mistake_exits_2_naming_the_variable(
    stack: Stack, tmp_path: Path
) -> None:
    env = worker_process_env(stack.env, SKYPILOT_LAUNCH_TIMEOUT="ten")

    async with WorkerProcess(env, tmp_path) as worker:
        code = await worker.wait(timeout=30)
        stderr = worker.stderr()
        assert code == 2, worker.output()
        assert "SKYPILOT_LAUNCH_TIMEOUT" in stderr
        assert "Traceback" not in stderr
        assert "worker polling" not in stderr
        # The mistake is reported without echoing any secret of the environment.
        assert SIM_TOKEN not in worker.output()
        assert ENCRYPTION_KEY not in worker.output()


@pytest.fixture
def config_only_sky(tmp_path: Path) -> Path:
    """The simulator's `sky`, told nothing by its script: the endpoint and token it uses are the
    ones the runner hands over in the client config (SKYPILOT_GLOBAL_CONFIG), as the real CLI."""
    path = tmp_path / "bin" / "sky"
    path.parent.mkdir()
    path.write_text(
        f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m devtools.skypilot_sim.sky_cli "$@"\n'
    )
    path.chmod(0o755)
    return path


def cli_worker_env(stack: Stack, simulator: SimulatorServer, sky: Path) -> dict[str, str]:
    """A worker process's environment on ``simulator`` whose `sky` is ``sky``."""
    return worker_process_env(
        stack.env, SKYPILOT_API_SERVER_URL=simulator.url, SKYPILOT_CLI_PATH=str(sky)
    )


async def cli_launch_reaching_server(
    worker: WorkerProcess, control: ControlPlane, simulator: SimulatorServer, spec: NodeSpec
) -> NodeStarted:
    """Once ``worker`` polls, start the node in CLI mode; return once the launch reached the
    server (the cluster is INIT: `sky launch` is running)."""
    await worker.wait_polling()
    started = await control.launch_node(spec, launch_mode=LaunchMode.CLI)
    deadline = time.monotonic() + 30
    while simulator.cluster_status(spec.cluster_name) != "INIT":
        assert time.monotonic() < deadline, "the CLI launch never reached the server"
        await asyncio.sleep(0.1)
    return started


@pytest.fixture
def cli_takeover(
    stack: Stack,
    slow_simulator: SimulatorServer,
    repo: NodeRepository,
    tmp_path: Path,
    config_only_sky: Path,
) -> Takeover:
    env = cli_worker_env(stack, slow_simulator, config_only_sky)
    return Takeover(stack, slow_simulator, repo, env, tmp_path)


async def test_worker_killed_mid_cli_launch_reattaches_instead_of_launching_again(
    cli_takeover: Takeover,
) -> None:
    """SIGKILL during `sky launch`: the launch goes on server-side; the retry must not resend it."""
    view, log = await cli_takeover.first_killed_mid_launch(cli_takeover.launch_cli, within=60)
    assert view.endpoint
    assert "reattaching to launch request" in log


async def test_cancelled_cli_launch_cancels_the_server_side_request(
    cli_takeover: Takeover,
) -> None:
    """Killing `sky launch` does not stop the server's launch: compensation must cancel it."""
    t, sim = cli_takeover, cli_takeover.simulator
    cancels_before = sim.counters()["calls"].get("POST /api/cancel", 0)

    async with t.first_worker(t.launch_cli) as (worker, started):
        handle = t.stack.client.get_workflow_handle_for(NodeWorkflow.run, started.workflow_id)
        await handle.cancel()
        await wait_row(t.repo, t.spec.node_id, NodeStatus.FAILED, timeout=60)
        assert await worker.terminate() == 0, worker.output()

    async with SkyPilotClient(sim.url, token=SecretStr(SIM_TOKEN)) as client:
        launches = await client.find_requests(t.spec.cluster_name, name="sky.launch")
    assert [r.status.value for r in launches] == ["CANCELLED"]
    # Cancelled by id through `sky api cancel`, not only as a side effect of the down after it.
    cancels = sim.counters()["calls"].get("POST /api/cancel", 0) - cancels_before
    assert cancels == 1
    assert t.launch_requests() == 1
    assert t.spec.cluster_name not in sim.counters()["live_clusters"]
