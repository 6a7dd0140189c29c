"""Benchmark the node lifecycle against the simulator, beside a bare-Temporal baseline.

    .venv/bin/python scripts/benchmark.py                    # the full run (~20-30 min)
    .venv/bin/python scripts/benchmark.py --small            # seconds: every phase, tiny sizes
    .venv/bin/python scripts/benchmark.py --phases throughput,baseline --window 30

One stack: the Temporal dev server (in memory), a fresh database on the PostgreSQL at
--admin-url (default postgres@127.0.0.1:5432/test; dropped at the end), the SkyPilot simulator
and ONE ``python worker.py`` process (its own autoscaling pollers). Every process is local, on
127.0.0.1, and stopped at the end. The baseline gets a dev server and worker process of its own.

Phases, in order:
  throughput  full lifecycles (launch -> running -> terminate update -> terminated -> workflow
              closed) in a closed loop at concurrency C, zero simulated cloud latency; warm-up,
              then a measured window; end-to-end p50/p99.
  baseline    a bare workflow of as many sequential no-op activities as a real lifecycle's
              history holds, same C, same worker settings, on a fresh dev server.
  calls       SkyPilot HTTP calls per lifecycle (simulator counters) at each --launch-delays
              value, and the ready-detection latency (the model's /health turning 200 in the
              simulator -> nodes.ready_at).
  burst       N launches at once: all reach running; worker peak RSS (VmHWM); time to drain;
              then all are terminated.
  health, liveness, admission
              fleet health and launch admission: see scripts/bench_fleet.py (run before parked,
              whose nodes would otherwise join the health phase's fleet).
  parked      P running nodes parked at once: worker RSS, dev-server RSS and database size as
              they accumulate; then everything is dropped (dev server, database), not terminated.

NODE_HEALTH_CHECK_INTERVAL is 30m for the whole run (so 5,000 parked nodes do not health-check
during the measurement) and RECONCILE_INTERVAL 24h. Targets are printed PASS or MISS; a MISS does
not change the exit code (0), a broken run (a lifecycle that fails, a node that never runs) exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import itertools
import os
import sys
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bench_fleet import (
    SMALL_FLEET,
    FleetSizes,
    Rig,
    phase_admission,
    phase_health,
    phase_liveness,
)
from bench_support import (
    BASELINE_WORKFLOW,
    FINAL,
    REPO,
    RUNNING_OR_FINAL,
    SIM_TOKEN,
    Stack,
    StatusWatcher,
    bench_worker_env,
    bounded,
    count_by_status,
    cpu_seconds,
    database_size_mib,
    exit_now,
    machine_cpu,
    machine_info,
    node_spec,
    open_engine,
    percentile,
    rss_mib,
    run_dir,
    start_baseline_worker,
    summary_ms,
    table,
    wait_for_quiet,
    write_json,
)
from sqlalchemy import select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.api.enums.v1 import EventType as HistoryEventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.exceptions import TemporalError

from controlplane.config import Settings
from controlplane.db.schema import nodes
from controlplane.lifecycle import NodeStatus
from devtools.devstack import (
    BENCH_TIMINGS,
    Process,
    ServerDatabases,
    SimulatorProcess,
    connect_temporal,
    reachable_server,
    start_simulator_process,
    start_temporal,
    start_worker,
)
from starter.api import ControlPlane
from workflows.deployment import node_workflow_id

PHASES = ("throughput", "baseline", "calls", "burst", "health", "liveness", "admission", "parked")
TASK_QUEUE = "bench-nodes"
BASELINE_QUEUE = "bench-baseline"
ZERO_LATENCY = {  # what /sim/timings sets back after a phase that slowed the simulator
    "launch_delay_s": BENCH_TIMINGS.launch_delay_s,
    "model_warmup_s": BENCH_TIMINGS.model_warmup_s,
    "down_delay_s": BENCH_TIMINGS.down_delay_s,
    "status_delay_s": BENCH_TIMINGS.status_delay_s,
}

MODEL_PROBE = "GET /sim/models/*/health"


# --- options --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sizes:
    concurrency: int = 10
    warmup_s: float = 10.0
    window_s: float = 60.0
    serial_window_s: float = 20.0
    launch_delays: tuple[float, ...] = (0.0, 10.0)
    model_warmup_s: float = 1.0
    calls_lifecycles: int = 20
    burst: int = 1000
    burst_launch_delay_s: float = 5.0
    parked: int = 5000
    parked_inflight: int = 100
    parked_hold_s: float = 30.0
    start_concurrency: int = 50
    node_timeout_s: float = 900.0


SMALL = Sizes(
    concurrency=4,
    warmup_s=1.0,
    window_s=3.0,
    serial_window_s=2.0,
    launch_delays=(0.0, 1.0),
    calls_lifecycles=4,
    burst=10,
    burst_launch_delay_s=1.0,
    parked=20,
    parked_inflight=10,
    parked_hold_s=1.0,
    node_timeout_s=120.0,
)


@dataclass(frozen=True)
class Options:
    sizes: Sizes
    phases: tuple[str, ...]
    json_path: Path
    logs: Path | None
    admin_url: str | None
    quiet_load: float
    quiet_timeout_s: float
    small: bool
    fleet: FleetSizes = field(default_factory=FleetSizes)


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="scripts/benchmark.py", description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="a seconds-long run of every phase")
    p.add_argument("--json", type=Path, default=REPO / ".cache" / "benchmark.json")
    p.add_argument("--phases", default=",".join(PHASES), help=f"subset of {','.join(PHASES)}")
    p.add_argument("--concurrency", "-c", type=int, help="lifecycles in flight (default 10)")
    p.add_argument("--warmup", type=float, dest="warmup_s", help="seconds (default 10)")
    p.add_argument("--lifecycles-window", "--window", type=float, dest="window_s")
    p.add_argument("--serial-window", type=float, dest="serial_window_s", help="C=1 (20)")
    p.add_argument("--launch-delays", help="simulated launch seconds, e.g. 0,10")
    p.add_argument("--model-warmup", type=float, dest="model_warmup_s", help="default 1.0")
    p.add_argument("--calls-lifecycles", type=int, help="lifecycles per launch delay")
    p.add_argument("--burst", type=int, help="launches at once (default 1000)")
    p.add_argument("--burst-launch-delay", type=float, dest="burst_launch_delay_s")
    p.add_argument("--parked", type=int, help="running nodes to park (default 5000)")
    p.add_argument("--parked-inflight", type=int, help="launches in flight while parking")
    p.add_argument("--parked-hold", type=float, dest="parked_hold_s")
    p.add_argument("--health-nodes", help="running-node counts, e.g. 20,100,1000,5000")
    p.add_argument("--health-interval", type=float, help="sweep and probe interval (10 s)")
    p.add_argument("--health-window", type=float, help="seconds measured per size (120)")
    p.add_argument("--health-lease", type=float, help="fleet-health lease in the bench (120 s)")
    p.add_argument("--liveness-nodes", type=int, help="models crashed at once (50)")
    p.add_argument("--admission-burst", type=int, help="launches at once (1000)")
    p.add_argument("--admin-url", help="PostgreSQL to create the run's database on")
    p.add_argument("--logs", type=Path, help="where run logs go (default .cache/benchmark)")
    p.add_argument("--quiet-load", type=float, default=0.0, help="wait for loadavg below this")
    p.add_argument("--quiet-timeout", type=float, default=1200.0, dest="quiet_timeout_s")
    args = p.parse_args(argv)
    phases = tuple(name.strip() for name in args.phases.split(",") if name.strip())
    unknown = sorted(set(phases) - set(PHASES))
    if unknown:
        p.error(f"unknown phase(s) {unknown}; expected some of {PHASES}")
    sizes = SMALL if args.small else Sizes()
    given = {
        name: getattr(args, name)
        for name in Sizes.__dataclass_fields__
        if getattr(args, name, None) is not None and name != "launch_delays"
    }
    if args.launch_delays:
        given["launch_delays"] = tuple(float(v) for v in args.launch_delays.split(","))
    fleet: dict[str, Any] = {
        name: value
        for name, value in (
            ("health_interval_s", args.health_interval),
            ("health_window_s", args.health_window),
            ("health_lease_s", args.health_lease),
            ("liveness_nodes", args.liveness_nodes),
            ("admission_burst", args.admission_burst),
        )
        if value is not None
    }
    if args.health_nodes:
        fleet["health_nodes"] = tuple(int(v) for v in args.health_nodes.split(","))
    return Options(
        sizes=replace(sizes, **given),
        phases=phases,
        json_path=args.json,
        logs=args.logs,
        admin_url=args.admin_url,
        quiet_load=args.quiet_load,
        quiet_timeout_s=args.quiet_timeout_s,
        small=args.small,
        fleet=replace(SMALL_FLEET if args.small else FleetSizes(), **fleet),
    )


# --- the stack ------------------------------------------------------------------------------------
@dataclass
class Bench:
    """The running stack and what drives it."""

    options: Options
    home: Path
    stack: Stack
    temporal: Process
    client: Client
    databases: ServerDatabases
    database_url: str
    engine: AsyncEngine
    sim: SimulatorProcess
    worker: Process
    watcher: StatusWatcher
    run: str = field(default_factory=lambda: f"b{uuid.uuid4().hex[:6]}")
    indices: itertools.count[int] = field(default_factory=itertools.count)

    @functools.cached_property
    def control(self) -> ControlPlane:
        """One API object for the run, as a service keeps one (it caches what it learnt once)."""
        return ControlPlane(self.client, TASK_QUEUE)

    async def postgres_backends(self) -> list[int]:
        """The PostgreSQL server processes serving this run's database (its connections)."""
        statement = text("SELECT pid FROM pg_stat_activity WHERE datname = :name")
        async with self.engine.connect() as connection:
            name = make_url(self.database_url).database
            rows = (await connection.execute(statement, {"name": name})).all()
        return [int(pid) for (pid,) in rows]

    def pids(self) -> dict[str, int]:
        return {
            "dev_server": self.temporal.proc.pid,
            "worker": self.worker.proc.pid,
            "simulator": self.sim.process.proc.pid,
            "driver": os.getpid(),
        }


