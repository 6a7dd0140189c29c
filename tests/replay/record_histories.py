"""Record the histories the replay tests replay: each workflow's main paths, on the real pieces.

    python -m tests.replay.record_histories            # all of them, into tests/replay/histories
    python -m tests.replay.record_histories node_lost  # only some

Starts what the integration tests start (tests/integration/conftest.py): the Temporal dev server,
the SkyPilot simulator, a fresh migrated Postgres database (on TEST_DATABASE_ADMIN_URL, default
postgres@127.0.0.1:5432, dropped again at the end) and the worker in-process, exactly as
worker.py builds it. Each path is driven through the starter API and saved as
``handle.fetch_history().to_json()``, one event per line. Re-record after a deliberate,
versioned workflow change; never to make a failing replay pass.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from pydantic import SecretStr
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from controlplane.config import Settings, load_settings
from controlplane.lifecycle import NodeStatus
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.task import TaskSettings, build_task
from controlplane.spec import NodeSpec
from devtools.devstack import TEST_TIMINGS, Timings, reachable_server, worker_settings_env
from devtools.skypilot_sim.config import DEFAULT_LAUNCH_FAILURE_TYPES
from devtools.skypilot_sim.server import SimulatorServer
from starter.api import ControlPlane, NodeStarted, NotFound
from tests.support.fleet import sweeping
from tests.support.replicas import named
from tests.support.specs import deployment_spec
from tests.support.specs import node_spec as spec_of
from tests.support.temporal_env import local_temporal
from worker import create_worker, open_activities
from workflows.fleet_health import FleetHealthWorkflow
from workflows.fleet_models import FleetHealthInput
from workflows.models import (
    DeploymentPolicy,
    NodeView,
    ReconcileInput,
    TerminateNodeRequest,
    UpdateDeploymentRequest,
)
from workflows.reconcile import ReconcileWorkflow

log = logging.getLogger("record_histories")

HISTORIES = Path(__file__).resolve().parent / "histories"
TOKEN = "sky_replay-recorder-service-account-token"
ENCRYPTION_KEY = base64.b64encode(b"replay-recorder-key-32-bytes-xx!").decode()
MODEL = "NousResearch/Meta-Llama-3-8B-Instruct"
WAIT = timedelta(seconds=60)


@dataclass
class Recorder:
    client: Client
    simulator: SimulatorServer
    main: ControlPlane  # health checks far apart: no health-check noise in the histories
    watched: ControlPlane  # health checks every second: for the lost node
    slow: ControlPlane  # a slow simulator and quick heartbeats: a cancel reaches the launch
    admission: ControlPlane  # SKYPILOT_MAX_INFLIGHT_LAUNCHES=1: the second launch queues
    out: Path

    async def save(self, name: str, handle: WorkflowHandle[object, object]) -> None:
        history = await handle.fetch_history()
        path = self.out / f"{name}.json"
        path.write_text(compact(history.to_json()))
        log.info("%s: %d events, %d bytes", path.name, len(history.events), path.stat().st_size)

    def handle(self, workflow_id: str) -> WorkflowHandle[object, object]:
        return self.client.get_workflow_handle(workflow_id)

    async def terminate_and_save(self, control: ControlPlane, workflow_id: str, name: str) -> None:
        """Terminate the node (it must end terminated), wait for its workflow, save the history."""
        answer = await control.terminate_node(workflow_id)
        assert answer.status is NodeStatus.TERMINATED, answer
        await self.handle(workflow_id).result()
        await self.save(name, self.handle(workflow_id))


def compact(history_json: str) -> str:
    """to_json()'s document with one event per line: a third smaller, and still diffable."""
    document = json.loads(history_json)
    assert list(document) == ["events"], list(document)
    events = ",\n".join(json.dumps(event, separators=(",", ":")) for event in document["events"])
    return '{"events": [\n' + events + "\n]}\n"


def node_spec(name: str, replica: int = 0) -> NodeSpec:
    return spec_of(
        tenant="replay", model=MODEL, deployment=f"{name}-{uuid.uuid4().hex[:6]}", replica=replica
    )


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} did not happen within {timeout:.0f}s")
        await asyncio.sleep(0.1)


async def launch_running(control: ControlPlane, spec: NodeSpec) -> tuple[NodeStarted, NodeView]:
    """Launch ``spec`` and wait (up to WAIT) for it to run; the view it stopped waiting at."""
    started = await control.launch_node(spec)
    view = await control.wait_for_node(
        started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT
    )
    return started, view


