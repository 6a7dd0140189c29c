"""The benchmark's fleet-health phases (scripts/benchmark.py --phases health,liveness,admission).

health     N running nodes at each --health-nodes size, with the cluster sweep and the model
           probes every --health-interval, as the worker's schedules run them: lease-mode
           FleetHealthWorkflow runs, here every --health-lease (120 s, so whole runs end inside
           the window). SkyPilot calls per minute for health (simulator counters), Temporal
           history events per running node-hour (sampled node workflows plus every fleet-health
           run that ended in the window, shared out), both at the bench's lease and at the
           deployed FLEET_HEALTH_LEASE (events per run x runs per hour), worker RSS. Then 20,000
           nodes, extrapolated from the measured per-node costs and labelled so.
liveness   K running nodes: crash every model at once and time node.unhealthy (target:
           probe interval x threshold + 5 s at p99), recover them, then preempt every cluster
           and time node.lost (target: sweep interval + 5 s at p99).
admission  a burst of --admission-burst launches on a stack of its own (dev server, database,
           a simulator with --long-workers 4, one worker with the default
           SKYPILOT_MAX_INFLIGHT_LAUNCHES): it drains, launches in flight never exceed the
           budget, and a status request to the simulator stays under 1 s at p99 meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
from bench_support import (
    FINAL,
    SIM_TOKEN,
    Stack,
    bench_worker_env,
    bounded,
    count_by_status,
    node_spec,
    open_engine,
    rss_mib,
    summary_ms,
)
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.service import RPCError

from controlplane.config import Settings
from controlplane.db.schema import launch_slots, node_events, nodes
from controlplane.lifecycle import NodeStatus
from devtools.devstack import (
    BENCH_TIMINGS,
    SimulatorProcess,
    connect_temporal,
    reachable_server,
    start_simulator_process,
    start_temporal,
    start_worker,
)
from starter.api import ControlPlane, NotFound
from starter.schedules import (
    CLUSTER_SWEEP_SCHEDULE_ID,
    MODEL_PROBE_SCHEDULE_ID,
    ensure_fleet_health_schedules,
)
from workflows.deployment import node_workflow_id
from workflows.fleet_models import FleetHealthReport
from workflows.options import LEASE_HEARTBEAT

log = logging.getLogger(__name__)

EXTRAPOLATE_TO = 20_000
ISSUE_SIZES = (20, 100, 1000, 5000)
SAMPLED_WORKFLOWS = 50
PROBE_PREFIX = "GET /sim/models/"
# The deployed lease (FLEET_HEALTH_LEASE's default): the events per node-hour that count.
DEFAULT_LEASE_S = Settings.model_fields["fleet_health_lease"].default.total_seconds()
ORPHANS_END_S = 0.8 * LEASE_HEARTBEAT.total_seconds() + 2


@dataclass(frozen=True)
class FleetSizes:
    health_nodes: tuple[int, ...] = (20, 100, 1000, 5000)
    health_interval_s: float = 10.0
    health_window_s: float = 120.0
    health_lease_s: float = 120.0  # the bench's FLEET_HEALTH_LEASE: whole runs in the window
    liveness_nodes: int = 50
    liveness_interval_s: float = 5.0
    liveness_threshold: int = 3
    admission_burst: int = 1000
    admission_launch_delay_s: float = 5.0
    admission_long_workers: int = 4
    shards: int = 16


SMALL_FLEET = FleetSizes(
    health_nodes=(3, 6),
    health_interval_s=2.0,
    health_window_s=6.0,
    health_lease_s=6.0,
    liveness_nodes=3,
    liveness_interval_s=1.0,
    admission_burst=12,
    admission_launch_delay_s=1.0,
    shards=2,
)


@dataclass
class Rig:
    """What the fleet phases need of the benchmark's running stack."""

    client: Client
    engine: AsyncEngine
    sim: SimulatorProcess
    worker_pid: int
    task_queue: str
    park: Callable[[int], Awaitable[list[str]]]  # start n more nodes; their node ids, running
    threshold: int
    triggered: list[str] = field(default_factory=list)  # schedules that had to be triggered