async def open_bench(options: Options, home: Path, stack: Stack) -> Bench:
    server = start_temporal(home, search_attributes_registered=False)
    temporal = stack.add(server.process)
    databases = await reachable_server(options.admin_url, "bench")
    database_url = await databases.create()
    stack.cleanups.append(databases.drop_all)
    engine = open_engine(database_url)
    stack.cleanups.append(engine.dispose)  # clean-ups run in reverse: disposed, then dropped
    sim = start_simulator_process(home, BENCH_TIMINGS, SIM_TOKEN)
    stack.add(sim.process)
    stack.cleanups.append(sim.http.aclose)
    # The fleet phases probe with MODEL_PROBE_TIMEOUT's default, 5 s: at BENCH_TIMINGS' 1 s a
    # worker starved on a loaded box answers its own probes late and marks healthy models
    # unhealthy (docs/performance.md, findings).
    env = bench_worker_env(
        server.address, database_url, sim.url, TASK_QUEUE, extra={"MODEL_PROBE_TIMEOUT": "5s"}
    )
    worker = stack.add(start_worker(home, env))
    client = await connect_temporal(server.address)
    watcher = await StatusWatcher(engine).__aenter__()
    stack.cleanups.append(watcher.__aexit__)
    return Bench(
        options,
        home,
        stack,
        temporal,
        client,
        databases,
        database_url,
        engine,
        sim,
        worker,
        watcher,
    )