# --- the paths ---------------------------------------------------------------------------------
async def node_happy_path(r: Recorder) -> None:
    started, view = await launch_running(r.main, node_spec("happy"))
    assert view.status is NodeStatus.RUNNING, view
    await r.terminate_and_save(r.main, started.workflow_id, "node_happy_path")


async def node_happy_path_bundled(r: Recorder) -> None:
    """The happy path with one patch marker (node-patches-2026-12) for every node patch, the
    launch slot granted by the local first ask and a pinned location (no status call).
    node_happy_path.json is the same path before: a marker per patch, the slot on the queue."""
    started, view = await launch_running(r.main, node_spec("bundled"))
    assert view.status is NodeStatus.RUNNING, view
    await r.terminate_and_save(r.main, started.workflow_id, "node_happy_path_bundled")


async def node_launch_failure(r: Recorder) -> None:
    r.simulator.set_faults(fail_next_launches=1, launch_failure_types=["CloudUserIdentityError"])
    try:
        started = await r.main.launch_node(node_spec("failure"))
        try:
            await r.handle(started.workflow_id).result()
        except WorkflowFailureError:
            pass
        else:
            raise AssertionError("the launch was meant to fail")
    finally:
        r.simulator.set_faults(
            fail_next_launches=0, launch_failure_types=list(DEFAULT_LAUNCH_FAILURE_TYPES)
        )
    view = await r.main.node_status(started.workflow_id)
    assert view.status is NodeStatus.FAILED, view
    await r.save("node_launch_failure", r.handle(started.workflow_id))


async def node_relaunch_after_transient_failure(r: Recorder) -> None:
    r.simulator.set_faults(fail_next_launches=1, launch_failure_types=["ResourcesUnavailableError"])
    try:
        started, view = await launch_running(r.main, node_spec("relaunch"))
    finally:
        r.simulator.set_faults(fail_next_launches=0)
    assert view.status is NodeStatus.RUNNING, view
    await r.main.terminate_node(started.workflow_id)
    await r.handle(started.workflow_id).result()
    await r.save("node_relaunch_after_transient_failure", r.handle(started.workflow_id))


async def cancelled(handle: WorkflowHandle[object, object]) -> None:
    """Cancel the workflow and see it end cancelled."""
    await handle.cancel()
    try:
        await handle.result()
    except WorkflowFailureError:
        return
    raise AssertionError("the workflow was meant to end cancelled")


async def node_cancelled_during_launch(r: Recorder) -> None:
    started = await r.slow.launch_node(node_spec("cancel"))

    async def launching() -> bool:
        status = (await r.slow.node_status(started.workflow_id)).status
        assert status in (NodeStatus.PENDING, NodeStatus.LAUNCHING), status
        return status is NodeStatus.LAUNCHING

    await until(launching, "launching")
    await asyncio.sleep(0.5)  # wait_ready is running and heartbeating: it will see the cancel
    handle = r.handle(started.workflow_id)
    await cancelled(handle)
    view = await r.slow.node_status(started.workflow_id)
    assert view.status is NodeStatus.FAILED, view
    assert view.error == "cancelled", view
    await r.save("node_cancelled_during_launch", handle)


async def node_cancelled_while_terminating(r: Recorder) -> None:
    """A workflow cancel during the teardown lets it finish (patch teardown-survives-cancel)."""
    started, view = await launch_running(r.slow, node_spec("cancel-teardown"))
    assert view.status is NodeStatus.RUNNING, view
    handle = r.handle(started.workflow_id)
    await handle.signal("request_terminate", TerminateNodeRequest(reason="replay recording"))

    async def terminating() -> bool:
        return (await r.slow.node_status(started.workflow_id)).status is NodeStatus.TERMINATING

    await until(terminating, "terminating", timeout=30)
    await cancelled(handle)
    view = await r.slow.node_status(started.workflow_id)
    assert view.status is NodeStatus.TERMINATED, view
    await r.save("node_cancelled_while_terminating", handle)


async def node_lost_found_by_sweep(r: Recorder) -> None:
    """node_lost.json is the same path before the fleet sweep (a per-node health timer)."""
    await lost_found_by_sweep(r, "node_lost_found_by_sweep", "lost")


async def node_lost_after_a_short_second_look(r: Recorder) -> None:
    """node_lost_found_by_sweep.json before NODE_LOST_SECOND_LOOK (a 30 s second look)."""
    await lost_found_by_sweep(r, "node_lost_after_a_short_second_look", "lost-short")


