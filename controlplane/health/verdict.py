"""From one probe's outcome and the count so far, to the node's next count and what to tell it.

Pure, so the rules are tested without a network: failures count only after the startup grace,
``threshold`` failures in a row make a running node unhealthy, and one success makes an
unhealthy node healthy again. The node's recorded status is the verdict it was last given, so a
node is signalled only when the verdict differs from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controlplane.lifecycle import NodeStatus


@dataclass(frozen=True)
class Judgement:
    consecutive_failures: int
    tell: bool | None  # None: nothing changed; True: now healthy; False: now unhealthy


def judge(
    *,
    ok: bool,
    status: NodeStatus,
    failures_so_far: int,
    threshold: int,
    ready_at: datetime | None,
    now: datetime,
    startup_grace: timedelta,
) -> Judgement:
    if ok:
        return Judgement(0, True if status is NodeStatus.UNHEALTHY else None)
    in_grace = ready_at is not None and now < ready_at + startup_grace
    failures = failures_so_far if in_grace else failures_so_far + 1
    if status is NodeStatus.RUNNING and failures >= threshold:
        return Judgement(failures, False)
    return Judgement(failures, None)
