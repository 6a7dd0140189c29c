"""Tell a node's workflow where its launch stands: one signal per phase, never more.

Heartbeat details are not visible to workflow code, so the activity that reads the launch's
output signals its own workflow (``launch_progress``) when a SkyPilot line moves the launch to
a new phase. The Temporal actions this adds per launch are bounded by the number of phases, not
by the launch's length. Progress is best effort: a signal that cannot be sent is logged and the
activity carries on.

The activity's first second is told as one signal, of the phase current at its end, and not at
all if the activity is over by then: its result says more than the phases it went through. A
phase nobody could have watched is not worth a signal and a workflow task (a launch that
finds its cluster up, or a fast simulator, went through four of each in a fraction of a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from temporalio import activity
from temporalio.client import WorkflowHandle
from temporalio.service import RPCError

from controlplane.launch_progress import NodePhase, PhaseTracker, Progress
from workflows.models import NodeProgressSignal
from workflows.node import NodeWorkflow

log = logging.getLogger(__name__)

_FLUSH_S = 5.0
QUIET_START_S = 1.0  # the activity's first second is told as one signal, or none (above)


class ProgressReporter:
    """Feed it log lines (``line``) or known steps (``advance``); it signals phase changes."""

    def __init__(
        self, start: NodePhase = NodePhase.SUBMITTING, *, quiet_start_s: float = QUIET_START_S
    ) -> None:
        self.tracker = PhaseTracker(start)
        self.quiet_start_s = quiet_start_s
        self._queue: asyncio.Queue[Progress] = asyncio.Queue()
        self._quiet = True
        self.sent: list[Progress] = []

    def line(self, raw: str) -> None:
        progress = self.tracker.feed(raw)
        if progress is not None:
            self._queue.put_nowait(progress)

    def advance(self, phase: NodePhase, text: str) -> None:
        progress = self.tracker.advance(phase, text)
        if progress is not None:
            self._queue.put_nowait(progress)

    async def _send_all(self) -> None:
        info = activity.info()
        try:
            client = activity.client()
        except RuntimeError:  # no client (an activity environment without one)
            client = None
        if info.workflow_id is None or client is None:  # nobody to tell: drop what comes
            while True:
                await self._queue.get()
                self._queue.task_done()
        handle = client.get_workflow_handle(info.workflow_id, run_id=info.workflow_run_id)
        await asyncio.sleep(self.quiet_start_s)
        self._quiet = False
        newest: Progress | None = None
        while not self._queue.empty():  # what the quiet start went through: the newest is told
            if newest is not None:
                self._queue.task_done()
            newest = self._queue.get_nowait()
        if newest is not None:
            await self._send(handle, newest)
        while True:
            await self._send(handle, await self._queue.get())

    async def _send(self, handle: WorkflowHandle[Any, Any], progress: Progress) -> None:
        try:
            await handle.signal(
                NodeWorkflow.launch_progress,
                NodeProgressSignal(phase=progress.phase, progress=progress.line),
            )
            self.sent.append(progress)
        except (RPCError, RuntimeError) as exc:
            log.warning("could not report %s to %s: %s", progress.phase, handle.id, exc)
        finally:
            self._queue.task_done()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[ProgressReporter]:
        """Send in the background for the block; on the way out, send what is queued (bounded),
        unless the block ended within its quiet start."""
        sender = asyncio.create_task(self._send_all())
        try:
            yield self
            if not self._quiet:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._queue.join(), _FLUSH_S)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