async def lost_found_by_sweep(r: Recorder, name: str, node: str) -> None:
    spec = node_spec(node)
    started = await r.watched.launch_node(spec)
    await r.watched.wait_for_node(started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT)
    assert r.simulator.preempt(spec.cluster_name)
    async with sweeping(r.client, r.watched.task_queue, every=0.5):
        view = await r.watched.wait_for_node(started.workflow_id, until=set(), timeout=WAIT)
    assert view.status is NodeStatus.LOST, view
    await r.handle(started.workflow_id).result()
    await r.save(name, r.handle(started.workflow_id))


async def node_model_unhealthy_then_healthy(r: Recorder) -> None:
    """Also records one FleetHealthWorkflow run: the sweep that found the crashed model."""
    spec = node_spec("sick")
    started = await r.watched.launch_node(spec)
    await r.watched.wait_for_node(started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT)
    assert r.simulator.model_fault(spec.cluster_name, "crash")
    queue = r.watched.task_queue
    found = None
    while found is None:
        run_id = f"fleet-health-{uuid.uuid4().hex[:8]}"
        report = await r.client.execute_workflow(
            FleetHealthWorkflow.run, FleetHealthInput(shards=2), id=run_id, task_queue=queue
        )
        if spec.cluster_name in report.models_changed:
            found = run_id
    await r.watched.wait_for_node(started.workflow_id, until={NodeStatus.UNHEALTHY}, timeout=WAIT)
    assert r.simulator.model_fault(spec.cluster_name, None)
    async with sweeping(r.client, queue, every=0.5):
        await r.watched.wait_for_node(started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT)
    await r.terminate_and_save(r.watched, started.workflow_id, "node_model_unhealthy_then_healthy")
    await r.save("fleet_health_sweep", r.handle(found))


async def fleet_health_lease(r: Recorder) -> None:
    """One lease-mode FleetHealthWorkflow run, as the schedules start them: within the lease
    its activities find a crashed model (node unhealthy) and a preempted cluster (node lost)."""
    sick, gone = node_spec("lease-sick"), node_spec("lease-gone")
    started = [await r.watched.launch_node(spec) for spec in (sick, gone)]
    for node in started:
        await r.watched.wait_for_node(node.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT)
    assert r.simulator.model_fault(sick.cluster_name, "crash")
    assert r.simulator.preempt(gone.cluster_name)
    run = await r.client.start_workflow(
        FleetHealthWorkflow.run,
        FleetHealthInput(shards=2, lease_s=10, interval_s=0.5),
        id=f"fleet-health-lease-{uuid.uuid4().hex[:8]}",
        task_queue=r.watched.task_queue,
    )
    sick_id, gone_id = (node.workflow_id for node in started)
    await r.watched.wait_for_node(sick_id, until={NodeStatus.UNHEALTHY}, timeout=WAIT)
    view = await r.watched.wait_for_node(gone_id, until=set(), timeout=WAIT)
    assert view.status is NodeStatus.LOST, view
    report = await run.result()
    assert report.changed >= 2, report
    assert report.sweeps > 2, report
    await r.watched.terminate_node(sick_id)
    await r.save("fleet_health_lease", r.handle(run.id))


async def node_repaired_in_place(r: Recorder) -> None:
    """A crashed model restarted on its own cluster (SkyPilot exec), then healthy again."""
    spec = node_spec("repair")
    started = await r.watched.launch_node(spec)
    await r.watched.wait_for_node(started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT)
    assert r.simulator.model_fault(spec.cluster_name, "crash")

    async def repaired() -> bool:
        view = await r.watched.node_status(started.workflow_id)
        return view.repairs >= 1 and view.status is NodeStatus.RUNNING

    async with sweeping(r.client, r.watched.task_queue, every=0.5):
        await until(repaired, "restarted in place and healthy again")
    assert (r.simulator.exec_jobs(spec.cluster_name) or 0) >= 1
    await r.terminate_and_save(r.watched, started.workflow_id, "node_repaired_in_place")


