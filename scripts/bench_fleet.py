"""The benchmark's fleet-health phases (scripts/benchmark.py --phases health,liveness,admission).

health     N running nodes at each --health-nodes size, with the cluster sweep and the model
           probes every --health-interval: SkyPilot calls per minute for health (simulator
           counters), Temporal history events per running node-hour (sampled node workflows
           plus every sweep workflow, shared out), worker RSS. Then 20,000 nodes, extrapolated
           from the measured per-node costs and labelled so.
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
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
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
from temporalio.client import Client

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
from starter.schedules import ensure_fleet_health_schedules
from workflows.deployment import node_workflow_id
from workflows.fleet_health import NODES_PER_SHARD

EXTRAPOLATE_TO = 20_000
ISSUE_SIZES = (20, 100, 1000, 5000)
SAMPLED_WORKFLOWS = 50
PROBE_PREFIX = "GET /sim/models/"
QUIET = timedelta(minutes=30)


@dataclass(frozen=True)
class FleetSizes:
    health_nodes: tuple[int, ...] = (20, 100, 1000, 5000)
    health_interval_s: float = 10.0
    health_window_s: float = 120.0
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


async def set_intervals(rig: Rig, interval_s: float, shards: int) -> None:
    every = timedelta(seconds=interval_s)
    await ensure_fleet_health_schedules(
        rig.client, rig.task_queue, cluster_interval=every, probe_interval=every, shards=shards
    )


def skypilot_calls(counters: dict[str, Any]) -> dict[str, int]:
    """Calls the control plane made to SkyPilot's API (the simulator's own routes left out)."""
    return {k: v for k, v in counters["calls"].items() if " /sim/" not in k}


def probe_calls(counters: dict[str, Any]) -> int:
    return sum(v for k, v in counters["calls"].items() if k.startswith(PROBE_PREFIX))


async def history_length(client: Client, workflow_id: str, run_id: str | None = None) -> int:
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    return len((await handle.fetch_history()).events)


async def sweep_events_since(client: Client, since: float) -> tuple[int, int]:
    """(sweep runs, their history events) of FleetHealthWorkflow runs started after ``since``."""
    runs = events = 0
    query = "WorkflowType = 'FleetHealthWorkflow'"
    async for execution in client.list_workflows(query):
        if execution.start_time.timestamp() < since:
            continue
        runs += 1
        events += await history_length(client, execution.id, execution.run_id)
    return runs, events


async def node_events_total(client: Client, workflow_ids: Sequence[str]) -> int:
    """Every event of every run of the sampled node workflows (continue-as-new included)."""
    total = 0
    for workflow_id in workflow_ids:
        async for execution in client.list_workflows(f"WorkflowId = '{workflow_id}'"):
            total += await history_length(client, execution.id, execution.run_id)
    return total


async def health_at(rig: Rig, sizes: FleetSizes, node_ids: list[str]) -> dict[str, Any]:
    """Measure one window at the current number of running nodes."""
    sampled = [node_workflow_id(node_id) for node_id in node_ids[:SAMPLED_WORKFLOWS]]
    await asyncio.sleep(sizes.health_interval_s)  # the sweeps are at their new pace
    before = await rig.sim.counters()
    events_before = await node_events_total(rig.client, sampled)
    started = time.time()
    await asyncio.sleep(sizes.health_window_s)
    after = await rig.sim.counters()
    window_min = (time.time() - started) / 60
    events_after = await node_events_total(rig.client, sampled)
    sweeps, sweep_events = await sweep_events_since(rig.client, started)
    sky_before, sky_after = skypilot_calls(before), skypilot_calls(after)
    per_endpoint = {
        k: round((sky_after.get(k, 0) - sky_before.get(k, 0)) / window_min, 1) for k in sky_after
    }
    node_hours = len(node_ids) * window_min / 60
    node_events_per_hour = (events_after - events_before) / max(len(sampled), 1) / (window_min / 60)
    return {
        "running_nodes": len(node_ids),
        "window_s": round(window_min * 60, 1),
        "skypilot_calls_per_min": round(sum(per_endpoint.values()), 1),
        "per_endpoint_per_min": {k: v for k, v in per_endpoint.items() if v},
        "model_probes_per_min": round((probe_calls(after) - probe_calls(before)) / window_min, 1),
        "sweep_runs": sweeps,
        "temporal_events_per_node_hour": round(
            node_events_per_hour + sweep_events / max(node_hours, 1e-9), 2
        ),
        "of_which_node_workflow": round(node_events_per_hour, 2),
        "of_which_sweeps_shared": round(sweep_events / max(node_hours, 1e-9), 2),
        # The fleet's fixed cost: every sweep workflow's events, whatever the fleet size.
        "sweep_events_per_hour": round(sweep_events / (window_min / 60)),
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


def shards_at(nodes: int, max_shards: int) -> int:
    """How many probe shards a sweep uses at ``nodes`` (FleetHealthWorkflow's rule)."""
    return max(1, min(max_shards, -(-nodes // NODES_PER_SHARD)))


def extrapolate(runs: list[dict[str, Any]], nodes: int, max_shards: int) -> dict[str, Any]:
    """``nodes`` running nodes from the measured per-node costs: labelled as an extrapolation.

    Node-workflow events per node-hour are the largest size's; the sweeps' fixed events an hour
    are the largest size's plus, for each probe shard more (capped at ``max_shards``), the
    measured events per shard an hour. Probes grow with the nodes, SkyPilot calls do not; the
    worker's RSS grows by the measured slope (an upper bound: its workflow cache is capped).
    """
    first, last = runs[0], runs[-1]
    grown = max(last["running_nodes"] - first["running_nodes"], 1)
    rss_per_node = (last["worker_rss_mib"] - first["worker_rss_mib"]) / grown
    shards = {r["running_nodes"]: shards_at(r["running_nodes"], max_shards) for r in (first, last)}
    added = shards[last["running_nodes"]] - shards[first["running_nodes"]]
    # Never below what was measured: a box that skipped sweeps (a sweep outlasting its
    # interval) at the larger size would otherwise extrapolate a shrinking cost.
    per_shard = max(
        (last["sweep_events_per_hour"] - first["sweep_events_per_hour"]) / added if added else 0.0,
        0.0,
    )
    fixed = max(r["sweep_events_per_hour"] for r in runs) + per_shard * (
        shards_at(nodes, max_shards) - shards[last["running_nodes"]]
    )
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
        "sweep_events_per_shard_hour": round(per_shard),
        "probe_shards": shards_at(nodes, max_shards),
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
            await set_intervals(rig, QUIET.total_seconds(), sizes.shards)
            node_ids += await rig.park(max(target - len(node_ids), 0))
            await set_intervals(rig, sizes.health_interval_s, sizes.shards)
            runs.append(await health_at(rig, sizes, node_ids))
    finally:
        await set_intervals(rig, QUIET.total_seconds(), sizes.shards)
    calls = [r["skypilot_calls_per_min"] for r in runs]
    return {
        "interval_s": sizes.health_interval_s,
        "shards": sizes.shards,
        "by_size": runs,
        "calls_per_min_spread": round(max(calls) - min(calls), 1),
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
    await set_intervals(rig, interval, sizes.shards)
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
        await set_intervals(rig, QUIET.total_seconds(), sizes.shards)
    return {
        "nodes": len(node_ids),
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