# --- one lifecycle --------------------------------------------------------------------------------
class LifecycleFailed(RuntimeError):
    """A node did not go launch -> running -> terminated."""


@dataclass
class Sample:
    start: float
    end: float
    workflow_id: str
    marks: dict[str, float] = field(default_factory=dict)


async def lifecycle(bench: Bench, index: int) -> Sample:
    """Launch, wait for running (the row), terminate (the update), wait for the workflow's end."""
    spec = node_spec(bench.run, index)
    timeout = bench.options.sizes.node_timeout_s
    start = time.monotonic()
    started = await bench.control.launch_node(spec)
    status = await bench.watcher.wait(spec.node_id, RUNNING_OR_FINAL, timeout)
    running = time.monotonic()
    if status != NodeStatus.RUNNING.value:
        raise LifecycleFailed(f"{spec.cluster_name} ended {status} instead of running")
    response = await asyncio.wait_for(bench.control.terminate_node(started.workflow_id), timeout)
    terminated = time.monotonic()
    if response.status is not NodeStatus.TERMINATED:
        raise LifecycleFailed(f"{spec.cluster_name} is {response.status} after terminate")
    handle = bench.client.get_workflow_handle(started.workflow_id)
    await asyncio.wait_for(handle.result(), timeout)
    end = time.monotonic()
    marks = {"running": running - start, "terminate": terminated - running}
    return Sample(start, end, started.workflow_id, marks)


async def launch_until_running(bench: Bench, index: int) -> str:
    """Start a node and wait until its row says running; its node id."""
    spec = node_spec(bench.run, index)
    await bench.control.launch_node(spec)
    status = await bench.watcher.wait(
        spec.node_id, RUNNING_OR_FINAL, bench.options.sizes.node_timeout_s
    )
    if status != NodeStatus.RUNNING.value:
        raise LifecycleFailed(f"{spec.cluster_name} ended {status} instead of running")
    return spec.node_id


def cpu_snapshot(pids: dict[str, int]) -> dict[str, float]:
    """CPU-seconds used so far by each process, and by the whole machine (all cores)."""
    found = {name: cpu_seconds(pid) for name, pid in pids.items()}
    found["machine"], found["machine_total"] = machine_cpu()
    return found


# --- closed loop ----------------------------------------------------------------------------------
@dataclass
class LoopResult:
    samples: list[Sample]
    errors: list[str]
    window_s: float
    cpu_s: dict[str, float]

    @property
    def per_second(self) -> float:
        return len(self.samples) / self.window_s

    def as_dict(self) -> dict[str, Any]:
        marks = sorted({name for s in self.samples for name in s.marks})
        return {
            "completed_in_window": len(self.samples),
            "window_s": self.window_s,
            "per_second": round(self.per_second, 2),
            "end_to_end": summary_ms([s.end - s.start for s in self.samples]),
            **{name: summary_ms([s.marks[name] for s in self.samples]) for name in marks},
            "errors": len(self.errors),
            "first_errors": self.errors[:5],
            "cpu_seconds_in_window": self.cpu_s,
            "cpu_ms_per_workflow": cpu_per_workflow(self.cpu_s, len(self.samples)),
        }


NOT_PROCESSES = ("machine", "rest of machine", "machine busy %")


def cpu_per_workflow(used: dict[str, float], completed: int) -> dict[str, float]:
    """CPU ms per completed workflow of each measured process, and their sum ("processes").

    The sum leaves out "rest of machine" (the kernel, other users' work on a shared box); it is
    shown beside it, per workflow too.
    """
    if not completed:
        return {}
    per = {
        name: round(seconds * 1000 / completed, 1)
        for name, seconds in used.items()
        if name not in NOT_PROCESSES
    }
    per["processes"] = round(sum(per.values()), 1)
    per["rest of machine"] = round(used.get("rest of machine", 0.0) * 1000 / completed, 1)
    return per


async def closed_loop(
    concurrency: int,
    warmup_s: float,
    window_s: float,
    one: Callable[[int], Awaitable[Sample]],
    pids: dict[str, int],
    backends: Callable[[], Awaitable[list[int]]] | None = None,
) -> LoopResult:
    """``concurrency`` slots each run ``one`` back to back; samples that END inside the window
    count. After the window no new work starts; what is in flight finishes.

    ``backends``: the PostgreSQL server processes of the run's database, counted as "postgres"
    (each from its CPU at the window's start, or from 0 if it started during the window)."""
    begin = time.monotonic()
    window_start, window_end = begin + warmup_s, begin + warmup_s + window_s
    counter = itertools.count()
    samples: list[Sample] = []
    errors: list[str] = []
    cpu: dict[str, dict[str, float]] = {}
    postgres: dict[str, dict[int, float]] = {}

    async def backend_cpu() -> dict[int, float]:
        return {pid: cpu_seconds(pid) for pid in (await backends() if backends else [])}

    async def slot() -> None:
        while time.monotonic() < window_end:
            try:
                samples.append(await one(next(counter)))
            except (TemporalError, TimeoutError, LifecycleFailed) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")

    async def cpu_probe() -> None:
        await asyncio.sleep(max(window_start - time.monotonic(), 0))
        cpu["start"] = cpu_snapshot(pids)
        postgres["start"] = await backend_cpu()
        await asyncio.sleep(max(window_end - time.monotonic(), 0))
        cpu["end"] = cpu_snapshot(pids)
        postgres["end"] = await backend_cpu()

    await asyncio.gather(cpu_probe(), *(slot() for _ in range(concurrency)))
    counted = [s for s in samples if window_start <= s.end <= window_end]
    used = {name: round(cpu["end"][name] - cpu["start"][name], 1) for name in cpu["end"]}
    total = used.pop("machine_total")
    measured = list(pids)
    if backends:
        start = postgres["start"]
        used["postgres"] = round(
            sum(end - start.get(pid, 0.0) for pid, end in postgres["end"].items()), 1
        )
        measured.append("postgres")
    used["rest of machine"] = round(used["machine"] - sum(used[name] for name in measured), 1)
    used["machine busy %"] = round(100 * used["machine"] / total, 1) if total else 0.0
    return LoopResult(counted, errors, window_s, used)


