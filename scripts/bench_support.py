"""Shared helpers of scripts/benchmark.py and scripts/chaos.py: the run, the probes, the maths.

The stack they start is built by devtools/devstack.py (the one builder the demo and the
integration tests use too): the Temporal dev server (in-memory), the SkyPilot simulator as a
process, PostgreSQL (a fresh database on a server, or the embedded one) and ``python worker.py``,
each a process of its own bound to 127.0.0.1, with its log under the run's directory. ``Stack``
stops all of them again, in reverse order.

This module also holds the benchmark's *baseline*: a bare workflow of N sequential no-op
activities and its worker (``python scripts/bench_support.py baseline-worker``), with the same
worker settings as ``worker.py`` (sandbox, autoscaling pollers, graceful shutdown). Everything
heavy is imported through ``imports_passed_through`` so the workflow sandbox, which re-runs this
module for every baseline workflow, only re-defines what is written here.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from temporalio import activity, workflow

if not workflow.unsafe.in_sandbox():
    REPO = Path(__file__).resolve().parents[1]
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # worker.py lives at the repository's root

with workflow.unsafe.imports_passed_through():
    from sqlalchemy import func, select, text
    from sqlalchemy.ext.asyncio import AsyncEngine
    from temporalio.client import Client
    from temporalio.contrib.pydantic import pydantic_data_converter
    from temporalio.worker import PollerBehaviorAutoscaling, Worker

    from controlplane.db.engine import create_engine
    from controlplane.db.errors import DATABASE_ERRORS
    from controlplane.db.schema import node_events, nodes
    from controlplane.lifecycle import NodeStatus
    from controlplane.spec import NodeSpec
    from devtools.devstack import (
        BENCH_TIMINGS,
        INHERITED_ENV,
        POLLING_LINE,
        Process,
        Timings,
        log_size,
        new_encryption_key,
        spawn,
        temporal_binary,
        wait_for_text,
        worker_process_env,
        worker_settings_env,
    )

log = logging.getLogger("bench")

T = TypeVar("T")
SIM_TOKEN = "sky_benchmark-service-account-token"
FINAL = frozenset(status.value for status in NodeStatus if status.final)
RUNNING_OR_FINAL = FINAL | {NodeStatus.RUNNING.value}
BASELINE_WORKFLOW = "BenchBaselineWorkflow"


# --- ending a script ------------------------------------------------------------------------------
def exit_now(code: int) -> NoReturn:
    """Flush, then leave without interpreter finalisation (sdk-python #300 corrupts exit codes)."""
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def run_dir(kind: str, base: Path | None = None) -> Path:
    """A fresh directory for one run's logs: <base or .cache/<kind>>/<timestamp>-<id>."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = (base or REPO / ".cache" / kind) / f"{stamp}-{uuid.uuid4().hex[:6]}"
    path.mkdir(parents=True)
    return path


# --- the machine ----------------------------------------------------------------------------------
def load_1min() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def wait_for_quiet(threshold: float, timeout_s: float, poll_s: float = 15.0) -> dict[str, Any]:
    """Wait (bounded) until the 1-minute load average is below ``threshold``."""
    started = time.monotonic()
    load = load_1min()
    while threshold > 0 and load >= threshold and time.monotonic() - started < timeout_s:
        print(f"waiting for a quiet machine: load {load:.2f} >= {threshold}", flush=True)
        time.sleep(min(poll_s, max(timeout_s - (time.monotonic() - started), 0.1)))
        load = load_1min()
    return {
        "threshold": threshold,
        "load_1min_at_start": load,
        "quiet": threshold <= 0 or load < threshold,
        "waited_s": round(time.monotonic() - started, 1),
    }


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _mem_total_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return round(int(line.split()[1]) / 1024 / 1024, 1)
    return 0.0


def machine_info() -> dict[str, Any]:
    version = subprocess.run(
        [temporal_binary(), "--version"], capture_output=True, text=True, check=False, timeout=30
    ).stdout.strip()
    return {
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "nproc": os.cpu_count(),
        "mem_total_gib": _mem_total_gib(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "temporal_cli": version,
        "loadavg": Path("/proc/loadavg").read_text().split()[:3],
    }


# --- processes ------------------------------------------------------------------------------------
def proc_status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a live process, in KiB ({} when it is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    found: dict[str, int] = {}
    for line in lines:
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(rest.split()[0])
    return found


def rss_mib(pid: int, key: str = "VmRSS") -> float:
    return round(proc_status_kib(pid).get(key, 0) / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time the process has used so far."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU-seconds of the whole machine so far, all cores (/proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle + iowait
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(fields) - idle) / tick, sum(fields) / tick


def kill_hard(process: Process) -> int | None:
    """SIGKILL the process's group (its own session) and reap it."""
    if process.proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.proc.pid, signal.SIGKILL)
    return process.proc.wait(timeout=30)


