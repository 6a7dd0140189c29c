"""One interface over SkyPilot's two front doors, so the lifecycle does not care which a node uses.

A node's launch mode ("api" or "cli") is chosen when it is created and recorded with it; every
later call for that node goes through the same mode, so flipping SKYPILOT_USE_API_SERVER never
strands a node.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Protocol, TypeVar

from controlplane.lifecycle import LaunchMode
from controlplane.skypilot.cli import SkyCLI
from controlplane.skypilot.client import SkyPilotClient
from controlplane.skypilot.errors import RequestFailedError, SkyPilotError
from controlplane.skypilot.models import (
    ClusterRecord,
    ClusterStatus,
    RequestStatus,
    TerminateResult,
)
from controlplane.skypilot.observer import CallObserver, NullObserver
from controlplane.skypilot.task import SkyTask

T = TypeVar("T")

log = logging.getLogger(__name__)


class SkyPilotBackend(Protocol):
    mode: LaunchMode

    async def launch(
        self, cluster_name: str, task: SkyTask, *, idempotency_key: str, workspace: str | None
    ) -> str | None:
        """Start a launch; returns a request id when the mode has one (API), else None."""

    async def wait_launched(
        self, cluster_name: str, request_id: str | None, timeout: float
    ) -> None:
        """Return once the launch finished and the cluster is UP; raise its error otherwise."""

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        """``refresh`` asks SkyPilot to look at the cloud, not its cache (confirming a loss)."""

    async def endpoint(self, cluster_name: str, port: int) -> str | None: ...

    async def cancel_launches(self, cluster_name: str) -> list[str]:
        """Cancel every unfinished launch request for the cluster (explicit ids only)."""

    async def terminate(self, cluster_name: str, timeout: float) -> TerminateResult: ...

    async def list_clusters(self) -> list[ClusterRecord]:
        """Every cluster SkyPilot knows, for every user (the reconciler's inventory)."""


class ApiBackend:
    """The REST API: launch returns at once, the wait long-polls the request."""

    mode = LaunchMode.API

    def __init__(self, client: SkyPilotClient) -> None:
        self.client = client

    async def launch(
        self, cluster_name: str, task: SkyTask, *, idempotency_key: str, workspace: str | None
    ) -> str | None:
        try:
            await self.client.validate(task)
        except SkyPilotError as exc:
            exc.nothing_submitted = True  # no launch was sent: nothing to clean up
            raise
        return await self.client.launch(
            cluster_name, task, idempotency_key=idempotency_key, workspace=workspace
        )

    async def wait_launched(
        self, cluster_name: str, request_id: str | None, timeout: float
    ) -> None:
        if request_id is None:
            raise ValueError("API mode needs the launch request id to wait for")
        await self.client.wait_for_request(request_id, timeout=timeout)

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        return await self.client.cluster_status(
            cluster_name, refresh="FORCE" if refresh else "NONE"
        )

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        return (await self.client.endpoints(cluster_name, port)).get(port)

    async def cancel_launches(self, cluster_name: str) -> list[str]:
        live = [
            r.request_id
            for r in await self.client.find_requests(cluster_name, name="sky.launch")
            if not r.status.finished and r.status is not RequestStatus.UNKNOWN
        ]
        if not live:
            return []
        return await self.client.cancel(live)

    async def terminate(self, cluster_name: str, timeout: float) -> TerminateResult:
        return await self.client.terminate(cluster_name, timeout=timeout)

    async def list_clusters(self) -> list[ClusterRecord]:
        return await self.client.status(None)


class ObservedCLI:
    """The CLI runner with every call timed and classified, as the REST client does itself."""

    def __init__(self, cli: SkyCLI, observer: CallObserver) -> None:
        self._cli = cli
        self._observer = observer

    async def _observe(self, operation: str, call: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            result = await call
        except SkyPilotError as exc:
            self._observer.call_finished(operation, "error", time.perf_counter() - started)
            self._observer.call_failed(operation, exc.error_type or type(exc).__name__)
            raise
        self._observer.call_finished(operation, "success", time.perf_counter() - started)
        return result

    async def launch(self, cluster_name: str, task: SkyTask, *, workspace: str | None) -> None:
        await self._observe("launch", self._cli.launch(cluster_name, task, workspace=workspace))

    async def down(self, cluster_name: str) -> TerminateResult:
        return await self._observe("down", self._cli.down(cluster_name))

    async def status(self, cluster_names: list[str] | None) -> list[ClusterRecord]:
        return await self._observe("status", self._cli.status(cluster_names))

    async def cluster_status(self, cluster_name: str) -> ClusterStatus:
        return await self._observe("status", self._cli.cluster_status(cluster_name))

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        return await self._observe("endpoints", self._cli.endpoint(cluster_name, port))


class CliBackend:
    """The `sky` CLI: launch blocks until provisioned, so the wait only confirms the status."""

    mode = LaunchMode.CLI

    def __init__(
        self, cli: SkyCLI, *, observer: CallObserver | None = None, poll_interval: float = 2.0
    ) -> None:
        self.cli = ObservedCLI(cli, observer or NullObserver())
        self.poll_interval = poll_interval

    async def launch(
        self, cluster_name: str, task: SkyTask, *, idempotency_key: str, workspace: str | None
    ) -> str | None:
        # `sky launch` on an existing cluster reuses it, so a retried launch is harmless.
        await self.cli.launch(cluster_name, task, workspace=workspace)
        return None

    async def wait_launched(
        self, cluster_name: str, request_id: str | None, timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status = await self.cli.cluster_status(cluster_name)
            if status is ClusterStatus.UP:
                return
            if status is ClusterStatus.TERMINATED:
                raise RequestFailedError(
                    f"cluster {cluster_name} vanished before it came up",
                    operation="launch",
                    error_type="ClusterDoesNotExist",
                )
            if time.monotonic() >= deadline:
                raise SkyPilotError(f"cluster {cluster_name} still {status.value} at the deadline")
            await asyncio.sleep(self.poll_interval)

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        # The CLI's status is its server's; a refreshed look is the second call itself.
        return await self.cli.cluster_status(cluster_name)

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        return await self.cli.endpoint(cluster_name, port)

    async def cancel_launches(self, cluster_name: str) -> list[str]:
        return []  # a CLI launch is a process; cancelling its activity kills it

    async def terminate(self, cluster_name: str, timeout: float) -> TerminateResult:
        return await self.cli.down(cluster_name)

    async def list_clusters(self) -> list[ClusterRecord]:
        return await self.cli.status(None)