# --- phases ---------------------------------------------------------------------------------------
async def count_activities(bench: Bench) -> dict[str, int]:
    """Run one lifecycle and count what its history holds."""
    index = next(bench.indices)
    await lifecycle(bench, index)
    spec = node_spec(bench.run, index)
    handle = bench.client.get_workflow_handle(node_workflow_id(spec.node_id))
    history = await handle.fetch_history()
    kinds = Counter(event.event_type for event in history.events)
    remote = kinds[HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED]
    local = sum(
        1
        for event in history.events
        if event.HasField("marker_recorded_event_attributes")
        and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
    )
    return {
        # Local activities (the node's database steps) count: the baseline runs as many
        # activities as the lifecycle does, all of them regular.
        "activities": remote + local,
        "remote_activities": remote,
        "local_activities": local,
        "workflow_tasks": kinds[HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED],
        "updates": kinds[HistoryEventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED],
        "history_events": len(history.events),
    }


def history_parts(events: Sequence[HistoryEvent]) -> dict[str, float]:
    """Where one workflow's time went, in ms, from its history's event times: each activity
    type (scheduled -> completed), workflow tasks waiting for a worker (scheduled -> started)
    and running on it (started -> completed), and the rest (waiting for the client, timers)."""
    at = {e.event_id: e.event_time.ToNanoseconds() / 1e6 for e in events}
    names: dict[int, str] = {}
    parts: defaultdict[str, float] = defaultdict(float)
    for e in events:
        kind = e.event_type
        if kind == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            names[e.event_id] = e.activity_task_scheduled_event_attributes.activity_type.name
        elif kind == HistoryEventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled = e.activity_task_completed_event_attributes.scheduled_event_id
            parts[f"activity {names[scheduled]}"] += at[e.event_id] - at[scheduled]
        elif kind == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_STARTED:
            scheduled = e.workflow_task_started_event_attributes.scheduled_event_id
            parts["workflow tasks: waiting for the worker"] += at[e.event_id] - at[scheduled]
        elif kind == HistoryEventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            started_id = e.workflow_task_completed_event_attributes.started_event_id
            parts["workflow tasks: running on the worker"] += at[e.event_id] - at[started_id]
    total = at[events[-1].event_id] - at[events[0].event_id]
    parts["rest (client, update admission, gaps)"] = total - sum(parts.values())
    parts["total"] = total
    return dict(parts)


async def anatomy(client: Client, workflow_ids: Sequence[str], limit: int = 20) -> dict[str, float]:
    """The median of each part over up to ``limit`` workflows' histories."""
    per_part: dict[str, list[float]] = {}
    for workflow_id in workflow_ids[:limit]:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        for name, ms in history_parts(list(history.events)).items():
            per_part.setdefault(name, []).append(ms)
    return {name: round(percentile(v, 50), 1) for name, v in sorted(per_part.items())}


async def phase_throughput(bench: Bench) -> dict[str, Any]:
    sizes = bench.options.sizes
    await bench.sim.set_timings(**ZERO_LATENCY)
    return await measure(
        sizes,
        lambda _: lifecycle(bench, next(bench.indices)),
        bench.pids(),
        bench.client,
        bench.postgres_backends,
    )


async def measure(
    sizes: Sizes,
    one: Callable[[int], Awaitable[Sample]],
    pids: dict[str, int],
    client: Client,
    backends: Callable[[], Awaitable[list[int]]] | None = None,
) -> dict[str, Any]:
    """The closed loop at C (the targets), then at C=1 (no contention: the serial path)."""
    result = await closed_loop(
        sizes.concurrency, sizes.warmup_s, sizes.window_s, one, pids, backends
    )
    parts = await anatomy(client, [s.workflow_id for s in result.samples])
    serial = await closed_loop(
        1, min(sizes.warmup_s, 2.0), sizes.serial_window_s, one, pids, backends
    )
    serial_parts = await anatomy(client, [s.workflow_id for s in serial.samples])
    return {
        "concurrency": sizes.concurrency,
        "warmup_s": sizes.warmup_s,
        **result.as_dict(),
        "history_anatomy_ms": parts,
        "serial": {"concurrency": 1, **serial.as_dict(), "history_anatomy_ms": serial_parts},
    }


async def phase_baseline(options: Options, home: Path, activities: int) -> dict[str, Any]:
    """The bare workflow on a dev server and worker process of its own."""
    sizes = options.sizes
    stack = Stack(home)
    try:
        server = start_temporal(home, "temporal-baseline", search_attributes_registered=False)
        stack.add(server.process)
        worker = stack.add(start_baseline_worker(home, server.address, BASELINE_QUEUE))
        client = await connect_temporal(server.address)
        run = uuid.uuid4().hex[:6]

        async def one(index: int) -> Sample:
            start = time.monotonic()
            workflow_id = f"baseline-{run}-{index}"
            await client.execute_workflow(
                BASELINE_WORKFLOW,
                activities,
                id=workflow_id,
                task_queue=BASELINE_QUEUE,
                result_type=int,
            )
            return Sample(start, time.monotonic(), workflow_id)

        pids = {
            "dev_server": server.process.proc.pid,
            "worker": worker.proc.pid,
            "driver": os.getpid(),
        }
        measured = await measure(sizes, one, pids, client)
    finally:
        await stack.close()
    return {"activities": activities, **measured}