async def database_size_mib(engine: AsyncEngine) -> float:
    async with engine.connect() as connection:
        size = await connection.scalar(text("SELECT pg_database_size(current_database())"))
    return round(int(size or 0) / 1024 / 1024, 2)


# --- the worker -----------------------------------------------------------------------------------
def bench_worker_env(
    temporal_address: str,
    database_url: str,
    simulator_url: str,
    task_queue: str,
    *,
    timings: Timings = BENCH_TIMINGS,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """``worker.py``'s environment for a run (devtools.devstack builds it): the run's timings, a
    fresh encryption key, and no admission cap but in the admission phase (its own worker sets
    the budget)."""
    settings_env = worker_settings_env(
        temporal_address=temporal_address,
        database_url=database_url,
        simulator_url=simulator_url,
        token=SIM_TOKEN,
        encryption_key=new_encryption_key(),
        timings=timings,
        task_queue=task_queue,
        extra={"SKYPILOT_MAX_INFLIGHT_LAUNCHES": "10000", **(extra or {})},
    )
    return worker_process_env(settings_env)


# --- node specs and statuses ----------------------------------------------------------------------
def node_spec(run: str, index: int, tenant: str = "bench") -> NodeSpec:
    """The ``index``-th node of a run: unique identity, so a unique node id and cluster."""
    return NodeSpec(
        tenant=tenant,
        model="NousResearch/Meta-Llama-3-8B-Instruct",
        provider="aws",
        region="us-east-1",
        gpu_type="A100",
        gpu_count=1,
        deployment=f"{run}-{index // 1000}",
        replica=index % 1000,
    )


class StatusWatcher:
    """Waits for nodes' rows to reach a status, with ONE query per tick for all waiters.

    Polling the ``nodes`` table keeps the watching off Temporal and the worker (a status query
    per node would be served by the worker being measured). A database error (a restart) only
    skips a tick.
    """

    def __init__(self, engine: AsyncEngine, interval_s: float = 0.025) -> None:
        # One statement per tick, no transaction around it (BEGIN and ROLLBACK were two of
        # its three round trips), on a connection of its own without a pre-ping (three more):
        # a database error only skips the tick, and the driver's CPU counts in the benchmark.
        self.engine = create_engine(
            engine.url.render_as_string(hide_password=False),
            pool_size=1,
            max_overflow=0,
            pre_ping=False,
        ).execution_options(isolation_level="AUTOCOMMIT")
        self.interval_s = interval_s
        self._waiters: dict[str, list[tuple[frozenset[str], asyncio.Future[str]]]] = {}
        self._task: asyncio.Task[None] | None = None
        self.errors = 0

    async def __aenter__(self) -> StatusWatcher:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.engine.dispose()

    async def wait(self, node_id: str, wanted: Iterable[str], timeout_s: float) -> str:
        """The node's status once it is one of ``wanted`` (TimeoutError after ``timeout_s``)."""
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        entry = (frozenset(wanted), future)
        self._waiters.setdefault(node_id, []).append(entry)
        try:
            return await asyncio.wait_for(future, timeout_s)
        finally:
            entries = self._waiters.get(node_id, [])
            if entry in entries:
                entries.remove(entry)
            if not entries:
                self._waiters.pop(node_id, None)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            if not self._waiters:
                continue
            try:
                statuses = await self._statuses(list(self._waiters))
            except DATABASE_ERRORS:
                self.errors += 1
                await asyncio.sleep(0.5)
                continue
            self._resolve(statuses)

    async def _statuses(self, node_ids: list[str]) -> dict[str, str]:
        statement = select(nodes.c.node_id, nodes.c.status).where(nodes.c.node_id.in_(node_ids))
        async with self.engine.connect() as connection:
            rows = (await connection.execute(statement)).all()
        return {str(node_id): str(status) for node_id, status in rows}

    def _resolve(self, statuses: dict[str, str]) -> None:
        for node_id, status in statuses.items():
            for wanted, future in self._waiters.get(node_id, []):
                if status in wanted and not future.done():
                    future.set_result(status)


async def count_by_status(
    engine: AsyncEngine, node_ids: Sequence[str] | None = None
) -> dict[str, int]:
    """Rows per status, of all nodes or of ``node_ids`` only."""
    statement = select(nodes.c.status, func.count()).group_by(nodes.c.status)
    if node_ids is not None:
        statement = statement.where(nodes.c.node_id.in_(list(node_ids)))
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).all()
    return {str(status): int(count) for status, count in rows}