async def sweep_every(rig: Rig, sizes: FleetSizes, interval_s: float | None) -> None:
    """The fleet-health schedules as the worker makes them (lease mode), every
    ``sizes.health_lease_s``, sweeping every ``interval_s``: the runs in flight end and a fresh
    one of each starts at once. None: quiet, the schedules paused and no run in flight."""
    handles = [
        rig.client.get_schedule_handle(i)
        for i in (CLUSTER_SWEEP_SCHEDULE_ID, MODEL_PROBE_SCHEDULE_ID)
    ]
    if interval_s is not None:
        await ensure_fleet_health_schedules(
            rig.client,
            rig.task_queue,
            lease=timedelta(seconds=sizes.health_lease_s),
            shards=sizes.shards,
            interval=timedelta(seconds=interval_s),
            start_now=False,
        )
    for handle in handles:
        await handle.pause(note="benchmark: between fleet-health windows")
    if await end_fleet_health_runs(rig.client):
        # An ended run's activities learn of it from their next heartbeat's answer (the SDK
        # sends one at most every 0.8 x the heartbeat timeout) or end with their lease.
        await asyncio.sleep(min(sizes.health_lease_s, ORPHANS_END_S))
    if interval_s is not None:
        for handle in handles:
            await handle.unpause(note="benchmark: measuring")
        # The first runs start at the next fire, as the schedules run (not triggered: on the
        # dev server a fire buffered behind a triggered run was sometimes never started).
        # A schedule whose fire did not come (seen once at 1,000 nodes after a pause, an end
        # and an unpause) is triggered, and the run says so (``rig.triggered``).
        missing = await fleet_health_running(rig.client, sizes.health_lease_s + 15)
        for schedule_id in missing:
            log.warning("%s did not fire after its unpause: triggered", schedule_id)
            rig.triggered.append(schedule_id)
            await rig.client.get_schedule_handle(schedule_id).trigger(
                overlap=ScheduleOverlapPolicy.ALLOW_ALL
            )
        if missing and await fleet_health_running(rig.client, 60):
            raise RuntimeError("no fleet-health run of each schedule, even triggered")


