"""From one probe's outcome and the count so far, to the node's next count and what to tell it.

Pure, so the rules are tested without a network: failures count only after the startup grace,
``threshold`` failures in a row make a running node unhealthy, and one success makes an
unhealthy node healthy again. The node's recorded status is the verdict it was last given, so a
node is signalled only when the verdict differs from it.

A round of probes is *suspect* when the prober itself is the likely cause of its failures: its
event loop ran late (a starved worker's timeouts fire late or on answers it had no time to
read), or too many of the models that answered until now got no answer at once (timeouts,
refused connections) for them to be at fault one by one. A suspect round's no-answer failures
do not count; its successes and its answers (HTTP 503, model not listed) do.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from controlplane.lifecycle import NodeStatus

# Why a round is suspect: the probe_suspect_rounds counter's label values.
LOOP_LAG = "loop_lag"
CORRELATED = "correlated"
SUSPECT_REASONS = (LOOP_LAG, CORRELATED)


@dataclass(frozen=True)
class RoundGuard:
    """When a round is suspect: the settings MODEL_PROBE_MAX_LOOP_LAG, _SUSPECT_FRACTION, _MIN."""

    max_loop_lag_s: float
    suspect_fraction: float
    suspect_min: int


def in_startup_grace(*, ready_at: datetime | None, now: datetime, startup_grace: timedelta) -> bool:
    """Just ready: its failures do not count yet (MODEL_PROBE_STARTUP_GRACE)."""
    return ready_at is not None and now < ready_at + startup_grace


def suspect_round(
    guard: RoundGuard, *, answering: int, stopped: int, loop_lag_s: float
) -> str | None:
    """Why this round's no-answer failures are not to be believed (one of SUSPECT_REASONS), or None.

    ``answering``: the round's models past their startup grace whose last counted probe passed
    (failure count 0); ``stopped``: how many of them got no answer this round. Models already
    failing or still starting are left out of both, so neither a shard of long-dead models nor
    a burst of launches still loading hides a new crash. ``stopped`` must be
    both at least ``suspect_min`` and more than ``suspect_fraction`` of ``answering`` to be
    correlated: a few models that crash or hang in a shard, or in a small fleet, are believed.
    """
    if loop_lag_s > guard.max_loop_lag_s:
        return LOOP_LAG
    if stopped >= guard.suspect_min and stopped > guard.suspect_fraction * answering:
        return CORRELATED
    return None


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
    counts: bool = True,
) -> Judgement:
    """``counts`` False: a failure of a suspect round, which leaves the count as it was."""
    if ok:
        return Judgement(0, True if status is NodeStatus.UNHEALTHY else None)
    if not counts:
        return Judgement(failures_so_far, None)
    failures = failures_so_far
    if not in_startup_grace(ready_at=ready_at, now=now, startup_grace=startup_grace):
        failures += 1
    if status is NodeStatus.RUNNING and failures >= threshold:
        return Judgement(failures, False)
    return Judgement(failures, None)