def calls_delta(before: dict[str, int], after: dict[str, int]) -> Counter[str]:
    """Calls made between two counter snapshots; model probes folded into one line."""
    delta: Counter[str] = Counter()
    for endpoint, count in after.items():
        name = MODEL_PROBE if endpoint.startswith("GET /sim/models/") else endpoint
        delta[name] += count - before.get(endpoint, 0)
    return Counter({name: n for name, n in delta.items() if n})


async def ready_lags(bench: Bench, node_ids: list[str]) -> list[float]:
    """Seconds from the model's /health turning 200 (simulator) to nodes.ready_at (row)."""
    statement = select(nodes.c.cluster_name, nodes.c.ready_at).where(nodes.c.node_id.in_(node_ids))
    async with bench.engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    timeline = await bench.sim.timeline()
    lags = []
    for cluster, ready_at in rows:
        ready = timeline.get(cluster, {}).get("model_ready_at")
        if ready is not None and ready_at is not None:
            lags.append(ready_at.timestamp() - ready)
    return lags


async def calls_at(bench: Bench, delay: float) -> dict[str, Any]:
    sizes = bench.options.sizes
    await bench.sim.set_timings(
        launch_delay_s=delay,
        model_warmup_s=sizes.model_warmup_s,
        status_delay_s=0.05,
        down_delay_s=0.5,
    )
    indices = [next(bench.indices) for _ in range(sizes.calls_lifecycles)]
    before = (await bench.sim.counters())["calls"]
    errors: list[str] = []

    async def one(index: int) -> None:
        try:
            await lifecycle(bench, index)
        except (TemporalError, TimeoutError, LifecycleFailed) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    await bounded(sizes.concurrency, indices, one)
    delta = calls_delta(before, (await bench.sim.counters())["calls"])
    lifecycles = len(indices)
    skypilot = {k: v for k, v in delta.items() if k != MODEL_PROBE}
    lags = await ready_lags(bench, [node_spec(bench.run, i).node_id for i in indices])
    return {
        "launch_delay_s": delay,
        "model_warmup_s": sizes.model_warmup_s,
        "lifecycles": lifecycles,
        "errors": len(errors),
        "first_errors": errors[:5],
        "skypilot_calls_per_lifecycle": round(sum(skypilot.values()) / lifecycles, 2),
        "per_endpoint": {k: round(v / lifecycles, 2) for k, v in sorted(skypilot.items())},
        "model_probes_per_lifecycle": round(delta.get(MODEL_PROBE, 0) / lifecycles, 2),
        "ready_detection": summary_ms(lags),
    }


async def phase_calls(bench: Bench) -> dict[str, Any]:
    return {
        "by_launch_delay": [await calls_at(bench, d) for d in bench.options.sizes.launch_delays]
    }


async def wait_counts(
    bench: Bench, want: str, node_ids: list[str], timeout_s: float, sample: Callable[[], None]
) -> dict[str, int]:
    """Poll the nodes' status counts until all are ``want`` or final; bounded."""
    deadline = time.monotonic() + timeout_s
    while True:
        counts = await count_by_status(bench.engine, node_ids)
        sample()
        done = counts.get(want, 0) + sum(n for s, n in counts.items() if s in FINAL and s != want)
        if done >= len(node_ids) or time.monotonic() > deadline:
            return counts
        await asyncio.sleep(0.5)


async def span_s(bench: Bench, node_ids: list[str], column: str, since: float) -> float:
    """Seconds from ``since`` (wall clock) to the latest ``column`` among the nodes."""
    statement = select(nodes.c[column]).where(nodes.c.node_id.in_(node_ids))
    async with bench.engine.connect() as connection:
        moments = [m for (m,) in (await connection.execute(statement)).all() if m is not None]
    return round(max(m.timestamp() for m in moments) - since, 2) if moments else float("nan")


async def phase_burst(bench: Bench) -> dict[str, Any]:
    sizes = bench.options.sizes
    await bench.sim.set_timings(
        launch_delay_s=sizes.burst_launch_delay_s,
        model_warmup_s=sizes.model_warmup_s,
        status_delay_s=0.05,
        down_delay_s=0.5,
    )
    specs = [node_spec(bench.run, next(bench.indices)) for _ in range(sizes.burst)]
    ids = [s.node_id for s in specs]
    peak: list[float] = []

    def sample() -> None:
        peak.append(rss_mib(bench.worker.proc.pid))

    rss_before = rss_mib(bench.worker.proc.pid)
    launched_at = time.time()
    await bounded(sizes.start_concurrency, specs, bench.control.launch_node)
    started_s = time.time() - launched_at
    counts = await wait_counts(bench, "running", ids, sizes.node_timeout_s, sample)
    drain_s = await span_s(bench, ids, "ready_at", launched_at)
    hwm = rss_mib(bench.worker.proc.pid, "VmHWM")
    lags = await ready_lags(bench, ids)
    terminate_at = time.time()
    errors: list[str] = []

    async def terminate(spec: Any) -> None:
        try:
            await bench.control.terminate_node(node_workflow_id(spec.node_id))
        except TemporalError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    await bounded(sizes.start_concurrency, specs, terminate)
    final = await wait_counts(bench, "terminated", ids, sizes.node_timeout_s, sample)
    live = (await bench.sim.counters())["live_clusters"]
    return {
        "nodes": len(specs),
        "launch_delay_s": sizes.burst_launch_delay_s,
        "model_warmup_s": sizes.model_warmup_s,
        "all_started_s": round(started_s, 2),
        "reached_running": counts.get("running", 0),
        "statuses_at_drain": counts,
        "time_to_drain_s": drain_s,
        "launches_per_s": round(len(specs) / drain_s, 2) if drain_s > 0 else float("nan"),
        "worker_rss_before_mib": rss_before,
        "worker_rss_max_sampled_mib": max(peak, default=0.0),
        "worker_peak_rss_vmhwm_mib": hwm,
        "ready_detection_under_burst": summary_ms(lags),
        "terminated": final.get("terminated", 0),
        "statuses_after_terminate": final,
        "time_to_terminate_all_s": await span_s(bench, ids, "terminated_at", terminate_at),
        "terminate_errors": len(errors),
        "first_errors": errors[:5],
        "live_clusters_after": len(live),
    }


