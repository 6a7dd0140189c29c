"""Chaos run: N node lifecycles while everything around the workers misbehaves, then invariants.

    .venv/bin/python scripts/chaos.py              # 200 lifecycles, a 16-minute outage (~25 min)
    .venv/bin/python scripts/chaos.py --small      # 12 lifecycles, a 40 s outage (a few minutes)

Stack: the Temporal dev server (in memory), an EMBEDDED PostgreSQL (pgserver, Unix socket only,
its data in .cache/chaos/pgdata-<id>, removed at the end) so it can be stopped without
touching the system PostgreSQL, the SkyPilot simulator and --workers ``python worker.py``
processes on one task queue; all on 127.0.0.1, all stopped at the end. Every node is launched
(every --cli-every-th one in CLI mode, through a ``sky`` shim, ``<run dir>/bin/sky``, that runs
the simulator's ``sky``: devtools/skypilot_sim/sky_cli.py), and once running terminated (or it
fails). Meanwhile:

  * a worker is SIGKILLed --kills times (spread over the run, each time the next of the
    workers in turn) and started again;
  * the simulator answers 503 bursts (with Retry-After) --bursts times, loses responses to
    accepted POSTs (--drop-rate) and commits those late (--late-commit-s: the request appears
    only that long after its lost response, within SKYPILOT_SUBMIT_COMMIT_HORIZON), and fails
    launches (--failure-rate), cycling through a transient type (ResourcesUnavailableError:
    the workflow relaunches, recording one more ``node.launched``) and a permanent one
    (ProvisionPrechecksError: the node fails);
  * PostgreSQL is stopped and started again --pg-restarts times (2 s), and stopped for
    --outage-s --outages times: by default 16 minutes, longer than the 15-minute
    schedule-to-close the database steps had before they retried without a total deadline
    (workflows/options.py, DATABASE); --small's 40 s outlasts a step's 30 s start-to-close
    and its retries' 30 s cap, the same code path;
  * an operator terminates --terminates node workflows (``handle.terminate()``, as
    ``temporal workflow terminate`` does) while their rows are launching or running; the
    reconciler's schedule (every --reconcile-interval) must start them again
    (RECONCILE_RECOVER_LIVE=adopt, activities/recovery.py).

Then it checks, prints and writes (--json) the invariants; any broken one exits 1:
  every node terminated, or failed with a reason; launch requests per cluster (simulator) equal
  the node's ``node.launched`` events; no live cluster without a row, none of an ended node; no
  row without a final state; no event recorded twice (node, type, attempt); every node's events
  a valid path ending at its row's status; every planned fault fired; no node stuck; every
  cluster that ever existed (GET /sim/history) is gone or belongs to a live, running row; every
  terminated workflow was recovered (a new run ended its row); every CLI node's row says cli;
  the JetStream stream holds every event exactly once (every worker runs the relay).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import shutil
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from bench_support import (
    FINAL,
    REPO,
    RUNNING_OR_FINAL,
    SIM_TOKEN,
    Stack,
    StatusWatcher,
    bench_worker_env,
    bounded,
    event_rows,
    exit_now,
    kill_hard,
    machine_info,
    node_rows,
    node_spec,
    open_engine,
    run_dir,
    table,
    wait_for_quiet,
    write_json,
)
from chaos_relay import relay_check, relay_env, reset_stream, start_private_nats
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.exceptions import TemporalError

from controlplane import lifecycle
from controlplane.db.embedded import EmbeddedPostgres, start_embedded_postgres
from controlplane.db.errors import DATABASE_ERRORS
from controlplane.db.schema import nodes
from controlplane.lifecycle import EventType, LaunchMode, NodeStatus
from controlplane.spec import NodeSpec
from devtools.devstack import (
    CHAOS_TIMINGS,
    Process,
    SimulatorProcess,
    connect_temporal,
    start_embedded,
    start_simulator_process,
    start_temporal,
    start_worker,
    write_sky_shim,
)
from starter.api import ControlPlane, NotFound
from workflows.deployment import node_workflow_id

TASK_QUEUE = "chaos-nodes"
# What the driver retries: Temporal errors, its own bounded waits, and the starter's NotFound
# (an update sent to a run the operator terminated, before the reconciler starts a new one).
DRIVER_ERRORS = (TemporalError, TimeoutError, NotFound)
TRANSIENT, PERMANENT = "ResourcesUnavailableError", "ProvisionPrechecksError"
# The database steps (workflows/options.py DATABASE: retried, no total deadline); their failed
# attempts are counted from the workers' logs (the SDK's "Completing activity as failed").
DB_STEPS = (
    "record_intent",
    "record_transition",
    "lookup_cluster",
    "credential_reference",
    "release_launch_slot",
)
FAILED_ATTEMPT = re.compile(
    r"Completing activity as failed \(\{.*'activity_type': '(\w+)', 'attempt': (\d+)"
)
# Rows an operator's terminate picks from: a node mid-launch or serving.
TERMINABLE = (NodeStatus.LAUNCHING.value, NodeStatus.RUNNING.value)


# --- options --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    lifecycles: int = 200
    concurrency: int = 20
    workers: int = 3
    kills: int = 6
    pg_restarts: int = 1
    outages: int = 1
    outage_s: float = 960.0
    terminates: int = 8
    cli_every: int = 10
    late_commit_s: float = 5.0
    reconcile_interval: str = "10s"
    bursts: int = 4
    burst_size: int = 15
    retry_after_s: int = 1
    drop_rate: float = 0.03
    failure_rate: float = 0.08
    drop_first: int = 0
    fail_first: int = 0
    launch_delay_s: float = 1.0
    model_warmup_s: float = 0.5
    node_timeout_s: float = 600.0
    seed: int = 7


SMALL = Plan(
    lifecycles=12,
    concurrency=6,
    kills=3,
    outage_s=40.0,
    terminates=2,
    cli_every=3,
    late_commit_s=3.0,
    bursts=1,
    burst_size=10,
    drop_rate=0.0,
    failure_rate=0.0,
    drop_first=2,
    fail_first=2,
    launch_delay_s=0.5,
    model_warmup_s=0.2,
    node_timeout_s=240.0,
)


@dataclass(frozen=True)
class Options:
    plan: Plan
    json_path: Path
    logs: Path | None
    quiet_load: float
    quiet_timeout_s: float


def parse_args(argv: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="scripts/chaos.py", description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="12 lifecycles, a 40 s outage: minutes")
    p.add_argument("--json", type=Path, default=REPO / ".cache" / "chaos.json")
    p.add_argument("-n", "--lifecycles", type=int, help="nodes to run (default 200)")
    p.add_argument("--concurrency", type=int, help="nodes in flight (default 20)")
    p.add_argument("--workers", type=int, help="worker processes (default 3)")
    p.add_argument("--kills", type=int, help="worker SIGKILLs, the workers in turn (default 6)")
    p.add_argument("--pg-restarts", type=int, help="PostgreSQL 2 s restarts (default 1)")
    p.add_argument("--outages", type=int, help="long PostgreSQL outages (default 1)")
    p.add_argument("--outage-s", type=float, help="length of each outage (default 960 s)")
    p.add_argument("--terminates", type=int, help="operator terminates of node workflows (8)")
    p.add_argument("--cli-every", type=int, help="every N-th node in CLI mode (10; 0 = none)")
    p.add_argument("--late-commit-s", type=float, help="lost responses commit this late (5)")
    p.add_argument("--reconcile-interval", help="RECONCILE_INTERVAL of the workers (10s)")
    p.add_argument("--bursts", type=int, help="503 bursts (default 4)")
    p.add_argument("--burst-size", type=int, help="503 answers per burst (default 15)")
    p.add_argument("--drop-rate", type=float, help="share of POST responses lost (0.03)")
    p.add_argument("--failure-rate", type=float, help="share of launches failing (0.08)")
    p.add_argument("--seed", type=int)
    p.add_argument("--logs", type=Path, help="where run logs go (default .cache/chaos)")
    p.add_argument("--quiet-load", type=float, default=0.0, help="wait for loadavg below this")
    p.add_argument("--quiet-timeout", type=float, default=1200.0, dest="quiet_timeout_s")
    args = p.parse_args(argv)
    plan = SMALL if args.small else Plan()
    given = {
        name: getattr(args, name)
        for name in Plan.__dataclass_fields__
        if getattr(args, name, None) is not None
    }
    return Options(
        replace(plan, **given), args.json, args.logs, args.quiet_load, args.quiet_timeout_s
    )


# --- the stack ------------------------------------------------------------------------------------
@dataclass
class Chaos:
    plan: Plan
    home: Path
    stack: Stack
    client: Client
    engine: AsyncEngine
    sim: SimulatorProcess
    postgres: EmbeddedServer
    env: dict[str, str]
    workers: list[Process]
    watcher: StatusWatcher
    run: str = field(default_factory=lambda: f"c{uuid.uuid4().hex[:6]}")
    started: int = 0
    done: int = 0
    incarnation: int = 1
    kills_per_worker: Counter[str] = field(default_factory=Counter)
    # node id -> (workflow id, the run the operator terminated, the row's status then)
    terminated: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    rng: random.Random = field(default_factory=random.Random)
    actions: list[dict[str, Any]] = field(default_factory=list)
    outcomes: dict[str, str] = field(default_factory=dict)
    progress: asyncio.Condition = field(default_factory=asyncio.Condition)

    @property
    def control(self) -> ControlPlane:
        return ControlPlane(self.client, TASK_QUEUE)

    @property
    def node_timeout_s(self) -> float:
        """A node's bounded waits: the plan's, plus the outages nothing can finish during."""
        return self.plan.node_timeout_s + self.plan.outages * self.plan.outage_s

    def spec(self, index: int) -> NodeSpec:
        return node_spec(self.run, index, tenant="chaos")

    def launch_mode(self, index: int) -> LaunchMode:
        return LaunchMode.CLI if cli_mode(self.plan.cli_every, index) else LaunchMode.API


def cli_mode(every: int, index: int) -> bool:
    """Whether the ``index``-th node runs in CLI mode: every ``every``-th one (0: none)."""
    return every > 0 and index % every == every - 1


def worker_name(slot: int) -> str:
    return f"worker-{'abcdefgh'[slot]}" if slot < 8 else f"worker-{slot}"


async def open_chaos(plan: Plan, home: Path, stack: Stack) -> Chaos:
    server = start_temporal(home, search_attributes_registered=False)
    stack.add(server.process)
    # The data stays in the checkout whatever --logs says: as root, pgserver opens the parents
    # of its data directory to its own system user (controlplane/db/embedded.py).
    data_dir = REPO / ".cache" / "chaos" / f"pgdata-{uuid.uuid4().hex[:8]}"
    postgres = EmbeddedServer(await asyncio.to_thread(start_embedded, data_dir))
    stack.cleanups.append(postgres.remove)  # clean-ups run in reverse: this one last
    timings = CHAOS_TIMINGS.replace(
        launch_delay_s=plan.launch_delay_s,
        model_warmup_s=plan.model_warmup_s,
        reconcile_interval=plan.reconcile_interval,
    )
    sim = start_simulator_process(home, timings, SIM_TOKEN)
    stack.add(sim.process)
    stack.cleanups.append(sim.http.aclose)
    env = bench_worker_env(
        server.address,
        postgres.server.url,
        sim.url,
        TASK_QUEUE,
        timings=timings,
        extra={
            "SKYPILOT_MAX_RETRIES": "3",
            "SKYPILOT_CLI_PATH": str(write_sky_shim(home / "bin" / "sky", sim.url)),
            "RECONCILE_RECOVER_LIVE": "adopt",
        },
    )
    nats_server, nats_url = await asyncio.to_thread(start_private_nats, home)
    if nats_server is not None:
        stack.add(nats_server)
    env.update(relay_env(nats_url))  # every worker relays events to JetStream (chaos_relay.py)
    await reset_stream(nats_url)
    workers = [
        stack.add(await asyncio.to_thread(start_worker, home, env, f"{worker_name(slot)}-1"))
        for slot in range(plan.workers)
    ]
    client = await connect_temporal(server.address)
    engine = open_engine(postgres.server.url)
    stack.cleanups.append(engine.dispose)
    watcher = await StatusWatcher(engine, interval_s=0.1).__aenter__()
    stack.cleanups.append(watcher.__aexit__)
    chaos = Chaos(plan, home, stack, client, engine, sim, postgres, env, workers, watcher)
    chaos.rng.seed(plan.seed)
    return chaos


@dataclass
class EmbeddedServer:
    """The embedded PostgreSQL of the run, across its restarts."""

    server: EmbeddedPostgres

    async def restart(self, down_s: float) -> None:
        await asyncio.to_thread(self.server.stop)
        await asyncio.sleep(down_s)
        self.server = await asyncio.to_thread(start_embedded_postgres, self.server.data_dir)

    async def remove(self) -> None:
        """Stop it and delete its data (the run's logs stay)."""
        await asyncio.to_thread(self.server.stop)
        shutil.rmtree(self.server.data_dir, ignore_errors=True)


# --- driving one node -----------------------------------------------------------------------------
async def retrying(
    call: Callable[[], Awaitable[Any]], attempts: int, what: str, pause_s: float = 1.0
) -> Any:
    """``call()`` until it succeeds, at most ``attempts`` times, ``pause_s`` apart."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except DRIVER_ERRORS as exc:
            if attempt == attempts:
                raise
            print(f"  retrying {what} ({type(exc).__name__}: {exc})", flush=True)
            await asyncio.sleep(pause_s)
    return None


async def terminate(chaos: Chaos, workflow_id: str) -> None:
    """The terminate update, retried: a killed worker can lose an update in flight, and an
    operator's terminate ends the run it was sent to until the reconciler starts a new one."""

    async def call() -> None:
        await asyncio.wait_for(chaos.control.terminate_node(workflow_id), 120)

    # Until the node's bounded wait: an operator-terminated run is started again only by the
    # reconciler, which cannot run while PostgreSQL is down (the long outage).
    attempts = max(60, int(chaos.node_timeout_s / 3.0) + 1)
    await retrying(call, attempts, f"terminate {workflow_id}", pause_s=3.0)


async def workflow_outcome(chaos: Chaos, workflow_id: str) -> str:
    handle = chaos.client.get_workflow_handle(workflow_id)
    try:
        await asyncio.wait_for(handle.result(), chaos.node_timeout_s)
    except WorkflowFailureError as exc:
        return f"workflow failed: {exc.cause}"
    return "workflow completed"


async def drive(chaos: Chaos, index: int) -> None:
    """Launch; once running, terminate; wait for the end. Never raises: records the outcome."""
    spec = chaos.spec(index)
    workflow_id = node_workflow_id(spec.node_id)
    timeout = chaos.node_timeout_s
    mode = chaos.launch_mode(index)
    try:
        await retrying(
            lambda: chaos.control.launch_node(spec, launch_mode=mode),
            5,
            f"launch {spec.cluster_name}",
        )
        chaos.started += 1
        status = await chaos.watcher.wait(spec.node_id, RUNNING_OR_FINAL, timeout)
        if status == NodeStatus.RUNNING.value:
            await terminate(chaos, workflow_id)
            status = await chaos.watcher.wait(spec.node_id, FINAL, timeout)
        chaos.outcomes[spec.node_id] = f"{status}; {await workflow_outcome(chaos, workflow_id)}"
    except DRIVER_ERRORS as exc:
        chaos.outcomes[spec.node_id] = f"stuck: {type(exc).__name__}: {exc}"
    finally:
        async with chaos.progress:
            chaos.done += 1
            chaos.progress.notify_all()


# --- the faults -----------------------------------------------------------------------------------
async def kill_worker(chaos: Chaos) -> str:
    """SIGKILL the next worker in turn (its ``sky`` children too) and start it again."""
    slot = sum(chaos.kills_per_worker.values()) % len(chaos.workers)
    victim = chaos.workers[slot]
    code = await asyncio.to_thread(kill_hard, victim)
    chaos.stack.processes.remove(victim)
    chaos.kills_per_worker[worker_name(slot)] += 1
    await asyncio.sleep(1.0)
    chaos.incarnation += 1
    name = f"{worker_name(slot)}-{chaos.kills_per_worker[worker_name(slot)] + 1}"
    chaos.workers[slot] = chaos.stack.add(
        await asyncio.to_thread(start_worker, chaos.home, chaos.env, name)
    )
    return f"{victim.name} SIGKILLed (exit {code}); {name} polling"


async def restart_postgres(chaos: Chaos) -> str:
    await chaos.postgres.restart(2.0)
    return "PostgreSQL stopped for 2 s and started again"


async def postgres_outage(chaos: Chaos) -> str:
    down_s = chaos.plan.outage_s
    print(f"  PostgreSQL down for {down_s:.0f} s from now", flush=True)
    await chaos.postgres.restart(down_s)
    return f"PostgreSQL was down for {down_s:.0f} s and is back"


async def terminable_rows(chaos: Chaos) -> list[tuple[str, str]]:
    """(node id, status) of the run's rows an operator's terminate may pick."""
    statement = select(nodes.c.node_id, nodes.c.status).where(
        nodes.c.tenant == "chaos", nodes.c.status.in_(TERMINABLE)
    )
    async with chaos.engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return [(str(n), str(s)) for n, s in rows if str(n) not in chaos.terminated]


async def operator_terminate(chaos: Chaos) -> str:
    """``temporal workflow terminate`` of a random launching or running node's workflow."""
    deadline = time.monotonic() + 120
    while True:
        try:
            candidates = sorted(await terminable_rows(chaos))
        except DATABASE_ERRORS:
            candidates = []
        if candidates or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    if not candidates:
        raise RuntimeError("no launching or running node to terminate for 120 s")
    node_id, status = chaos.rng.choice(candidates)
    workflow_id = node_workflow_id(node_id)
    described = await chaos.client.get_workflow_handle(workflow_id).describe()
    handle = chaos.client.get_workflow_handle(workflow_id, run_id=described.run_id)
    await handle.terminate(reason="chaos: an operator's temporal workflow terminate")
    chaos.terminated[node_id] = (workflow_id, described.run_id, status)
    return f"terminated {workflow_id} (row {status}); the reconciler must recover it"


async def burst_503(chaos: Chaos) -> str:
    size, after = chaos.plan.burst_size, chaos.plan.retry_after_s
    await chaos.sim.set_faults(unavailable_burst=size, retry_after_s=after)
    return f"next {size} SkyPilot calls answer 503 (Retry-After: {after})"


FAULTS: dict[str, Callable[[Chaos], Awaitable[str]]] = {
    "kill": kill_worker,
    "pg_restart": restart_postgres,
    "pg_outage": postgres_outage,
    "terminate": operator_terminate,
    "burst_503": burst_503,
}


def schedule(plan: Plan) -> list[tuple[float, str]]:
    """(share of nodes finished, fault) pairs, spread over 10-85 % of the run."""

    def spread(count: int, offset: float, width: float = 0.75) -> list[float]:
        return [0.1 + width * (i + offset) / count for i in range(count)]

    timed = [(at, "kill") for at in spread(plan.kills, 0.5)]
    timed += [(at, "pg_restart") for at in spread(plan.pg_restarts, 0.4)]
    timed += [(at, "pg_outage") for at in spread(plan.outages, 0.6)]
    # Terminates early enough that launching and running nodes are still around.
    timed += [(at, "terminate") for at in spread(plan.terminates, 0.3, width=0.5)]
    timed += [(at, "burst_503") for at in spread(plan.bursts, 0.0)]
    return sorted(timed)


async def finished(chaos: Chaos, count: float) -> None:
    """Until at least ``count`` nodes have finished."""
    async with chaos.progress:
        await chaos.progress.wait_for(lambda: chaos.done >= count)


async def monkey(chaos: Chaos) -> None:
    """Fire each planned fault once the share of finished nodes reaches its mark."""
    begin = time.monotonic()
    total = chaos.plan.lifecycles
    for at, fault in schedule(chaos.plan):
        await finished(chaos, min(at * total, total))
        if chaos.done >= total:
            chaos.actions.append({"fault": fault, "fired": False, "at_done": chaos.done})
            continue
        note = await FAULTS[fault](chaos)
        elapsed = round(time.monotonic() - begin, 1)
        chaos.actions.append({"fault": fault, "fired": True, "at_done": chaos.done, "t_s": elapsed})
        print(f"[{elapsed:7.1f}s] {chaos.done:4d}/{total} done: {note}", flush=True)


async def standing_faults(chaos: Chaos) -> dict[str, Any]:
    plan = chaos.plan
    return await chaos.sim.set_faults(
        seed=plan.seed,
        drop_response_rate=plan.drop_rate,
        drop_next_responses=plan.drop_first,
        launch_failure_rate=plan.failure_rate,
        fail_next_launches=plan.fail_first,
        launch_failure_types=[TRANSIENT, PERMANENT],
        late_commit_s=plan.late_commit_s,
    )


# --- invariants -----------------------------------------------------------------------------------
@dataclass
class Check:
    name: str
    bad: int
    of: int
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.bad == 0


EVENT = {e.value for e in EventType}
# Every (event, from, to) the state machine allows (controlplane/lifecycle.py).
TRANSITIONS = frozenset(
    (t.event.value, status.value, t.target.value)
    for t in lifecycle.TRANSITIONS.values()
    for status in t.allowed_from
)


def attempt_of(event: dict[str, Any]) -> str:
    parts = str(event["dedupe_key"]).split(":")
    return parts[2] if len(parts) > 2 else "0"


def path_problem(events: list[dict[str, Any]], row_status: str) -> str | None:
    """Why the node's events are not a valid path from pending to its row's status, or None."""
    state, next_attempt = "pending", 0
    for e in events:
        step = (e["event_type"], e["from_status"], e["to_status"])
        if e["from_status"] != state:
            return f"{e['event_type']} from {e['from_status']} while the node was {state}"
        if step not in TRANSITIONS:
            return f"{e['event_type']} {e['from_status']} -> {e['to_status']} is not a transition"
        if e["event_type"] == EventType.LAUNCHED.value:
            if attempt_of(e) != str(next_attempt):
                return f"launch attempt {attempt_of(e)} where {next_attempt} was next"
            next_attempt += 1
        state = e["to_status"]
    return None if state == row_status else f"events end at {state}, the row says {row_status}"


@dataclass(frozen=True)
class Observed:
    """What the run left behind, read once at the end."""

    rows: list[dict[str, Any]]
    events: list[dict[str, Any]]
    counters: dict[str, Any]
    history: list[dict[str, Any]]
    # node id -> (latest run id, its status) of every workflow the operator terminated
    latest_runs: dict[str, tuple[str, str]]
    # cluster -> its launch requests, where they are not one per node.launched event
    uneven_launches: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


async def latest_runs(chaos: Chaos) -> dict[str, tuple[str, str]]:
    found = {}
    for node_id, (workflow_id, _, _) in chaos.terminated.items():
        described = await chaos.client.get_workflow_handle(workflow_id).describe()
        status = described.status.name if described.status else "UNKNOWN"
        found[node_id] = (described.run_id, status)
    return found


def check_all(chaos: Chaos, seen: Observed) -> list[Check]:
    rows, events, counters = seen.rows, seen.events, seen.counters
    specs = [chaos.spec(i) for i in range(chaos.plan.lifecycles)]
    every = chaos.plan.cli_every
    by_id = {row["node_id"]: row for row in rows}
    per_node: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        per_node.setdefault(e["node_id"], []).append(e)
    return [
        check_outcomes(specs, by_id),
        check_launches(specs, per_node, counters["launch_requests"], seen.uneven_launches),
        check_live(counters["live_clusters"], rows, final=False),
        check_live(counters["live_clusters"], rows, final=True),
        check_rows_final(rows),
        check_duplicates(events),
        check_paths(rows, per_node),
        check_faults(chaos),
        check_stuck(chaos),
        check_history(seen.history, rows),
        check_recovered(chaos.terminated, seen.latest_runs, by_id),
        check_cli([chaos.spec(i) for i in range(len(specs)) if cli_mode(every, i)], by_id),
    ]


def check_outcomes(specs: list[NodeSpec], by_id: dict[str, dict[str, Any]]) -> Check:
    bad = []
    for spec in specs:
        row = by_id.get(spec.node_id)
        status = row["status"] if row else "no row"
        if status == "terminated" or (status == "failed" and (row or {}).get("error")):
            continue
        bad.append(f"{spec.cluster_name}: {status}")
    return Check("every node terminated, or failed with a reason", len(bad), len(specs), bad[:5])


def launched_events(per_node: dict[str, list[dict[str, Any]]], node_id: str) -> int:
    return sum(1 for e in per_node.get(node_id, []) if e["event_type"] == "node.launched")


def each_after_a_failure(launches: list[dict[str, Any]]) -> bool:
    """Whether every launch request but the last had ended before the next one was sent: it
    FAILED, or the cluster it made was already gone (downed by compensation: a recovered node
    whose earlier run's launch was cleaned up is launched again by the adopting run)."""
    ordered = sorted(launches, key=lambda r: float(r["created_at"]))

    def ended_before(earlier: dict[str, Any], later: dict[str, Any]) -> bool:
        sent = float(later["created_at"])
        failed = earlier["status"] == "FAILED" and earlier["finished_at"] is not None
        if failed and float(earlier["finished_at"]) <= sent:
            return True
        gone = earlier.get("cluster_gone_at")
        return gone is not None and float(gone) <= sent

    return all(ended_before(earlier, later) for earlier, later in pairwise(ordered))


def check_launches(
    specs: list[NodeSpec],
    per_node: dict[str, list[dict[str, Any]]],
    requests: dict[str, int],
    launches: dict[str, list[dict[str, Any]]] | None = None,
) -> Check:
    """One launch request per ``node.launched`` event; where they differ (a CLI launch that
    failed inside ``sky launch`` records no event; so does a recovered node relaunched after
    its earlier run's launch failed), every request but the last must have FAILED before the
    next was sent: never two launches that could both make a cluster."""
    bad = []
    for spec in specs:
        launched = launched_events(per_node, spec.node_id)
        sent = requests.get(spec.cluster_name, 0)
        if sent == launched:
            continue
        listed = (launches or {}).get(spec.cluster_name)
        if listed is not None and len(listed) == sent and each_after_a_failure(listed):
            continue
        statuses = ", ".join(r["status"] for r in listed or [])
        bad.append(f"{spec.cluster_name}: {sent} launch requests ({statuses}), {launched} launched")
    name = "no duplicate launch (requests == node.launched, or each after a FAILED one)"
    return Check(name, len(bad), len(specs), bad[:5])


async def launch_requests_where_uneven(
    chaos: Chaos, events: list[dict[str, Any]], requests: dict[str, int]
) -> dict[str, list[dict[str, Any]]]:
    """The simulator's launch requests (status, created_at, finished_at) of every cluster
    whose request count differs from its node's ``node.launched`` events."""
    per_node: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        per_node.setdefault(e["node_id"], []).append(e)
    found = {}
    for spec in (chaos.spec(i) for i in range(chaos.plan.lifecycles)):
        if requests.get(spec.cluster_name, 0) == launched_events(per_node, spec.node_id):
            continue
        response = await chaos.sim.http.get(
            f"{chaos.sim.url}/api/status",
            params={"cluster_name": spec.cluster_name, "all_status": "true"},
            headers={"Authorization": f"Bearer {SIM_TOKEN}"},
        )
        response.raise_for_status()
        found[spec.cluster_name] = [r for r in response.json() if r["name"] == "sky.launch"]
    if found:
        gone_at = {c["launch_request_id"]: c["gone_at"] for c in await chaos.sim.history()}
        for launches in found.values():
            for request in launches:
                request["cluster_gone_at"] = gone_at.get(request["request_id"])
    return found


def check_live(live: list[str], rows: list[dict[str, Any]], *, final: bool) -> Check:
    status = {row["cluster_name"]: row["status"] for row in rows}
    if final:
        bad = [f"{c}: row {status[c]}" for c in live if c in status and status[c] in FINAL]
        return Check("no live cluster of an ended node", len(bad), len(live), bad[:5])
    bad = [c for c in live if c not in status]
    return Check("no live cluster without a row", len(bad), len(live), bad[:5])


def check_rows_final(rows: list[dict[str, Any]]) -> Check:
    bad = [f"{r['cluster_name']}: {r['status']}" for r in rows if r["status"] not in FINAL]
    return Check("no row without a final state", len(bad), len(rows), bad[:5])


def check_duplicates(events: list[dict[str, Any]]) -> Check:
    keys = Counter((e["node_id"], e["event_type"], attempt_of(e)) for e in events)
    bad = [f"{n[:8]} {t} attempt {a}: {c}x" for (n, t, a), c in keys.items() if c > 1]
    name = "every event recorded once (node, type, attempt)"
    return Check(name, len(bad), len(events), bad[:5])


def check_paths(rows: list[dict[str, Any]], per_node: dict[str, list[dict[str, Any]]]) -> Check:
    bad = []
    for row in rows:
        problem = path_problem(per_node.get(row["node_id"], []), row["status"])
        if problem:
            bad.append(f"{row['cluster_name']}: {problem}")
    return Check("every node's events are a valid path", len(bad), len(rows), bad[:5])


def check_faults(chaos: Chaos) -> Check:
    missed = [f"{a['fault']} (at {a['at_done']} done)" for a in chaos.actions if not a["fired"]]
    return Check("every planned fault fired", len(missed), len(chaos.actions), missed)


def check_stuck(chaos: Chaos) -> Check:
    bad = [f"{n[:8]}: {o}" for n, o in chaos.outcomes.items() if o.startswith("stuck")]
    return Check("no node stuck (driver waits bounded)", len(bad), len(chaos.outcomes), bad[:5])


def check_history(history: list[dict[str, Any]], rows: list[dict[str, Any]]) -> Check:
    """Every cluster that ever existed is gone, or is the cluster of a live, running row."""
    status = {row["cluster_name"]: row["status"] for row in rows}
    bad = [
        f"{c['name']} ({c['cluster_hash'][:8]}): live, row {status.get(c['name'], 'none')}"
        for c in history
        if c["live"] and status.get(c["name"]) != NodeStatus.RUNNING.value
    ]
    name = "every cluster that ever existed is gone, or has a live running row"
    return Check(name, len(bad), len(history), bad[:5])


def check_recovered(
    terminated: dict[str, tuple[str, str, str]],
    latest: dict[str, tuple[str, str]],
    by_id: dict[str, dict[str, Any]],
) -> Check:
    """Every workflow the operator terminated was started again, and that run ended its row."""
    bad = []
    for node_id, (workflow_id, run_id, _) in terminated.items():
        latest_run, status = latest.get(node_id, (run_id, "UNKNOWN"))
        row = by_id.get(node_id, {}).get("status", "no row")
        if latest_run == run_id:
            bad.append(f"{workflow_id}: no run after the terminated one (row {row})")
        elif status == WorkflowExecutionStatus.RUNNING.name or row not in FINAL:
            bad.append(f"{workflow_id}: the new run is {status}, its row {row}")
    name = "every operator-terminated workflow recovered (a new run ended its row)"
    return Check(name, len(bad), len(terminated), bad[:5])


def check_cli(planned: list[NodeSpec], by_id: dict[str, dict[str, Any]]) -> Check:
    bad = [
        f"{spec.cluster_name}: launch_mode {by_id.get(spec.node_id, {}).get('launch_mode')}"
        for spec in planned
        if by_id.get(spec.node_id, {}).get("launch_mode") != LaunchMode.CLI.value
    ]
    name = "every --cli-every node ran in CLI mode (its row's launch_mode)"
    return Check(name, len(bad), len(planned), bad[:5])


def database_step_failures(home: Path) -> dict[str, int]:
    """Failed attempts of database steps in every worker's log, and the highest attempt."""
    failed, highest = 0, 0
    for log_path in sorted(home.glob("worker-*.log")):
        for line in log_path.read_text(errors="replace").splitlines():
            found = FAILED_ATTEMPT.search(line)
            if found and found.group(1) in DB_STEPS:
                failed += 1
                highest = max(highest, int(found.group(2)))
    return {"failed_attempts": failed, "highest_attempt": highest}


def statistics(chaos: Chaos, seen: Observed) -> dict[str, Any]:
    rows, events, counters = seen.rows, seen.events, seen.counters
    relaunches = sum(
        1 for e in events if e["event_type"] == "node.launched" and attempt_of(e) != "0"
    )
    failures = Counter(
        next((t for t in (TRANSIENT, PERMANENT) if t in (r["error"] or "")), "other")
        for r in rows
        if r["status"] == "failed"
    )
    fired = Counter(a["fault"] for a in chaos.actions if a["fired"])
    outages = [a["t_s"] for a in chaos.actions if a["fault"] == "pg_outage" and a["fired"]]
    return {
        "statuses": dict(Counter(r["status"] for r in rows)),
        "workers": chaos.plan.workers,
        "kills_per_worker": dict(sorted(chaos.kills_per_worker.items())),
        "postgres_outages_s": [chaos.plan.outage_s for _ in outages],
        "database_steps": database_step_failures(chaos.home),
        "late_commits": counters["late_commits"],
        "operator_terminates": len(chaos.terminated),
        "terminated_while": dict(Counter(s for _, _, s in chaos.terminated.values())),
        "terminates_recovered": sum(
            1
            for node_id, (_, run_id, _) in chaos.terminated.items()
            if seen.latest_runs.get(node_id, (run_id, ""))[0] != run_id
        ),
        "cli_nodes": Counter(r["launch_mode"] for r in rows)["cli"],
        "clusters_ever": len(seen.history),
        "relaunched_after_a_failed_launch_without_event": sorted(seen.uneven_launches),
        "relaunches": relaunches,
        "failed_by_cause": dict(failures),
        "faults_fired": dict(fired),
        "worker_incarnations": chaos.incarnation,
        "dropped_responses": counters["dropped_responses"],
        "unavailable_503": counters["unavailable_responses"],
        "launch_requests": sum(counters["launch_requests"].values()),
        "failed_requests_all_kinds": counters["requests_by_status"].get("FAILED", 0),
        "driver_db_errors": chaos.watcher.errors,
        "example_failure_reasons": [r["error"] for r in rows if r["status"] == "failed"][:3],
    }


# --- main -----------------------------------------------------------------------------------------
async def run(options: Options, home: Path) -> dict[str, Any]:
    stack = Stack(home)
    begin = time.monotonic()
    try:
        chaos = await open_chaos(options.plan, home, stack)
        faults = await standing_faults(chaos)
        indices = list(range(options.plan.lifecycles))
        random.Random(options.plan.seed).shuffle(indices)
        fault_task = asyncio.create_task(monkey(chaos))
        await bounded(options.plan.concurrency, indices, lambda i: drive(chaos, i))
        await fault_task
        await chaos.sim.set_faults(unavailable_burst=0, drop_response_rate=0.0)
        events = await event_rows(chaos.engine)
        counters = await chaos.sim.counters()
        seen = Observed(
            rows=[r for r in await node_rows(chaos.engine) if r["tenant"] == "chaos"],
            events=events,
            counters=counters,
            history=await chaos.sim.history(),
            latest_runs=await latest_runs(chaos),
            uneven_launches=await launch_requests_where_uneven(
                chaos, events, counters["launch_requests"]
            ),
        )
        checks = check_all(chaos, seen)
        checks.append(Check(**await relay_check(chaos.env["EVENTS_NATS_URL"], seen.events)))
        return {
            "duration_s": round(time.monotonic() - begin, 1),
            "standing_faults": faults,
            "actions": chaos.actions,
            "checks": [{**asdict(c), "ok": c.ok} for c in checks],
            "stats": statistics(chaos, seen),
        }
    finally:
        await stack.close()


def print_report(report: dict[str, Any]) -> None:
    print("\nFaults")
    print(
        table(
            [[a["fault"], a["fired"], a["at_done"], a.get("t_s", "-")] for a in report["actions"]],
            ["fault", "fired", "at done", "t s"],
        )
    )
    print("\nStatistics")
    stats = dict(report["stats"])
    reasons = stats.pop("example_failure_reasons")
    print(table([[k, v] for k, v in stats.items()], ["", "value"]))
    for reason in reasons:
        print(f"  a failure reason: {reason[:160]}")
    print("\nInvariants")
    rows = [[c["name"], c["bad"], c["of"], "OK" if c["ok"] else "BROKEN"] for c in report["checks"]]
    print(table(rows, ["invariant", "bad", "of", "result"]))
    for check in report["checks"]:
        for example in check["examples"] if not check["ok"] else []:
            print(f"  {check['name']}: {example}")
    print(f"\nJSON: {report['json']}  logs: {report['logs']}")


def main(argv: Sequence[str]) -> int:
    options = parse_args(argv)
    quiet = wait_for_quiet(options.quiet_load, options.quiet_timeout_s)
    home = run_dir("chaos", options.logs)
    result = asyncio.run(run(options, home))
    report = {
        "machine": machine_info(),
        "quiet": quiet,
        "command": " ".join([".venv/bin/python", "scripts/chaos.py", *argv]),
        "plan": asdict(options.plan),
        "database": "embedded PostgreSQL (pgserver), data in .cache/chaos/pgdata-*, then removed",
        "logs": str(home),
        "json": str(options.json_path),
        **result,
    }
    report["ok"] = all(c["ok"] for c in report["checks"])
    write_json(options.json_path, report)
    print_report(report)
    print("ALL INVARIANTS HOLD" if report["ok"] else "INVARIANTS BROKEN")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    exit_now(main(sys.argv[1:]))