async def fleet_health_running(client: Client, timeout_s: float) -> list[str]:
    """Wait until a run of each fleet-health schedule is in flight; the schedules without
    one when ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    query = "WorkflowType = 'FleetHealthWorkflow' AND ExecutionStatus = 'Running'"
    schedules = (CLUSTER_SWEEP_SCHEDULE_ID, MODEL_PROBE_SCHEDULE_ID)
    while True:
        running = {
            k
            for execution in [x async for x in client.list_workflows(query)]
            for k in schedules
            if execution.id.startswith(k)
        }
        if len(running) == len(schedules) or time.monotonic() >= deadline:
            return [k for k in schedules if k not in running]
        await asyncio.sleep(0.5)


async def end_fleet_health_runs(client: Client) -> int:
    """Terminate the fleet-health runs in flight; how many there were."""
    ended = 0
    query = "WorkflowType = 'FleetHealthWorkflow' AND ExecutionStatus = 'Running'"
    async for execution in client.list_workflows(query):
        with contextlib.suppress(RPCError):  # it ended meanwhile: nothing to end
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            await handle.terminate(reason="benchmark: the next window's pace")
            ended += 1
    return ended


def skypilot_calls(counters: dict[str, Any]) -> dict[str, int]:
    """Calls the control plane made to SkyPilot's API (the simulator's own routes left out)."""
    return {k: v for k, v in counters["calls"].items() if " /sim/" not in k}


def probe_calls(counters: dict[str, Any]) -> int:
    return sum(v for k, v in counters["calls"].items() if k.startswith(PROBE_PREFIX))


async def history_length(client: Client, workflow_id: str, run_id: str | None = None) -> int:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    return len((await handle.fetch_history()).events)


@dataclass
class LeaseRuns:
    """The fleet-health runs that ended in a window, by schedule (the cluster sweep's and the
    model probes'): their history events and the sweeps their activities made."""

    runs: dict[str, int]
    events: dict[str, int]
    sweeps: int

    def events_per_lease(self) -> float:
        """One run of each schedule: what the fleet pays once per lease."""
        return sum(self.events[k] / self.runs[k] for k in self.runs if self.runs[k])

    def per_hour(self, lease_s: float) -> float:
        return self.events_per_lease() * 3600 / lease_s


async def lease_runs_ended(client: Client, since: float, until: float) -> LeaseRuns:
    """Every FleetHealthWorkflow run (not terminated by the bench) that ended in the window."""
    runs: dict[str, int] = {CLUSTER_SWEEP_SCHEDULE_ID: 0, MODEL_PROBE_SCHEDULE_ID: 0}
    events = dict.fromkeys(runs, 0)
    sweeps = 0
    query = "WorkflowType = 'FleetHealthWorkflow' AND ExecutionStatus = 'Completed'"
    async for execution in client.list_workflows(query):
        closed = execution.close_time
        if closed is None or not since <= closed.timestamp() <= until:
            continue
        kind = next((k for k in runs if execution.id.startswith(k)), None)
        if kind is None:
            continue
        runs[kind] += 1
        events[kind] += await history_length(client, execution.id, execution.run_id)
        handle = client.get_workflow_handle(
            execution.id, run_id=execution.run_id, result_type=FleetHealthReport
        )
        sweeps += (await handle.result()).sweeps
    return LeaseRuns(runs, events, sweeps)


async def node_events_total(client: Client, workflow_ids: Sequence[str]) -> int:
    """Every event of every run of the sampled node workflows (continue-as-new included)."""
    total = 0
    for workflow_id in workflow_ids:
        async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
            total += await history_length(client, execution.id, execution.run_id)
    return total


async def health_at(rig: Rig, sizes: FleetSizes, node_ids: list[str]) -> dict[str, Any]:
    """Measure one window at the current number of running nodes: long enough that a whole
    lease-mode run of each schedule ends inside it."""
    sampled = [node_workflow_id(node_id) for node_id in node_ids[:SAMPLED_WORKFLOWS]]
    await asyncio.sleep(sizes.health_interval_s)  # the sweeps are at their new pace
    before = await rig.sim.counters()
    events_before = await node_events_total(rig.client, sampled)
    started = time.time()
    await asyncio.sleep(
        max(sizes.health_window_s, sizes.health_lease_s + 3 * sizes.health_interval_s)
    )
    after = await rig.sim.counters()
    ended = time.time()
    window_min = (ended - started) / 60
    events_after = await node_events_total(rig.client, sampled)
    leases = await lease_runs_ended(rig.client, started, ended)
    sky_before, sky_after = skypilot_calls(before), skypilot_calls(after)
    per_endpoint = {
        k: round((sky_after.get(k, 0) - sky_before.get(k, 0)) / window_min, 1) for k in sky_after
    }
    nodes_running = max(len(node_ids), 1)
    node_events_per_hour = (events_after - events_before) / max(len(sampled), 1) / (window_min / 60)
    at_bench = leases.per_hour(sizes.health_lease_s)
    deployed = leases.per_hour(DEFAULT_LEASE_S)
    return {
        "running_nodes": len(node_ids),
        "window_s": round(window_min * 60, 1),
        "skypilot_calls_per_min": round(sum(per_endpoint.values()), 1),
        "per_endpoint_per_min": {k: v for k, v in per_endpoint.items() if v},
        "model_probes_per_min": round((probe_calls(after) - probe_calls(before)) / window_min, 1),
        "sweep_runs": sum(leases.runs.values()),
        "sweep_runs_by_schedule": leases.runs,
        "sweeps_in_those_runs": leases.sweeps,
        # One lease-mode run of each schedule, whatever the fleet's size.
        "sweep_events_per_lease": round(leases.events_per_lease(), 1),
        "bench_lease_s": sizes.health_lease_s,
        "deployed_lease_s": DEFAULT_LEASE_S,
        # The deployed cost: measured events per run x runs per hour at FLEET_HEALTH_LEASE.
        "temporal_events_per_node_hour": round(node_events_per_hour + deployed / nodes_running, 2),
        # As measured, at the bench's short lease (more runs an hour, so more events).
        "temporal_events_per_node_hour_at_bench_lease": round(
            node_events_per_hour + at_bench / nodes_running, 2
        ),
        "of_which_node_workflow": round(node_events_per_hour, 2),
        "of_which_sweeps_shared": round(deployed / nodes_running, 2),
        # The fleet's fixed cost: every fleet-health run's events, whatever the fleet size.
        "sweep_events_per_hour": round(deployed),
        "sweep_events_per_hour_at_bench_lease": round(at_bench),
        "worker_rss_mib": rss_mib(rig.worker_pid),
        "load_average": load_average(),
        # Every model answers in this phase: an unhealthy node is a probe that came too late.
        "unhealthy_nodes": (await count_by_status(rig.engine, node_ids)).get(
            NodeStatus.UNHEALTHY.value, 0
        ),
    }


def load_average() -> str:
    """`uptime`'s 1/5/15-minute load averages: timings on a shared box depend on them."""
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


async def cluster_names(engine: AsyncEngine, node_ids: Sequence[str]) -> list[str]:
    statement = select(nodes.c.cluster_name).where(nodes.c.node_id.in_(list(node_ids)))
    async with engine.connect() as connection:
        return [str(name) for (name,) in (await connection.execute(statement)).all()]


def extrapolate(runs: list[dict[str, Any]], nodes: int, max_shards: int) -> dict[str, Any]:
    """``nodes`` running nodes from the measured per-node costs: labelled as an extrapolation.

    Node-workflow events per node-hour are the largest size's; the fleet-health runs' events an
    hour are the most measured (a lease-mode run's events do not depend on the fleet: its
    ``max_shards`` probe activities are a fixed number). Probes grow with the nodes, SkyPilot
    calls do not; the worker's RSS grows by the measured slope (an upper bound: its workflow
    cache is capped).
    """
    first, last = runs[0], runs[-1]
    grown = max(last["running_nodes"] - first["running_nodes"], 1)
    rss_per_node = (last["worker_rss_mib"] - first["worker_rss_mib"]) / grown
    fixed = max(r["sweep_events_per_hour"] for r in runs)
    return {
        "running_nodes": nodes,
        "label": (
            f"EXTRAPOLATED to {nodes} from {first['running_nodes']}..{last['running_nodes']} "
            "measured nodes, not measured"
        ),
        "skypilot_calls_per_min": max(r["skypilot_calls_per_min"] for r in runs),
        "temporal_events_per_node_hour": round(last["of_which_node_workflow"] + fixed / nodes, 2),
        "of_which_node_workflow": last["of_which_node_workflow"],
        "sweep_events_per_hour": round(fixed),
        "probe_shards": max_shards,
        "model_probes_per_min": round(last["model_probes_per_min"] * nodes / last["running_nodes"]),
        "worker_rss_mib": round(
            last["worker_rss_mib"] + rss_per_node * (nodes - last["running_nodes"]), 1
        ),
        "worker_rss_per_1000_nodes_mib": round(rss_per_node * 1000, 2),
    }


async def phase_health(rig: Rig, sizes: FleetSizes) -> dict[str, Any]:
    node_ids: list[str] = []
    runs = []
    try:
        for target in sizes.health_nodes:
            # Quiet while parking: a worker busy with hundreds of launches answers its probes
            # late, and a late probe is a failed one (it is the steady state that is measured).
            await sweep_every(rig, sizes, None)
            node_ids += await rig.park(max(target - len(node_ids), 0))
            await sweep_every(rig, sizes, sizes.health_interval_s)
            runs.append(await health_at(rig, sizes, node_ids))
    finally:
        await sweep_every(rig, sizes, None)
    calls = [r["skypilot_calls_per_min"] for r in runs]
    return {
        "interval_s": sizes.health_interval_s,
        "bench_lease_s": sizes.health_lease_s,
        "deployed_lease_s": DEFAULT_LEASE_S,
        "shards": sizes.shards,
        "by_size": runs,
        "calls_per_min_spread": round(max(calls) - min(calls), 1),
        "schedules_triggered": list(rig.triggered),  # fires that did not come (sweep_every)
        "extrapolated": extrapolate(runs, EXTRAPOLATE_TO, sizes.shards),
        # The issue's sizes this run did not reach (a busy or small box), extrapolated too.
        "extrapolated_also": [
            extrapolate(runs, n, sizes.shards)
            for n in ISSUE_SIZES
            if n > max(r["running_nodes"] for r in runs)
        ],
        "node_ids": node_ids,
    }


async def event_times(engine: AsyncEngine, node_ids: Sequence[str], kind: str) -> dict[str, float]:
    """The first ``kind`` event of each node (wall-clock seconds)."""
    statement = (
        select(node_events.c.node_id, func.min(node_events.c.created_at))
        .where(node_events.c.node_id.in_(list(node_ids)), node_events.c.event_type == kind)
        .group_by(node_events.c.node_id)
    )
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return {str(node): moment.timestamp() for node, moment in rows}


async def detect(
    rig: Rig, node_ids: list[str], kind: str, since: float, timeout_s: float
) -> list[float]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = await event_times(rig.engine, node_ids, kind)
        if len(found) == len(node_ids) or time.monotonic() > deadline:
            return [moment - since for moment in found.values()]
        await asyncio.sleep(0.25)


async def phase_liveness(rig: Rig, sizes: FleetSizes) -> dict[str, Any]:
    node_ids = await rig.park(sizes.liveness_nodes)
    clusters = await cluster_names(rig.engine, node_ids)
    interval = sizes.liveness_interval_s
    await sweep_every(rig, sizes, interval)
    timeout = interval * (rig.threshold + 4) + 60
    try:
        crashed_at = time.time()
        await asyncio.gather(*(rig.sim.model_fault(c, "crash") for c in clusters))
        unhealthy = await detect(rig, node_ids, "node.unhealthy", crashed_at, timeout)
        await asyncio.gather(*(rig.sim.model_fault(c, None) for c in clusters))
        healthy = await detect(rig, node_ids, "node.healthy", time.time(), timeout)
        preempted_at = time.time()
        await asyncio.gather(*(rig.sim.preempt(c) for c in clusters))
        lost = await detect(rig, node_ids, "node.lost", preempted_at, timeout)
    finally:
        await sweep_every(rig, sizes, None)
    return {
        "nodes": len(node_ids),
        "lease_s": sizes.health_lease_s,
        "probe_interval_s": interval,
        "sweep_interval_s": interval,
        "threshold": rig.threshold,
        "unhealthy_detected": len(unhealthy),
        "crash_to_unhealthy": summary_ms(unhealthy),
        "recovered": len(healthy),
        "recover_to_healthy": summary_ms(healthy),
        "lost_detected": len(lost),
        "preempt_to_lost": summary_ms(lost),
        "unhealthy_limit_ms": (interval * rig.threshold + 5) * 1000,
        "lost_limit_ms": (interval + 5) * 1000,
        "load_average": load_average(),
    }


async def status_latencies(sim_url: str, stop: asyncio.Event) -> list[float]:
    """A person's `sky status` against the API server, twice a second: POST, then /api/get."""
    found: list[float] = []
    headers = {"Authorization": f"Bearer {SIM_TOKEN}"}
    async with httpx.AsyncClient(base_url=sim_url, headers=headers, timeout=30) as http:
        while not stop.is_set():
            started = time.monotonic()
            posted = await http.post("/status", json={"refresh": "NONE", "all_users": True})
            request_id = posted.headers["X-Skypilot-Request-ID"]
            await http.get("/api/get", params={"request_id": request_id})
            found.append(time.monotonic() - started)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.5)
    return found