async def node_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    async with engine.connect() as connection:
        rows = (await connection.execute(select(nodes))).mappings().all()
    return [dict(row) for row in rows]


async def event_rows(engine: AsyncEngine) -> list[dict[str, Any]]:
    statement = select(node_events).order_by(node_events.c.id)
    async with engine.connect() as connection:
        rows = (await connection.execute(statement)).mappings().all()
    return [dict(row) for row in rows]


def open_engine(url: str) -> AsyncEngine:
    return create_engine(url, pool_size=2, max_overflow=4)


# --- concurrency and statistics -------------------------------------------------------------------
async def bounded(concurrency: int, items: Sequence[T], run: Callable[[T], Awaitable[Any]]) -> None:
    """Run ``run(item)`` for every item, at most ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(item: T) -> None:
        async with gate:
            await run(item)

    await asyncio.gather(*(one(item) for item in items))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear between closest ranks; nan for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """n, p50, p90, p99, max and mean of durations given in seconds, in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 1),
        "p90_ms": round(percentile(ms, 90), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else math.nan,
        "mean_ms": round(sum(ms) / len(ms), 1) if ms else math.nan,
    }


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    """A plain fixed-width text table."""
    cells = [[str(c) for c in header], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


# --- the stack ------------------------------------------------------------------------------------
CLEANUP_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, OSError, *DATABASE_ERRORS)


@dataclass
class Stack:
    """Processes and clean-ups of one run, undone in reverse order by ``close``."""

    home: Path
    processes: list[Process] = field(default_factory=list)
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def add(self, process: Process) -> Process:
        self.processes.append(process)
        return process

    async def close(self) -> None:
        for process in reversed(self.processes):
            await asyncio.to_thread(process.stop, 30.0)
        self.processes.clear()
        for cleanup in reversed(self.cleanups):
            try:
                await cleanup()
            except CLEANUP_ERRORS as exc:
                print(f"clean-up step failed: {exc}", file=sys.stderr)
        self.cleanups.clear()


# --- the baseline: a bare workflow of N sequential no-op activities -------------------------------
@activity.defn(name="bench_noop")
async def bench_noop() -> None:
    """Does nothing: the baseline measures Temporal's and the worker's own cost."""


@workflow.defn(name=BASELINE_WORKFLOW)
class BaselineWorkflow:
    @workflow.run
    async def run(self, activities: int) -> int:
        for _ in range(activities):
            await workflow.execute_activity(
                bench_noop, start_to_close_timeout=timedelta(seconds=30)
            )
        return activities


async def serve_baseline(address: str, task_queue: str) -> int:
    """The baseline worker: worker.py's settings (default sandbox, autoscaling pollers, the
    same graceful shutdown, a Prometheus runtime like worker.py's), until SIGTERM."""
    from worker import GRACEFUL_SHUTDOWN, telemetry_runtime

    runtime, _ = telemetry_runtime()
    client = await Client.connect(address, data_converter=pydantic_data_converter, runtime=runtime)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=[BaselineWorkflow],
        activities=[bench_noop],
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
    )
    async with worker:
        print(f"worker polling task queue {task_queue}", flush=True)
        await stop.wait()
    return 0


def start_baseline_worker(home: Path, address: str, task_queue: str) -> Process:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "baseline-worker",
        address,
        task_queue,
    ]
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    log_path = home / "baseline-worker.log"
    offset = log_size(log_path)
    process = spawn("baseline-worker", argv, log_path, env)
    wait_for_text(log_path, POLLING_LINE, process.proc, 120, offset)
    return process


def baseline_worker_main(argv: list[str]) -> NoReturn:
    if len(argv) != 3 or argv[0] != "baseline-worker":
        print("usage: bench_support.py baseline-worker ADDRESS TASK_QUEUE", file=sys.stderr)
        exit_now(2)
    exit_now(asyncio.run(serve_baseline(argv[1], argv[2])))


if __name__ == "__main__":
    # Import this file again under its own name, so the workflow's module is ``bench_support``
    # (the sandbox cannot re-import ``__main__``).
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_support

    bench_support.baseline_worker_main(sys.argv[1:])