async def memory_sample(bench: Bench, parked: int) -> dict[str, float]:
    return {
        "parked": parked,
        "worker_rss_mib": rss_mib(bench.worker.proc.pid),
        "worker_vmhwm_mib": rss_mib(bench.worker.proc.pid, "VmHWM"),
        "dev_server_rss_mib": rss_mib(bench.temporal.proc.pid),
        "database_mib": await database_size_mib(bench.engine),
    }


def growth_per_1000(samples: list[dict[str, float]]) -> dict[str, float]:
    """How much each measure grew per 1,000 parked nodes, first sample to last."""
    first, last = samples[0], samples[-1]
    nodes = max(last["parked"] - first["parked"], 1)
    keys = ("worker_rss_mib", "dev_server_rss_mib", "database_mib")
    return {key: round((last[key] - first[key]) * 1000 / nodes, 2) for key in keys}


async def phase_parked(bench: Bench) -> dict[str, Any]:
    sizes = bench.options.sizes
    await bench.sim.set_timings(**ZERO_LATENCY)
    samples = [await memory_sample(bench, 0)]
    step = max(sizes.parked // 5, 1)
    parked = 0
    errors: list[str] = []
    started = time.monotonic()

    async def one(index: int) -> None:
        nonlocal parked
        try:
            await launch_until_running(bench, index)
        except (TemporalError, TimeoutError, LifecycleFailed) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        parked += 1
        if parked % step == 0:
            samples.append(await memory_sample(bench, parked))

    indices = [next(bench.indices) for _ in range(sizes.parked)]
    await bounded(sizes.parked_inflight, indices, one)
    park_s = time.monotonic() - started
    await asyncio.sleep(sizes.parked_hold_s)
    held = await memory_sample(bench, parked)
    counts = await count_by_status(bench.engine, [node_spec(bench.run, i).node_id for i in indices])
    return {
        "nodes": sizes.parked,
        "parked_running": counts.get("running", 0),
        "inflight": sizes.parked_inflight,
        "time_to_park_s": round(park_s, 1),
        "hold_s": sizes.parked_hold_s,
        "samples": samples,
        "after_hold": held,
        "growth_per_1000_parked_mib": growth_per_1000(samples),
        "errors": len(errors),
        "first_errors": errors[:5],
        "teardown": "dev server stopped and database dropped (workflows not terminated)",
    }


def rig(bench: Bench) -> Rig:
    """The fleet phases' view of the stack: they park nodes as the parked phase does."""

    async def park(count: int) -> list[str]:
        found: list[str] = []

        async def one(index: int) -> None:
            found.append(await launch_until_running(bench, index))

        await bounded(
            bench.options.sizes.parked_inflight, [next(bench.indices) for _ in range(count)], one
        )
        return found

    return Rig(
        client=bench.client,
        engine=bench.engine,
        sim=bench.sim,
        worker_pid=bench.worker.proc.pid,
        task_queue=TASK_QUEUE,
        park=park,
        threshold=int(Settings.model_fields["model_probe_threshold"].default),
    )


# --- targets and the report -----------------------------------------------------------------------
@dataclass
class Target:
    name: str
    value: float
    limit: str
    passed: bool
    note: str = ""


def targets(phases: dict[str, Any]) -> list[Target]:
    found: list[Target] = []
    ours, base = phases.get("throughput"), phases.get("baseline")
    if ours and base and base["per_second"] > 0:
        ratio = ours["per_second"] / base["per_second"]
        found.append(
            Target("lifecycle throughput / baseline", round(ratio, 3), ">= 0.85", ratio >= 0.85)
        )
        p50 = ours["end_to_end"]["p50_ms"] / base["end_to_end"]["p50_ms"]
        found.append(Target("end-to-end p50 / baseline p50", round(p50, 3), "<= 1.2", p50 <= 1.2))
        cost = cpu_ratio(ours, base)
        if cost is not None:
            found.append(
                Target(
                    "CPU per lifecycle / bare Temporal (all processes)",
                    cost,
                    "<= 1.3",
                    cost <= 1.3,
                    f"{ours['cpu_ms_per_workflow']['processes']} / "
                    f"{base['cpu_ms_per_workflow']['processes']} ms",
                )
            )
    for run in phases.get("calls", {}).get("by_launch_delay", []):
        calls = run["skypilot_calls_per_lifecycle"]
        name = f"SkyPilot calls per lifecycle (launch {run['launch_delay_s']:g}s)"
        found.append(Target(name, calls, "<= 10", calls <= 10))
        p99 = run["ready_detection"]["p99_ms"]
        name = f"ready-detection p99 ms (launch {run['launch_delay_s']:g}s)"
        found.append(Target(name, p99, "< 1000", p99 < 1000))
    found += fleet_targets(phases)
    return found


def cpu_ratio(ours: dict[str, Any], base: dict[str, Any]) -> float | None:
    """CPU ms per lifecycle over the baseline's per workflow, every measured process counted."""
    mine, bare = ours.get("cpu_ms_per_workflow", {}), base.get("cpu_ms_per_workflow", {})
    if not mine.get("processes") or not bare.get("processes"):
        return None
    return round(float(mine["processes"]) / float(bare["processes"]), 3)


def fleet_targets(phases: dict[str, Any]) -> list[Target]:
    found: list[Target] = []
    health = phases.get("health")
    if health:
        calls = [r["skypilot_calls_per_min"] for r in health["by_size"]]
        noise = max(2.0, 0.1 * max(calls))
        sizes = "/".join(str(r["running_nodes"]) for r in health["by_size"])
        found.append(
            Target(
                f"health SkyPilot calls/min spread across {sizes} nodes",
                health["calls_per_min_spread"],
                f"<= {noise:g} (noise)",
                health["calls_per_min_spread"] <= noise,
            )
        )
        # At the deployed FLEET_HEALTH_LEASE, at every size (the smallest shares the most).
        events = max(r["temporal_events_per_node_hour"] for r in health["by_size"])
        found.append(Target("Temporal events per running node-hour", events, "<= 10", events <= 10))
    live = phases.get("liveness")
    if live:
        for key, limit in (("crash_to_unhealthy", "unhealthy"), ("preempt_to_lost", "lost")):
            p99 = live[key]["p99_ms"]
            bound = live[f"{limit}_limit_ms"]
            found.append(
                Target(f"{key.replace('_', ' ')} p99 ms", p99, f"< {bound:g}", p99 < bound)
            )
    admission = phases.get("admission")
    if admission:
        p99 = admission["status_latency"]["p99_ms"]
        found.append(Target("status p99 ms during the admission burst", p99, "< 1000", p99 < 1000))
    return found


def broken(phases: dict[str, Any]) -> list[str]:
    """Correctness failures: these make the run exit 1."""
    problems = []
    for name in ("throughput", "baseline"):
        if phases.get(name, {}).get("errors"):
            problems.append(f"{name}: {phases[name]['errors']} lifecycles failed")
    for run in phases.get("calls", {}).get("by_launch_delay", []):
        if run["errors"]:
            problems.append(f"calls at {run['launch_delay_s']}s: {run['errors']} failed")
    burst = phases.get("burst")
    if burst and (
        burst["reached_running"] != burst["nodes"] or burst["terminated"] != burst["nodes"]
    ):
        problems.append(
            f"burst: {burst['reached_running']} running, "
            f"{burst['terminated']} terminated of {burst['nodes']}"
        )
    live = phases.get("liveness")
    if live:
        for key in ("unhealthy_detected", "recovered", "lost_detected"):
            if live[key] != live["nodes"]:
                problems.append(f"liveness: {key} {live[key]} of {live['nodes']}")
    admission = phases.get("admission")
    if admission:
        if admission["reached_running"] != admission["nodes"]:
            problems.append(
                f"admission: {admission['reached_running']} of {admission['nodes']} running"
            )
        if admission["peak_in_flight"] > admission["budget"]:
            problems.append(
                f"admission: {admission['peak_in_flight']} launches in flight, over the budget "
                f"of {admission['budget']}"
            )
    parked = phases.get("parked")
    if parked and parked["parked_running"] != parked["nodes"]:
        problems.append(f"parked: {parked['parked_running']} of {parked['nodes']} running")
    return problems


def print_throughput(phases: dict[str, Any]) -> None:
    rows: list[list[object]] = []
    runs: list[tuple[str, Any]] = [
        (name, phases[name]) for name in ("throughput", "baseline") if name in phases
    ]
    runs += [(f"{name} C=1", r["serial"]) for name, r in list(runs)]
    for name, r in runs:
        e2e = r["end_to_end"]
        cpu = ", ".join(f"{k} {v}" for k, v in r["cpu_seconds_in_window"].items())
        counts = [r["concurrency"], r["completed_in_window"], r["per_second"]]
        rows.append([name, *counts, e2e["p50_ms"], e2e["p99_ms"], r["errors"], cpu])
    print("\nThroughput and latency (closed loop; CPU-seconds used in the window)")
    header = ["run", "C", "done", "per s", "p50 ms", "p99 ms", "errors", "CPU-s"]
    print(table(rows, header))
    print("\nCost per lifecycle (CPU ms per completed workflow; the ratio counts every process)")
    names = sorted({k for _, r in runs for k in r.get("cpu_ms_per_workflow", {})})
    rows = []
    for name, r in runs:
        per = r.get("cpu_ms_per_workflow", {})
        rows.append([name, *(per.get(k, "-") for k in names)])
    print(table(rows, ["run", *names]))
    if "throughput" in phases and "baseline" in phases:
        ratio = cpu_ratio(phases["throughput"], phases["baseline"])
        print(f"CPU per lifecycle / bare Temporal with as many activities: {ratio} (target <= 1.3)")


def print_anatomy(phases: dict[str, Any]) -> None:
    columns = [
        phases["throughput"]["history_anatomy_ms"],
        phases["baseline"]["history_anatomy_ms"],
        phases["throughput"]["serial"]["history_anatomy_ms"],
        phases["baseline"]["serial"]["history_anatomy_ms"],
    ]
    names = sorted({name for column in columns for name in column})
    rows = [[name, *(column.get(name, "-") for column in columns)] for name in names]
    c = phases["throughput"]["concurrency"]
    print("\nWhere a workflow's time goes (median ms per workflow, from its history)")
    header = ["part", f"lifecycle C={c}", f"baseline C={c}", "lifecycle C=1", "baseline C=1"]
    print(table(rows, header))


def print_calls(run: dict[str, Any]) -> None:
    print(
        f"\nSkyPilot calls per lifecycle, launch {run['launch_delay_s']:g}s "
        f"(model warm-up {run['model_warmup_s']:g}s, {run['lifecycles']} lifecycles)"
    )
    rows: list[list[object]] = [[k, v] for k, v in run["per_endpoint"].items()]
    rows.append(["total (SkyPilot)", run["skypilot_calls_per_lifecycle"]])
    rows.append(
        ["model /health probes (the node, not SkyPilot)", run["model_probes_per_lifecycle"]]
    )
    print(table(rows, ["endpoint", "per lifecycle"]))
    rd = run["ready_detection"]
    print(
        f"ready detection (/health 200 -> nodes.ready_at): p50 {rd['p50_ms']} ms, "
        f"p99 {rd['p99_ms']} ms, max {rd['max_ms']} ms (n={rd['n']})"
    )


def print_parked(parked: dict[str, Any]) -> None:
    print(
        f"\nParked running nodes ({parked['parked_running']}/{parked['nodes']} running, "
        f"parked in {parked['time_to_park_s']} s; last row: after {parked['hold_s']:g} s held)"
    )
    keys = ["parked", "worker_rss_mib", "worker_vmhwm_mib", "dev_server_rss_mib", "database_mib"]
    rows = [[s[k] for k in keys] for s in [*parked["samples"], parked["after_hold"]]]
    print(table(rows, ["parked", "worker RSS MiB", "worker VmHWM MiB", "dev server MiB", "db MiB"]))
    growth = ", ".join(f"{k} {v}" for k, v in parked["growth_per_1000_parked_mib"].items())
    print(f"growth per 1,000 parked nodes (MiB): {growth}")


def print_fleet(phases: dict[str, Any]) -> None:
    health = phases.get("health")
    if health:
        print(
            f"\nFleet health load (sweep and probes every {health['interval_s']:g}s, lease-mode "
            f"runs every {health['bench_lease_s']:g}s; events also at the deployed "
            f"FLEET_HEALTH_LEASE {health['deployed_lease_s']:g}s)"
        )
        keys = [
            "running_nodes",
            "skypilot_calls_per_min",
            "model_probes_per_min",
            "temporal_events_per_node_hour",
            "temporal_events_per_node_hour_at_bench_lease",
            "of_which_node_workflow",
            "sweep_events_per_lease",
            "sweep_events_per_hour",
            "worker_rss_mib",
            "load_average",
        ]
        rows: list[list[object]] = [[r.get(k, "-") for k in keys] for r in health["by_size"]]
        for x in [*health.get("extrapolated_also", []), health["extrapolated"]]:
            name = f"{x['running_nodes']} (EXTRAPOLATED)"
            rows.append([name, *(x.get(k, "-") for k in keys[1:])])
        x = health["extrapolated"]
        header = [
            "nodes",
            "SkyPilot calls/min",
            "probes/min",
            "events/node-h (deployed lease)",
            "events/node-h (bench lease)",
            "of which node wf",
            "sweep events/lease",
            "sweep events/h (deployed lease)",
            "worker MiB",
            "load 1/5/15",
        ]
        print(table(rows, header))
        print(x["label"])
    if "liveness" in phases:
        print("\nLiveness")
        print(table([[k, v] for k, v in phases["liveness"].items()], ["", "value"]))
    if "admission" in phases:
        after = phases["admission"]
        before = after["before_no_admission"]
        print("\nAdmission burst (before: no budget; after: the default budget)")
        rows = [[k, before.get(k, "-"), v] for k, v in after.items() if k != "before_no_admission"]
        print(table(rows, ["", "before", "after"]))


def print_report(report: dict[str, Any]) -> None:
    phases = report["phases"]
    if "throughput" in phases or "baseline" in phases:
        print_throughput(phases)
    if "throughput" in phases and "baseline" in phases:
        print_anatomy(phases)
    for run in phases.get("calls", {}).get("by_launch_delay", []):
        print_calls(run)
    if "burst" in phases:
        print("\nBurst")
        rows = [[k, v] for k, v in phases["burst"].items() if k != "first_errors"]
        print(table(rows, ["", "value"]))
    print_fleet(phases)
    if "parked" in phases:
        print_parked(phases["parked"])
    print("\nTargets")
    rows = [
        [t["name"], t["value"], t["limit"], "PASS" if t["passed"] else "MISS"]
        for t in report["targets"]
    ]
    print(table(rows, ["target", "value", "limit", "result"]))
    for problem in report["broken"]:
        print(f"BROKEN: {problem}")
    print(f"\nJSON: {report['json']}  logs: {report['logs']}")


# --- main -----------------------------------------------------------------------------------------
async def run(options: Options, home: Path) -> dict[str, Any]:
    phases: dict[str, Any] = {}
    stack = Stack(home)
    try:
        bench = await open_bench(options, home, stack)
        history = await count_activities(bench)
        phases["lifecycle_history"] = history
        if "throughput" in options.phases:
            phases["throughput"] = await phase_throughput(bench)
        if "baseline" in options.phases:
            phases["baseline"] = await phase_baseline(options, home, history["activities"])
        if "calls" in options.phases:
            phases["calls"] = await phase_calls(bench)
        if "burst" in options.phases:
            phases["burst"] = await phase_burst(bench)
        if "health" in options.phases:
            phases["health"] = await phase_health(rig(bench), options.fleet)
        if "liveness" in options.phases:
            phases["liveness"] = await phase_liveness(rig(bench), options.fleet)
        if "admission" in options.phases:
            phases["admission"] = await phase_admission(home, options.admin_url, options.fleet)
        if "parked" in options.phases:
            phases["parked"] = await phase_parked(bench)
    finally:
        await stack.close()
    return phases


def main(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    quiet = wait_for_quiet(options.quiet_load, options.quiet_timeout_s)
    home = run_dir("benchmark", options.logs)
    started = time.monotonic()
    phases = asyncio.run(run(options, home))
    found = targets(phases)
    report = {
        "machine": machine_info(),
        "quiet": quiet,
        "command": " ".join([".venv/bin/python", "scripts/benchmark.py", *argv]),
        "sizes": asdict(options.sizes),
        "fleet_sizes": asdict(options.fleet),
        "settings": {"NODE_HEALTH_CHECK_INTERVAL": "30m", "RECONCILE_INTERVAL": "24h"},
        "logs": str(home),
        "duration_s": round(time.monotonic() - started, 1),
        "phases": phases,
        "targets": [asdict(t) for t in found],
        "broken": broken(phases),
        "json": str(options.json_path),
    }
    write_json(options.json_path, report)
    print_report(report)
    return 1 if report["broken"] else 0


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