async def phase_admission(home: Path, admin_url: str | None, sizes: FleetSizes) -> dict[str, Any]:
    """The burst with the default budget, and (``before``) the same burst with no budget."""
    after = await admission_burst(home, admin_url, sizes, budget=None)
    before = await admission_burst(home, admin_url, sizes, budget=UNCAPPED)
    return {**after, "before_no_admission": before}


UNCAPPED = 10_000  # the most SKYPILOT_MAX_INFLIGHT_LAUNCHES accepts: no cap in effect


async def admission_burst(
    home: Path, admin_url: str | None, sizes: FleetSizes, *, budget: int | None
) -> dict[str, Any]:
    """One burst on a stack of its own, so its budget and LONG workers touch nothing else.

    ``budget`` None is the default SKYPILOT_MAX_INFLIGHT_LAUNCHES, as deployed.
    """
    stack = Stack(home)
    try:
        server = start_temporal(home, "temporal-admission", search_attributes_registered=False)
        stack.add(server.process)
        databases = await reachable_server(admin_url, "bench")
        database_url = await databases.create()
        stack.cleanups.append(databases.drop_all)
        engine = open_engine(database_url)
        stack.cleanups.append(engine.dispose)
        timings = BENCH_TIMINGS.replace(
            launch_delay_s=sizes.admission_launch_delay_s,
            model_warmup_s=0.5,
            status_delay_s=0.05,
            down_delay_s=0.2,
        )
        sim = start_simulator_process(
            home,
            timings,
            SIM_TOKEN,
            long_workers=sizes.admission_long_workers,
            name="simulator-long-workers",
        )
        stack.add(sim.process)
        stack.cleanups.append(sim.http.aclose)
        queue = "bench-admission"
        env = bench_worker_env(server.address, database_url, sim.url, queue, timings=timings)
        env.pop("SKYPILOT_MAX_INFLIGHT_LAUNCHES")
        if budget is not None:
            env["SKYPILOT_MAX_INFLIGHT_LAUNCHES"] = str(budget)
        worker = stack.add(start_worker(home, env, "worker-admission"))
        client = await connect_temporal(server.address)
        control = ControlPlane(client, queue)
        run = f"a{uuid.uuid4().hex[:6]}"
        specs = [node_spec(run, i) for i in range(sizes.admission_burst)]
        ids = [s.node_id for s in specs]
        stop = asyncio.Event()
        statuses = asyncio.create_task(status_latencies(sim.url, stop))
        peak = 0
        launched_at = time.time()
        await bounded(50, specs, control.launch_node)
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            async with engine.connect() as connection:
                held = (
                    await connection.execute(
                        select(func.count()).where(launch_slots.c.granted_at.is_not(None))
                    )
                ).scalar_one()
            peak = max(peak, int(held))
            counts = await count_by_status(engine, ids)
            if sum(n for s, n in counts.items() if s == "running" or s in FINAL) >= len(ids):
                break
            await asyncio.sleep(0.5)
        drain_s = time.time() - launched_at
        stop.set()
        latencies = await statuses
        running = (await count_by_status(engine, ids)).get(NodeStatus.RUNNING.value, 0)

        async def terminate(spec: Any) -> None:
            # A node whose launch timed out in the queue is over already: nothing to end.
            with contextlib.suppress(NotFound):
                await control.terminate_node(node_workflow_id(spec.node_id))

        await bounded(50, specs, terminate)
        terminated = (await count_by_status(engine, ids)).get(NodeStatus.TERMINATED.value, 0)
        if budget is None:
            budget = int(Settings.model_fields["skypilot_max_inflight_launches"].default)
        return {
            "nodes": len(specs),
            "long_workers": sizes.admission_long_workers,
            "launch_delay_s": sizes.admission_launch_delay_s,
            "budget": budget,
            "reached_running": running,
            "terminated": terminated,
            "time_to_drain_s": round(drain_s, 1),
            "peak_in_flight": peak,
            "status_requests": len(latencies),
            "status_latency": summary_ms(latencies),
            "worker_rss_mib": rss_mib(worker.proc.pid),
            "load_average": load_average(),
        }
    finally:
        await stack.close()
