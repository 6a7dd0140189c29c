"""``launch --wait`` and ``deploy --wait``: follow nodes until ready, showing where they stand.

On a terminal the display redraws one line per node in place: status, phase, the progress line
and the time spent so far. Redirected, it writes a JSON line each time a node's status, phase or
progress changes, so a script can follow the same events.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TextIO

from controlplane.lifecycle import NodeStatus
from workflows.models import NodeView

POLL_S = 1.0
ERASE_LINE = "\x1b[2K"


@dataclass(frozen=True)
class Row:
    """One node as shown: who it is and where it stands.

    ``workflow_id`` is the node's identity from the first line: a replica that has not reported
    is labelled ``replica N`` until its cluster is named, and a script following the JSON lines
    keys on the id, not the label.
    """

    workflow_id: str
    label: str
    view: NodeView | None

    def key(self) -> tuple[object, ...]:
        view = self.view
        if view is None:
            return (self.label,)
        return (self.label, view.status, view.phase, view.progress)

    def event(self) -> dict[str, object]:
        view = self.view
        out: dict[str, object] = {
            "event": "progress",
            "workflow_id": self.workflow_id,
            "node": self.label,
        }
        if view is not None:
            out.update(
                view.model_dump(mode="json", include={"status", "phase", "progress", "since"})
            )
        return out


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class ProgressDisplay:
    """Renders rows: redrawn in place on a TTY, JSON lines on change otherwise."""

    def __init__(
        self,
        out: TextIO,
        *,
        tty: bool | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self._now = now
        self._started = time.monotonic()
        self._drawn = 0
        self._last: dict[str, tuple[object, ...]] = {}

    def show(self, rows: list[Row]) -> None:
        if self.tty:
            self._redraw(rows)
            return
        for row in rows:
            if self._last.get(row.workflow_id) != row.key():
                self._last[row.workflow_id] = row.key()
                self.out.write(json.dumps(row.event(), default=str) + "\n")
        self.out.flush()

    def _redraw(self, rows: list[Row]) -> None:
        if self._drawn:
            self.out.write(f"\x1b[{self._drawn}F")  # back to the first line drawn
        elapsed = _duration(time.monotonic() - self._started)
        for row in rows:
            self.out.write(ERASE_LINE + self._line(row, elapsed) + "\n")
        self._drawn = len(rows)
        self.out.flush()

    def _line(self, row: Row, elapsed: str) -> str:
        view = row.view
        if view is None:
            return f"{row.label}  starting…  {elapsed}"
        phase = view.phase.value if view.phase is not None else "-"
        in_phase = ""
        if view.since is not None:
            in_phase = f" ({_duration((self._now() - view.since).total_seconds())} in phase)"
        return (
            f"{row.label}  {view.status.value:<11} {phase:<13} {elapsed}{in_phase}  "
            f"{view.progress or ''}"
        )


def settled(view: NodeView) -> bool:
    """Running, or ended: nothing more to wait for."""
    return view.status is NodeStatus.RUNNING or view.status.final


async def follow(
    snapshot: Callable[[], Awaitable[tuple[list[Row], bool]]],
    display: ProgressDisplay,
    *,
    timeout: timedelta,
    poll_s: float = POLL_S,
) -> list[Row]:
    """Show ``snapshot()`` every ``poll_s`` until it says done; TimeoutError after ``timeout``."""
    async with asyncio.timeout(timeout.total_seconds()):
        while True:
            rows, done = await snapshot()
            display.show(rows)
            if done:
                return rows
            await asyncio.sleep(poll_s)
