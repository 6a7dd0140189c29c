"""Run ``worker.py`` as a real process, for tests that kill, signal or misconfigure it.

The process gets its own session (``start_new_session=True``), so signals reach only it and
whatever it started. Its stdout and stderr go to files under the given directory (log lines are
on stderr); ``wait_for_log`` polls them. Leaving the ``async with`` block SIGKILLs a worker that
is still running, so a failing test never leaks one. Its environment comes from
``devtools.devstack.worker_process_env`` (the one recipe the demo and the benchmark use too).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Self

from devtools.devstack import POLLING_LINE, REPO

WORKER_SCRIPT = REPO / "worker.py"


class WorkerExited(RuntimeError):
    """The worker ended while a test was waiting for it to do something."""


class WorkerProcess:
    """One ``python worker.py`` child. Use ``async with`` (starts it; kills it if left running)."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, name: str = "worker") -> None:
        self.env = dict(env)
        self.name = name
        self.stdout_path = log_dir / f"{name}.stdout.log"
        self.stderr_path = log_dir / f"{name}.stderr.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._files: list[IO[bytes]] = []

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Self:
        if self._process is not None:
            raise RuntimeError(f"{self.name} already started")
        self.stdout_path.parent.mkdir(parents=True, exist_ok=True)
        stdout = self.stdout_path.open("wb")
        stderr = self.stderr_path.open("wb")
        self._files = [stdout, stderr]
        self._process = subprocess.Popen(
            [sys.executable, str(WORKER_SCRIPT)],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        return self

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        if self.returncode is None:
            await self.kill()
        for file in self._files:
            file.close()

    @property
    def process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeError(f"{self.name} was not started")
        return self._process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self._process is None else self._process.poll()

    # --- output ----------------------------------------------------------------------------------
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""

    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace") if self.stdout_path.exists() else ""

    def output(self) -> str:
        """Both streams, labelled: for assertion messages."""
        return f"--- {self.name} stdout ---\n{self.stdout()}\n--- {self.name} stderr ---\n" + (
            self.stderr()
        )

    # --- waiting ---------------------------------------------------------------------------------
    async def wait_for_log(self, text: str, *, timeout: float = 30.0) -> None:
        """Until ``text`` appears in stdout or stderr; WorkerExited if the process ends first."""
        deadline = time.monotonic() + timeout
        while True:
            if text in self.stderr() or text in self.stdout():
                return
            code = self.returncode
            if code is not None:
                raise WorkerExited(
                    f"{self.name} exited with {code} before logging {text!r}\n{self.output()}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{self.name} did not log {text!r} in {timeout}s\n{self.output()}"
                )
            await asyncio.sleep(0.1)

    async def wait_polling(self, *, timeout: float = 30.0) -> None:
        await self.wait_for_log(POLLING_LINE, timeout=timeout)

    async def wait(self, *, timeout: float) -> int:
        """The exit code once the process ends; TimeoutError if it is still running."""
        deadline = time.monotonic() + timeout
        while True:
            code = self.returncode
            if code is not None:
                return code
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name} still running after {timeout}s\n{self.output()}")
            await asyncio.sleep(0.05)

    # --- signals ---------------------------------------------------------------------------------
    def _signal_group(self, sig: signal.Signals) -> None:
        """Signal the worker's own process group (its session); nothing else is touched."""
        with contextlib.suppress(ProcessLookupError):  # already gone
            os.killpg(self.pid, sig)

    async def terminate(self, *, timeout: float = 45.0) -> int:
        """SIGTERM the worker and return its exit code (TimeoutError if it does not end)."""
        if self.returncode is None:
            self._signal_group(signal.SIGTERM)
        return await self.wait(timeout=timeout)

    async def kill(self) -> int:
        """SIGKILL the worker (and its process group) and return its exit code."""
        if self.returncode is None:
            self._signal_group(signal.SIGKILL)
        return await self.wait(timeout=10.0)


__all__ = ["POLLING_LINE", "WorkerExited", "WorkerProcess"]
