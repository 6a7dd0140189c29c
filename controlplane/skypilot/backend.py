"""One interface over SkyPilot's two front doors, so the lifecycle does not care which a node uses.

A node's launch mode ("api" or "cli") is chosen when it is created and recorded with it; every
later call for that node goes through the same mode, so flipping SKYPILOT_USE_API_SERVER never
strands a node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

from controlplane.lifecycle import LaunchMode
from controlplane.skypilot.cli import SkyCLI
from controlplane.skypilot.client import SkyPilotClient, _marker
from controlplane.skypilot.errors import RequestFailedError, SkyPilotError, WaitTimeoutError
from controlplane.skypilot.models import (
    ClusterRecord,
    ClusterStatus,
    RequestRecord,
    RequestStatus,
    TerminateResult,
)
from controlplane.skypilot.observer import CallObserver, NullObserver, first_call_of_a_retry
from controlplane.skypilot.task import SkyTask

T = TypeVar("T")
# Receives the launch's log lines as they come (progress); never raises into the caller.
LineSink = Callable[[str], None]
STREAM_RECONNECTS = 2  # a dropped log stream is picked up again at most this often

log = logging.getLogger(__name__)


def location_of(records: list[ClusterRecord], cluster_name: str) -> str | None:
    record = next((r for r in records if r.name == cluster_name), None)
    if record is None or not record.cloud:
        return None
    cloud = record.cloud.lower()
    return f"{cloud}/{record.region}" if record.region else cloud


def live_request_ids(requests: Iterable[RequestRecord]) -> list[str]:
    """The ids of the requests still going (a finished or unknown one is left alone)."""
    return [
        r.request_id
        for r in requests
        if not r.status.finished and r.status is not RequestStatus.UNKNOWN
    ]


class SkyPilotBackend(Protocol):
    mode: LaunchMode

    async def launch(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        idempotency_key: str,
        workspace: str | None,
        on_line: LineSink | None = None,
        earlier_may_have_sent: bool = False,
    ) -> str | None:
        """Start a launch; returns a request id when the mode has one (API), else None.

        ``on_line`` gets the launch's output lines where the launch itself produces them (CLI).
        ``earlier_may_have_sent``: an earlier attempt may have sent this launch, so a marker not
        found yet may still be committed late; look until the commit horizon before sending.
        """

    async def wait_launched(
        self,
        cluster_name: str,
        request_id: str | None,
        timeout: float,
        *,
        on_line: LineSink | None = None,
        log_after_s: float = 0.0,
    ) -> None:
        """Return once the launch finished and the cluster is UP; raise its error otherwise.

        ``on_line`` gets the launch's log lines while it is waited for (API: /api/stream,
        opened only if the launch is still going after ``log_after_s``: the log is read from
        its start, so nothing is missed, and a launch over by then costs no stream).
        """

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        """``refresh`` asks SkyPilot to look at the cloud, not its cache (confirming a loss)."""

    async def endpoint(self, cluster_name: str, port: int) -> str | None: ...

    async def location(self, cluster_name: str) -> str | None:
        """``cloud/region`` of the cluster's record: where a launch with candidates landed."""

    async def restart_model(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        idempotency_key: str,
        workspace: str | None,
        timeout: float,
    ) -> None:
        """Run the node's task again as a new job on its existing cluster (``exec``): the model
        server restarts in place, on the GPU the cluster already holds."""

    async def cancel_launches(self, cluster_name: str) -> list[str]:
        """Cancel every unfinished launch request for the cluster (explicit ids only)."""

    async def terminate(self, cluster_name: str, timeout: float) -> TerminateResult: ...

    async def list_clusters(self) -> list[ClusterRecord]:
        """Every cluster SkyPilot knows, for every user (the reconciler's inventory)."""


class _Inventory:
    """What both front doors do alike, over each one's own status, request list and cancel."""

    async def _status(self, cluster_names: list[str] | None) -> list[ClusterRecord]:
        raise NotImplementedError

    async def _launch_requests(self, cluster_name: str) -> list[RequestRecord]:
        raise NotImplementedError

    async def _cancel(self, request_ids: list[str], cluster_name: str) -> list[str]:
        raise NotImplementedError

    async def location(self, cluster_name: str) -> str | None:
        return location_of(await self._status([cluster_name]), cluster_name)

    async def cancel_launches(self, cluster_name: str) -> list[str]:
        live = live_request_ids(await self._launch_requests(cluster_name))
        if not live:
            return []
        return await self._cancel(live, cluster_name)

    async def list_clusters(self) -> list[ClusterRecord]:
        return await self._status(None)