async def deployment_controller_heals_and_rolls_out(r: Recorder) -> None:
    """The controller: a preempted replica replaced, a rolling update, then terminate."""
    spec = deployment_spec(tenant="replay", model=MODEL, name=f"heal-{uuid.uuid4().hex[:6]}")
    policy = DeploymentPolicy(backoff_initial_s=1, backoff_max_s=2)
    workflow_id = await r.watched.launch_deployment(spec, replicas=2, policy=policy)

    async def serving(count: int, total: int) -> bool:
        view = await r.watched.deployment_status(workflow_id)
        return view.serving_replicas == count and len(view.replicas) == total

    await until(lambda: serving(2, 2), "two replicas running")
    first = (await r.watched.deployment_status(workflow_id)).replicas[0]
    assert r.simulator.preempt(named(first))
    async with sweeping(r.client, r.watched.task_queue, every=0.5):
        await until(lambda: serving(2, 3), "the preempted replica replaced")
    await r.watched.update_deployment(
        workflow_id, UpdateDeploymentRequest(model="NousResearch/Meta-Llama-3.1-8B-Instruct")
    )
    view = await r.watched.wait_for_rollout(workflow_id, timeout=WAIT)
    assert view.rollout is not None, view
    assert view.rollout.phase == "done", view
    view = await r.watched.terminate_deployment(workflow_id)
    assert all(x.status.final for x in view.replicas), view
    await r.handle(workflow_id).result()
    await r.save("deployment_controller_heals_and_rolls_out", r.handle(workflow_id))


async def node_queued_for_a_launch_slot(r: Recorder) -> None:
    await queued_for_a_launch_slot(r, "node_queued_for_a_launch_slot", "slot")


async def node_queued_on_the_admission_queue(r: Recorder) -> None:
    """node_queued_for_a_launch_slot.json before the wait moved to its own task queue."""
    await queued_for_a_launch_slot(r, "node_queued_on_the_admission_queue", "queue")


async def node_queued_after_a_local_first_ask(r: Recorder) -> None:
    """A node whose local first ask found no free slot, then waited on the admission queue."""
    await queued_for_a_launch_slot(r, "node_queued_after_a_local_first_ask", "first-ask")


async def queued_for_a_launch_slot(r: Recorder, name: str, node: str) -> None:
    first = await r.admission.launch_node(node_spec(f"{node}-first"))

    async def launching() -> bool:
        return (await r.admission.node_status(first.workflow_id)).status is not NodeStatus.PENDING

    await until(launching, "the first launch admitted")
    second = await r.admission.launch_node(node_spec(f"{node}-second"))

    async def queued() -> bool:
        return (await r.admission.node_status(second.workflow_id)).reason is not None

    await until(queued, "the second launch queued")
    for started in (first, second):
        await r.admission.wait_for_node(
            started.workflow_id, until={NodeStatus.RUNNING}, timeout=WAIT
        )
        await r.admission.terminate_node(started.workflow_id)
        await r.handle(started.workflow_id).result()
    await r.save(name, r.handle(second.workflow_id))


async def deployment_scale_and_terminate(r: Recorder) -> None:
    await scale_and_terminate_deployment(
        r, "deployment_scale_and_terminate", "node_cancelled_while_running"
    )


async def deployment_node_id_children(r: Recorder) -> None:
    """The same path with children under ``node-<node id>`` (patch workflow-id-carries-node-id)
    reporting the cluster name the worker chose."""
    await scale_and_terminate_deployment(
        r, "deployment_node_id_children", "node_child_reports_cluster_name"
    )


async def scale_and_terminate_deployment(r: Recorder, name: str, child_name: str) -> None:
    spec = deployment_spec(tenant="replay", model=MODEL, name=f"blue-{uuid.uuid4().hex[:6]}")
    workflow_id = await r.main.launch_deployment(spec, replicas=2)

    async def replicas_running(count: int) -> bool:
        view = await r.main.deployment_status(workflow_id)
        running = [x for x in view.replicas if x.status is NodeStatus.RUNNING]
        return len(running) == count and len(view.replicas) == 2

    await until(lambda: replicas_running(2), "two replicas running")
    await r.main.scale_deployment(workflow_id, 1)
    await until(lambda: replicas_running(1), "one replica left")
    view = await r.main.terminate_deployment(workflow_id)
    assert all(x.status.final for x in view.replicas), view
    await r.handle(workflow_id).result()
    await r.save(name, r.handle(workflow_id))
    # The replica the scale-down removed: a NodeWorkflow cancelled while running, as a child.
    await r.save(child_name, r.handle(view.replicas[1].workflow_id))


