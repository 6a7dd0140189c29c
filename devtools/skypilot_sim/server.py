"""Run the simulator in-process: uvicorn on its own event loop in a background thread.

Tests, demos and benchmarks use it as a context manager. The listening socket is bound before
the thread starts, so ``port=0`` works and ``url`` is known at once. The simulator's state
belongs to the server's loop: the helpers here (``counters``, ``set_faults``, ``reset``,
``preempt``) hand their work to that loop and wait for it, so they are safe from any thread.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

import uvicorn

from devtools.skypilot_sim.app import create_app
from devtools.skypilot_sim.config import Faults, SimConfig
from devtools.skypilot_sim.records import ModelFault
from devtools.skypilot_sim.state import SimState

log = logging.getLogger(__name__)

T = TypeVar("T")

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


def _bind(host: str, port: int, *, tcp_nodelay: bool = False) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # asyncio sets TCP_NODELAY only on sockets created with proto IPPROTO_TCP. With proto 0 (the
    # default here), a response written in two parts (headers, body) waits for the client's
    # delayed ACK, so every call takes ~40 ms longer than on a real API server (see
    # SimConfig.tcp_nodelay).
    proto = socket.IPPROTO_TCP if tcp_nodelay else 0
    sock = socket.socket(family, socket.SOCK_STREAM, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class SimulatorServer:
    """A SkyPilot API server simulator listening on ``url`` while started."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.app = create_app(self.config)
        self._sock: socket.socket | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._port = self.config.port

    # --- addresses -----------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return self.config.host

    @property
    def port(self) -> int:
        """The bound port (the real one when the config asked for port 0)."""
        return self._port

    @property
    def url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def state(self) -> SimState:
        """The live state. Not thread-safe: from other threads use the methods below."""
        state = self.app.state.sim
        assert isinstance(state, SimState)
        return state

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Self:
        if self._thread is not None:
            raise RuntimeError("simulator already started")
        self._sock = _bind(self.config.host, self.config.port, tcp_nodelay=self.config.tcp_nodelay)
        self._port = int(self._sock.getsockname()[1])
        uv_config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,  # leave the host program's logging set-up alone
            access_log=False,
            lifespan="off",
            proxy_headers=False,
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._run, name=f"skypilot-sim-{self._port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"simulator failed to start on {self.url}")
            time.sleep(0.005)
        log.info("skypilot simulator listening on %s", self.url)
        return self

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self._server.serve(sockets=[self._sock]))
        finally:
            self._loop = None
            # Let whatever uvicorn left behind (e.g. a hanging dropped response) finish cancelled.
            leftovers = asyncio.all_tasks(loop)
            for task in leftovers:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*leftovers, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def stop(self) -> None:
        """Interrupt running requests (blocked /api/get calls return), then shut uvicorn down."""
        thread, server = self._thread, self._server
        if thread is None or server is None:
            return
        if self._loop is not None and thread.is_alive():
            try:
                self._call(self.state.shutdown)
            except (RuntimeError, TimeoutError):
                log.warning("simulator state did not shut down cleanly", exc_info=True)
        server.should_exit = True
        thread.join(_STOP_TIMEOUT_S)
        if thread.is_alive():
            log.warning("simulator thread did not stop within %.0fs", _STOP_TIMEOUT_S)
        if self._sock is not None:
            self._sock.close()
        self._thread = self._server = self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)

    # --- thread-safe access to the state ------------------------------------------------------
    def _call(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on the server's loop and return its result."""
        loop = self._loop
        if loop is None:
            return fn()  # not running: nothing else touches the state

        async def run() -> T:
            return fn()

        future: Future[T] = asyncio.run_coroutine_threadsafe(run(), loop)
        return future.result(timeout=_STOP_TIMEOUT_S)

    def counters(self) -> dict[str, Any]:
        return self._call(self.state.counters)

    def timeline(self) -> dict[str, dict[str, float]]:
        """Wall-clock moments of each cluster's life (see ``SimState.cluster_timeline``)."""
        return self._call(self.state.cluster_timeline)

    def faults(self) -> Faults:
        return self._call(lambda: self.state.faults.model_copy())

    def set_faults(self, **changes: Any) -> Faults:
        """Partial update of the faults, e.g. ``set_faults(fail_next_launches=2)``."""
        return self._call(lambda: self.state.update_faults(changes).model_copy())

    def set_timings(self, **changes: float) -> dict[str, float]:
        """Partial update of the timings, e.g. ``set_timings(launch_delay_s=10)``."""
        return self._call(lambda: self.state.update_timings(changes))

    def reset(self) -> None:
        self._call(self.state.reset)

    def preempt(self, cluster_name: str) -> bool:
        return self._call(lambda: self.state.preempt(cluster_name))

    def model_fault(self, cluster_name: str, fault: str | None) -> bool:
        """Crash ("crash"), hang ("hang") or recover (None) the cluster's model server."""
        chosen = ModelFault(fault) if fault is not None else None
        return self._call(lambda: self.state.set_model_fault(cluster_name, chosen))

    def exec_jobs(self, cluster_name: str) -> int | None:
        """How many POST /exec jobs ran on the cluster (model restarts in place), or None."""

        def read() -> int | None:
            cluster = self.state.clusters.get(cluster_name)
            return None if cluster is None else cluster.exec_jobs

        return self._call(read)

    def cluster_status(self, cluster_name: str) -> str | None:
        """The cluster's status (INIT/UP/STOPPED), or None when it does not exist."""

        def read() -> str | None:
            cluster = self.state.clusters.get(cluster_name)
            return None if cluster is None else cluster.status.value

        return self._call(read)