class ApiBackend(_Inventory):
    """The REST API: launch returns at once, the wait long-polls the request."""

    mode = LaunchMode.API

    def __init__(self, client: SkyPilotClient) -> None:
        self.client = client

    async def launch(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        idempotency_key: str,
        workspace: str | None,
        on_line: LineSink | None = None,
        earlier_may_have_sent: bool = False,
    ) -> str | None:
        try:
            await self.client.validate(task)
        except SkyPilotError as exc:
            exc.nothing_submitted = True  # no launch was sent: nothing to clean up
            raise
        return await self.client.launch(
            cluster_name,
            task,
            idempotency_key=idempotency_key,
            workspace=workspace,
            earlier_may_have_sent=earlier_may_have_sent,
        )

    async def wait_launched(
        self,
        cluster_name: str,
        request_id: str | None,
        timeout: float,
        *,
        on_line: LineSink | None = None,
        log_after_s: float = 0.0,
    ) -> None:
        if request_id is None:
            raise ValueError("API mode needs the launch request id to wait for")
        if on_line is None:
            await self.client.wait_for_request(request_id, timeout=timeout)
            return
        waiting = asyncio.ensure_future(self.client.wait_for_request(request_id, timeout=timeout))
        reader: asyncio.Task[None] | None = None
        try:
            done = (await asyncio.wait({waiting}, timeout=log_after_s))[0] if log_after_s else ()
            if not done:
                reader = asyncio.create_task(self._follow_log(request_id, on_line))
            await waiting
            if reader is not None:
                # The server closes the stream when the request ends: let the last lines in.
                await asyncio.wait({reader}, timeout=1.0)
        finally:
            for task in (waiting, reader):
                if task is not None and not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _follow_log(self, request_id: str, on_line: LineSink) -> None:
        """Read the launch's log (one stream; after a drop, resume at the end: ``tail=0``)."""
        tail: int | None = None
        for attempt in range(STREAM_RECONNECTS + 1):
            try:
                async for line in self.client.stream_log(request_id, tail=tail):
                    on_line(line)
                return
            except SkyPilotError as exc:
                log.info("log stream of %s interrupted (%s)", request_id, exc)
                if attempt < STREAM_RECONNECTS:
                    await asyncio.sleep(1.0)
                tail = 0

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        return await self.client.cluster_status(
            cluster_name, refresh="FORCE" if refresh else "NONE"
        )

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        return (await self.client.endpoints(cluster_name, port)).get(port)

    async def restart_model(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        idempotency_key: str,
        workspace: str | None,
        timeout: float,
    ) -> None:
        request_id = await self.client.exec(
            cluster_name, task, idempotency_key=idempotency_key, workspace=workspace
        )
        await self.client.wait_for_request(request_id, timeout=timeout)

    async def terminate(self, cluster_name: str, timeout: float) -> TerminateResult:
        return await self.client.terminate(cluster_name, timeout=timeout)

    async def _status(self, cluster_names: list[str] | None) -> list[ClusterRecord]:
        return await self.client.status(cluster_names)

    async def _launch_requests(self, cluster_name: str) -> list[RequestRecord]:
        return await self.client.find_requests(cluster_name, name="sky.launch")

    async def _cancel(self, request_ids: list[str], cluster_name: str) -> list[str]:
        return await self.client.cancel(request_ids)


class ObservedCLI:
    """The CLI runner with every call timed and classified, as the REST client does itself."""

    def __init__(self, cli: SkyCLI, observer: CallObserver) -> None:
        self._cli = cli
        self._observer = observer

    async def _observe(self, operation: str, call: Awaitable[T]) -> T:
        if first_call_of_a_retry():
            self._observer.call_retried(operation)
        started = time.perf_counter()
        try:
            result = await call
        except SkyPilotError as exc:
            self._observer.call_finished(operation, "error", time.perf_counter() - started)
            self._observer.call_failed(operation, exc.error_type or type(exc).__name__)
            raise
        self._observer.call_finished(operation, "success", time.perf_counter() - started)
        return result

    async def launch(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        workspace: str | None,
        marker: str,
        on_line: LineSink | None = None,
    ) -> None:
        await self._observe(
            "launch",
            self._cli.launch(
                cluster_name, task, workspace=workspace, marker=marker, on_line=on_line
            ),
        )

    async def launch_requests(self, cluster_name: str) -> list[RequestRecord]:
        return await self._observe("request_status", self._cli.launch_requests(cluster_name))

    async def follow(
        self, request_id: str, cluster_name: str, *, on_line: LineSink | None = None
    ) -> None:
        await self._observe(
            "wait", self._cli.follow(request_id, subject=cluster_name, on_line=on_line)
        )

    async def cancel(self, request_ids: list[str], cluster_name: str) -> list[str]:
        return await self._observe("cancel", self._cli.cancel(request_ids, subject=cluster_name))

    async def exec(self, cluster_name: str, task: SkyTask, *, workspace: str | None) -> None:
        await self._observe("exec", self._cli.exec(cluster_name, task, workspace=workspace))

    async def down(self, cluster_name: str) -> TerminateResult:
        return await self._observe("down", self._cli.down(cluster_name))

    async def status(self, cluster_names: list[str] | None) -> list[ClusterRecord]:
        return await self._observe("status", self._cli.status(cluster_names))

    async def cluster_status(self, cluster_name: str) -> ClusterStatus:
        return await self._observe("status", self._cli.cluster_status(cluster_name))

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        return await self._observe("endpoints", self._cli.endpoint(cluster_name, port))