async def node_with_search_attributes_and_progress(r: Recorder) -> None:
    """A node started with its search attributes: NodeStatus upserts and launch_progress signals."""
    r.simulator.set_timings(launch_delay_s=2.0)  # long enough for each phase to be signalled
    try:
        started, view = await launch_running(r.main, node_spec("labelled"))
    finally:
        r.simulator.set_timings(launch_delay_s=1.0)
    assert view.status is NodeStatus.RUNNING, view
    assert await r.main.labelled(), "the dev server must register the search attributes"
    await r.terminate_and_save(
        r.main, started.workflow_id, "node_with_search_attributes_and_progress"
    )


async def deployment_with_search_attributes(r: Recorder) -> None:
    """A labelled deployment: DeploymentStatus upserts, children started with attributes."""
    spec = deployment_spec(tenant="replay", model=MODEL, name=f"green-{uuid.uuid4().hex[:6]}")
    workflow_id = await r.main.launch_deployment(spec, replicas=1)

    async def running() -> bool:
        view = await r.main.deployment_status(workflow_id)
        return [x.status for x in view.replicas] == [NodeStatus.RUNNING]

    await until(running, "the replica running")
    view = await r.main.terminate_deployment(workflow_id)
    assert all(x.status.final for x in view.replicas), view
    await r.handle(workflow_id).result()
    await r.save("deployment_with_search_attributes", r.handle(workflow_id))


async def terminate_unmanaged_cluster(r: Recorder) -> None:
    cluster = f"unmanaged-{uuid.uuid4().hex[:6]}"
    task = build_task(
        node_spec("unmanaged"),
        TaskSettings(
            control_plane_url="http://localhost:8080", vllm_version="0", torch_version="1"
        ),
    )
    async with SkyPilotClient(r.simulator.url, token=SecretStr(TOKEN)) as sky:
        await sky.launch(cluster, task)

    async def up() -> bool:
        return r.simulator.cluster_status(cluster) == "UP"

    await until(up, f"{cluster} up")
    result = await r.main.terminate_cluster(cluster, wait=WAIT)
    assert result is not None, "still terminating"
    assert result.node_id is None, result
    assert r.simulator.cluster_status(cluster) is None
    await r.save("terminate_unmanaged_cluster", r.handle(f"terminate-{cluster}"))


async def terminate_cluster_refused_for_tenant(r: Recorder) -> None:
    """A tenant-scoped terminate of a cluster that is not the tenant's: refused, nothing downed."""
    cluster = f"unmanaged-{uuid.uuid4().hex[:6]}"
    try:
        await r.main.for_tenant("replay").terminate_cluster(cluster, wait=WAIT)
    except NotFound:
        pass
    else:
        raise AssertionError("the terminate was meant to be refused")
    await r.save("terminate_cluster_refused_for_tenant", r.handle(f"terminate-{cluster}:replay"))


async def terminate_cluster_delegated_to_its_node(r: Recorder) -> None:
    """A terminate by cluster name of a live node's cluster: signalled to the node's workflow."""
    spec = node_spec("delegated")
    started, view = await launch_running(r.main, spec)
    assert view.cluster_name is not None, view
    result = await r.main.terminate_cluster(view.cluster_name, wait=WAIT)
    assert result is not None, "still terminating"
    assert result.delegated_to == started.workflow_id, result
    await r.handle(started.workflow_id).result()
    await r.save(
        "terminate_cluster_delegated_to_its_node", r.handle(f"terminate-{view.cluster_name}")
    )


async def reconcile_asks_a_running_node_to_check(r: Recorder) -> None:
    """A running node whose cluster vanished: the reconciler signals its workflow to look."""
    spec = node_spec("vanished")
    started, view = await launch_running(r.main, spec)
    assert view.cluster_name is not None, view
    assert r.simulator.preempt(view.cluster_name)
    run_id = f"reconcile-{uuid.uuid4().hex[:8]}"
    report = await r.client.execute_workflow(
        ReconcileWorkflow.run,
        ReconcileInput(cleanup=True),
        id=run_id,
        task_queue=r.main.task_queue,
    )
    assert view.cluster_name in report.cleaned, report
    view = await r.main.wait_for_node(started.workflow_id, until=set(), timeout=WAIT)
    assert view.status is NodeStatus.LOST, view
    await r.save("reconcile_asks_a_running_node_to_check", r.handle(run_id))


PATHS: dict[str, Callable[[Recorder], Awaitable[None]]] = {
    f.__name__: f
    for f in (
        node_happy_path,
        node_happy_path_bundled,
        node_launch_failure,
        node_relaunch_after_transient_failure,
        node_cancelled_during_launch,
        node_cancelled_while_terminating,
        node_lost_found_by_sweep,
        node_model_unhealthy_then_healthy,
        fleet_health_lease,
        node_queued_for_a_launch_slot,
        node_queued_on_the_admission_queue,
        node_queued_after_a_local_first_ask,
        node_lost_after_a_short_second_look,
        node_repaired_in_place,
        deployment_controller_heals_and_rolls_out,
        deployment_scale_and_terminate,
        terminate_unmanaged_cluster,
        deployment_node_id_children,
        terminate_cluster_refused_for_tenant,
        node_with_search_attributes_and_progress,
        deployment_with_search_attributes,
        terminate_cluster_delegated_to_its_node,
        reconcile_asks_a_running_node_to_check,
    )
}


# --- the stack (devtools.devstack builds it, as for the integration tests) --------------------
# The integration tests' timings, with probes as quick as the recordings need; the watch loop
# stays out of the way but for the "watched" queue (sweeps are started by hand, not by a schedule).
RECORD_TIMINGS = TEST_TIMINGS.replace(
    launch_delay_s=1.0,
    health_check_interval="1h",
    fleet_health_lease="1h",
    model_probe_timeout="500ms",
    model_probe_startup_grace="0s",
)


@contextlib.asynccontextmanager
async def database() -> AsyncIterator[str]:
    databases = await reachable_server(os.environ.get("TEST_DATABASE_ADMIN_URL"), "cp_test")
    try:
        yield await databases.create(migrated=True)
    finally:
        await databases.drop_all()


def settings_for(
    env: WorkflowEnvironment,
    simulator: SimulatorServer,
    url: str,
    queue: str,
    *,
    timings: Timings = RECORD_TIMINGS,
    extra: dict[str, str] | None = None,
) -> Settings:
    return load_settings(
        worker_settings_env(
            temporal_address=env.client.service_client.config.target_host,
            database_url=url,
            simulator_url=simulator.url,
            token=TOKEN,
            encryption_key=ENCRYPTION_KEY,
            timings=timings,
            task_queue=queue,
            extra={"MODEL_PROBE_THRESHOLD": "2", **(extra or {})},
        )
    )


async def record(names: list[str], out: Path) -> None:
    async with contextlib.AsyncExitStack() as stack:
        url = await stack.enter_async_context(database())
        home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="record-")))
        env, _ = await stack.enter_async_context(local_temporal(home))
        sim_config = RECORD_TIMINGS.sim_config([TOKEN])
        simulator = await stack.enter_async_context(SimulatorServer(sim_config))
        slow_config = RECORD_TIMINGS.replace(launch_delay_s=4.0).sim_config([TOKEN])
        slow_simulator = await stack.enter_async_context(SimulatorServer(slow_config))
        main = settings_for(env, simulator, url, "replay-main")
        watched = settings_for(
            env,
            simulator,
            url,
            "replay-watched",
            timings=RECORD_TIMINGS.replace(health_check_interval="1s"),
        )
        slow = settings_for(
            env,
            slow_simulator,
            url,
            "replay-slow",
            timings=RECORD_TIMINGS.replace(heartbeat_timeout="1s"),
        )
        admission = settings_for(
            env,
            slow_simulator,
            url,
            "replay-admission",
            extra={"SKYPILOT_MAX_INFLIGHT_LAUNCHES": "1"},
        )
        for settings in (main, watched, slow, admission):
            activities = await stack.enter_async_context(open_activities(settings))
            await stack.enter_async_context(create_worker(env.client, settings, activities))
        recorder = Recorder(
            client=env.client,
            simulator=simulator,
            main=ControlPlane(env.client, main.temporal_task_queue),
            watched=ControlPlane(env.client, watched.temporal_task_queue),
            slow=ControlPlane(env.client, slow.temporal_task_queue),
            admission=ControlPlane(env.client, admission.temporal_task_queue),
            out=out,
        )
        for name in names:
            log.info("recording %s", name)
            await asyncio.wait_for(PATHS[name](recorder), 180)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.replay.record_histories")
    parser.add_argument("paths", nargs="*", metavar="PATH", help=f"default: all of {list(PATHS)}")
    parser.add_argument("--out", type=Path, default=HISTORIES)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.paths) - set(PATHS))
    if unknown:
        parser.error(f"unknown paths {unknown}; choose from {list(PATHS)}")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(record(args.paths or list(PATHS), args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