class CliBackend(_Inventory):
    """The `sky` CLI: launch blocks until provisioned, so the wait only confirms the status.

    The CLI is itself a client of an API server, where a launch goes on when the `sky` process
    or the worker dies. So, as in API mode, a launch first looks for one already sent for the
    cluster (``sky api status``) and reattaches to it (``sky api logs``) instead of sending a
    second; ``cancel_launches`` cancels the live ones by id (``sky api cancel``).
    """

    mode = LaunchMode.CLI

    def __init__(
        self,
        cli: SkyCLI,
        *,
        observer: CallObserver | None = None,
        poll_interval: float = 2.0,
        commit_horizon: float = 30.0,
    ) -> None:
        self.cli = ObservedCLI(cli, observer or NullObserver())
        self.poll_interval = poll_interval
        # SKYPILOT_SUBMIT_COMMIT_HORIZON: how long a launch an earlier attempt's `sky` sent may
        # take to appear in `sky api status` (a busy server commits late).
        self.commit_horizon = commit_horizon

    async def launch(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        idempotency_key: str,
        workspace: str | None,
        on_line: LineSink | None = None,
        earlier_may_have_sent: bool = False,
    ) -> str | None:
        earlier = await self._earlier_launch(cluster_name)
        if earlier is None and earlier_may_have_sent:
            earlier = await self._await_commit(cluster_name)
        if earlier is not None:
            log.info("reattaching to launch request %s of %s", earlier.request_id, cluster_name)
            if not earlier.status.finished:
                await self.cli.follow(earlier.request_id, cluster_name, on_line=on_line)
            return None
        marker = _marker("launch", cluster_name, idempotency_key)
        await self.cli.launch(
            cluster_name, task, workspace=workspace, marker=marker, on_line=on_line
        )
        return None

    async def _await_commit(self, cluster_name: str) -> RequestRecord | None:
        """An earlier attempt may have sent a launch the server commits late: look again until
        the commit horizon has passed before a second one is sent (as API mode does)."""
        deadline = time.monotonic() + self.commit_horizon
        while time.monotonic() < deadline:
            await asyncio.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))
            earlier = await self._earlier_launch(cluster_name)
            if earlier is not None:
                return earlier
        return None

    async def _earlier_launch(self, cluster_name: str) -> RequestRecord | None:
        """The launch already sent for this cluster that a retry must reattach to, if any.

        The cluster name is the node's own, so its newest launch request is this node's. One
        that failed or was cancelled is not reattached to (the caller relaunches on purpose,
        as in API mode); a succeeded one only while the cluster it made still exists.
        """
        requests = await self.cli.launch_requests(cluster_name)
        if not requests:
            return None
        newest = requests[0]
        if newest.status in (RequestStatus.FAILED, RequestStatus.CANCELLED, RequestStatus.UNKNOWN):
            return None
        gone = newest.status is RequestStatus.SUCCEEDED and (
            await self.cli.cluster_status(cluster_name) is ClusterStatus.TERMINATED
        )
        return None if gone else newest

    async def wait_launched(
        self,
        cluster_name: str,
        request_id: str | None,
        timeout: float,
        *,
        on_line: LineSink | None = None,
        log_after_s: float = 0.0,
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
            if time.monotonic() >= deadline:  # the same error as API mode's wait
                raise WaitTimeoutError(
                    f"cluster {cluster_name} still {status.value} after {timeout:.0f}s",
                    operation="wait",
                )
            await asyncio.sleep(self.poll_interval)

    async def cluster_status(self, cluster_name: str, *, refresh: bool = False) -> ClusterStatus:
        # The CLI's status is its server's; a refreshed look is the second call itself.
        return await self.cli.cluster_status(cluster_name)

    async def endpoint(self, cluster_name: str, port: int) -> str | None:
        return await self.cli.endpoint(cluster_name, port)

    async def restart_model(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        idempotency_key: str,
        workspace: str | None,
        timeout: float,
    ) -> None:
        # `sky exec -d` returns once the job is submitted; no request id to reattach to.
        await self.cli.exec(cluster_name, task, workspace=workspace)

    async def terminate(self, cluster_name: str, timeout: float) -> TerminateResult:
        return await self.cli.down(cluster_name)

    async def _status(self, cluster_names: list[str] | None) -> list[ClusterRecord]:
        return await self.cli.status(cluster_names)

    async def _launch_requests(self, cluster_name: str) -> list[RequestRecord]:
        return await self.cli.launch_requests(cluster_name)

    async def _cancel(self, request_ids: list[str], cluster_name: str) -> list[str]:
        return await self.cli.cancel(request_ids, cluster_name)
