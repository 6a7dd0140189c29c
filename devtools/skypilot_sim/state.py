"""The simulator's in-memory server state: requests, clusters, faults and counters.

Everything here lives on the server's event loop and is touched only from it, so it needs no
locks; other threads go through ``/sim/*`` or ``SimulatorServer``'s thread-safe methods. Each
request runs as an asyncio task, like a request in a real worker, and sets an event when it
finishes so ``/api/get`` can block on it.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import yaml

from devtools.skypilot_sim.config import Faults, SimConfig
from devtools.skypilot_sim.contract import (
    DAEMON_REQUESTS,
    SYSTEM_USER_ID,
    USER_ENV_VAR,
    USER_ID_ENV_VAR,
)
from devtools.skypilot_sim.exceptions import SkyPilotError, request_error, sky_error
from devtools.skypilot_sim.payloads import RequestBody
from devtools.skypilot_sim.records import (
    Cluster,
    ClusterStatus,
    ModelFault,
    Request,
    RequestStatus,
)
from devtools.skypilot_sim.taskspec import TaskSpec

log = logging.getLogger(__name__)

Operation = Callable[["SimState", Request], Awaitable[Any]]

# The SimConfig timings ``POST /sim/timings`` may change while the server runs.
TIMING_FIELDS = (
    "launch_delay_s",
    "down_delay_s",
    "stop_delay_s",
    "model_warmup_s",
    "status_delay_s",
)

# Errors a simulated operation raises on purpose; anything else is a simulator bug.
EXPECTED_ERRORS = (SkyPilotError, yaml.YAMLError, ValueError, AttributeError, KeyError)


class SimState:
    """All the simulator knows. Create it anywhere; use it only on the server's loop."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self._clear()

    def _clear(self) -> None:
        self.faults = self.config.faults.model_copy(deep=True)
        self._rng = random.Random(self.faults.seed)
        self.requests: dict[str, Request] = {}
        self._id_lengths: set[int] = set()  # of the ids in ``requests`` (find's fast path)
        # The server's users table: a user appears once a worker has run one of its requests.
        self.users: dict[str, str | None] = {SYSTEM_USER_ID: SYSTEM_USER_ID}
        self.clusters: dict[str, Cluster] = {}
        self._cluster_locks: dict[str, asyncio.Lock] = {}
        self._long_slots: asyncio.Semaphore | None = None
        # Accepted requests not yet committed (the late_commit_s fault), by request id.
        self._pending_commits: dict[str, asyncio.TimerHandle] = {}
        self.calls: Counter[str] = Counter()
        self.launch_requests: Counter[str] = Counter()
        self.dropped_responses = 0
        self.unavailable_responses = 0
        self._failure_cycle = 0
        # Wall-clock (time.time()) moments of each cluster's life, kept after it is gone, so a
        # benchmark can compare them with the control plane's timestamps (GET /sim/timeline).
        self.timeline: dict[str, dict[str, float]] = {}
        # Every cluster ever created, one entry per incarnation (a name launched again after a
        # down is a new one), gone or live: GET /sim/history. Kept until /sim/reset.
        self.history: list[Cluster] = []
        self.late_commits = 0
        self._add_daemons()

    # --- identity ------------------------------------------------------------------------------
    def server_env_vars(self) -> dict[str, str]:
        """The env_vars a body gets when it carries none: the server's own user (contract §3.1)."""
        return {
            USER_ID_ENV_VAR: self.config.server_user_hash,
            USER_ENV_VAR: self.config.server_user_name,
        }

    def _add_daemons(self) -> None:
        body = RequestBody.model_validate({"env_vars": self.server_env_vars()})
        for request_id, name in DAEMON_REQUESTS:
            self._id_lengths.add(len(request_id))
            self.requests[request_id] = Request(
                request_id=request_id,
                name=name,
                body=body,
                user_id=SYSTEM_USER_ID,
                user_name=SYSTEM_USER_ID,
                status=RequestStatus.RUNNING,
                is_daemon=True,
            )

    # --- faults --------------------------------------------------------------------------------
    def update_faults(self, changes: dict[str, Any]) -> Faults:
        """Apply a partial update; raises pydantic.ValidationError for a bad value."""
        self.faults = Faults.model_validate({**self.faults.model_dump(), **changes})
        if "seed" in changes:
            self._rng = random.Random(self.faults.seed)
        return self.faults

    def update_timings(self, changes: dict[str, Any]) -> dict[str, float]:
        """Change some timings of the running server (benchmarks vary the launch duration).

        Raises ValueError for an unknown name and pydantic.ValidationError for a bad value; the
        change lasts until the next one (``reset`` does not undo it).
        """
        unknown = sorted(set(changes) - set(TIMING_FIELDS))
        if unknown:
            raise ValueError(f"not a timing: {', '.join(unknown)}; expected {TIMING_FIELDS}")
        checked = SimConfig.model_validate({**self.config.model_dump(), **changes})
        for name in changes:
            setattr(self.config, name, getattr(checked, name))
        return self.timings()

    def timings(self) -> dict[str, float]:
        return {name: float(getattr(self.config, name)) for name in TIMING_FIELDS}

    def take_unavailable(self) -> bool:
        """Whether this call belongs to a 503 burst (and use it up)."""
        if self.faults.unavailable_burst <= 0:
            return False
        self.faults.unavailable_burst -= 1
        self.unavailable_responses += 1
        return True

    def take_drop(self) -> bool:
        """Whether this async POST's response is to be lost (and use it up)."""
        if self.faults.drop_next_responses > 0:
            self.faults.drop_next_responses -= 1
        elif not self._chance(self.faults.drop_response_rate):
            return False
        self.dropped_responses += 1
        return True

    def take_launch_failure(self) -> str | None:
        """The error type this launch must fail with, or None."""
        types = self.faults.launch_failure_types
        if self.faults.fail_next_launches > 0:
            self.faults.fail_next_launches -= 1
        elif not self._chance(self.faults.launch_failure_rate):
            return None
        failure = types[self._failure_cycle % len(types)]
        self._failure_cycle += 1
        return failure

    def _chance(self, rate: float) -> bool:
        """A random draw, made only for a non-zero rate so a seed gives a repeatable sequence."""
        return rate > 0 and self._rng.random() < rate

    # --- counters ------------------------------------------------------------------------------
    def count_call(self, method: str, path: str) -> None:
        self.calls[f"{method} {path}"] += 1

    def counters(self) -> dict[str, Any]:
        by_status = Counter(r.status.value for r in self.requests.values() if not r.is_daemon)
        return {
            "launch_requests": dict(self.launch_requests),
            "live_clusters": sorted(self.clusters),
            "calls": dict(sorted(self.calls.items())),
            "requests_by_status": dict(sorted(by_status.items())),
            "dropped_responses": self.dropped_responses,
            "unavailable_responses": self.unavailable_responses,
            "late_commits": self.late_commits,
        }

    # --- requests ------------------------------------------------------------------------------
    def submit(self, request: Request, operation: Operation, *, commit_after_s: float = 0) -> None:
        """Store a request and start running it; the caller answers the POST right away.

        With ``commit_after_s`` the request is stored and started only that much later, as an
        overloaded server commits what it accepted: until then nobody can see it.
        """
        if commit_after_s > 0:
            loop = asyncio.get_running_loop()
            self._pending_commits[request.request_id] = loop.call_later(
                commit_after_s, self._commit, request, operation
            )
            return
        self._commit(request, operation)

    def _commit(self, request: Request, operation: Operation) -> None:
        if self._pending_commits.pop(request.request_id, None) is not None:
            self.late_commits += 1
        self.requests[request.request_id] = request
        self._id_lengths.add(len(request.request_id))
        if request.name == "sky.launch" and request.cluster_name is not None:
            self.launch_requests[request.cluster_name] += 1
        request.task = asyncio.get_running_loop().create_task(
            self._execute(request, operation), name=f"sim-{request.name}-{request.request_id}"
        )

    def find(self, prefix: str) -> list[Request]:
        """Requests whose id starts with ``prefix`` (the server matches prefixes everywhere).

        A whole id as long as the longest one matches only itself: a dict look-up, where the
        scan over every request ever made grew with the run (17 % of a benchmark's CPU)."""
        exact = self.requests.get(prefix)
        if exact is not None and len(prefix) >= max(self._id_lengths, default=0):
            return [exact]
        return [r for r in self.requests.values() if r.request_id.startswith(prefix)]

    async def _execute(self, request: Request, operation: Operation) -> None:
        try:
            slots = self._long_slots_for(request)
            if slots is None:
                await self._run(request, operation)
            else:
                async with slots:
                    await self._run(request, operation)
        except asyncio.CancelledError:
            # cancel() has recorded the outcome already; nothing awaits this task.
            if not request.status.finished:
                request.finish(RequestStatus.CANCELLED)

    def _long_slots_for(self, request: Request) -> asyncio.Semaphore | None:
        if request.schedule_type != "long" or self.config.long_workers is None:
            return None
        if self._long_slots is None:
            self._long_slots = asyncio.Semaphore(self.config.long_workers)
        return self._long_slots

    async def _run(self, request: Request, operation: Operation) -> None:
        # A worker picks the request up a moment after the POST was answered: PENDING till then.
        await asyncio.sleep(self.config.status_delay_s)
        request.status = RequestStatus.RUNNING
        request.pid = os.getpid()
        self.users.setdefault(request.user_id, request.user_name)
        try:
            value = await operation(self, request)
        except EXPECTED_ERRORS as exc:
            self._fail(request, exc)
        except Exception as exc:
            log.exception("simulated %s %s crashed", request.name, request.request_id)
            self._fail(request, exc)
        else:
            if not request.status.finished:
                request.finish(RequestStatus.SUCCEEDED, value=value)

    def _fail(self, request: Request, exc: BaseException) -> None:
        if request.status.finished:
            return
        # An interrupted request is CANCELLED with an error, so /api/get answers 500 (§5.1).
        interrupted = type(exc).__name__ == "RequestInterruptedError"
        status = RequestStatus.CANCELLED if interrupted else RequestStatus.FAILED
        request.finish(status, error=request_error(exc))

    def cancel(self, request: Request, error: BaseException | None = None) -> bool:
        """Cancel an active request now, undoing its half-done work. False if not cancellable."""
        if request.is_daemon or request.status.finished:
            return False
        undo = request.on_cancel
        request.finish(
            RequestStatus.CANCELLED, error=request_error(error) if error is not None else None
        )
        if undo is not None:
            undo()
        if request.task is not None and not request.task.done():
            request.task.cancel()
        return True

    def cancel_requests(self, request_ids: list[str] | None, user_id: str | None) -> list[str]:
        """kill_requests: expand prefixes (ambiguous → ValueError), cancel, return the ids."""
        if request_ids is None:
            targets = [
                r
                for r in self.requests.values()
                if not r.status.finished and r.name != "sky.api_cancel"
            ]
        else:
            targets = []
            for prefix in request_ids:
                matches = self.find(prefix)
                if len(matches) > 1:
                    raise ValueError(f"Multiple requests found for request ID prefix: {prefix}")
                targets.extend(matches)
        cancelled = []
        for request in targets:
            if user_id is not None and request.user_id != user_id:
                continue
            if self.cancel(request):
                cancelled.append(request.request_id)
        return cancelled

    def cancel_cluster_requests(self, cluster_name: str, keep_name: str) -> None:
        """What down/stop do first: kill the cluster's other active requests (not their kind)."""
        for request in list(self.requests.values()):
            if request.cluster_name == cluster_name and request.name != keep_name:
                self.cancel(request)

    # --- clusters ------------------------------------------------------------------------------
    def cluster_lock(self, name: str) -> asyncio.Lock:
        """Serialises launch/down/stop on one cluster, like SkyPilot's cluster lock."""
        return self._cluster_locks.setdefault(name, asyncio.Lock())

    def new_cluster(self, name: str, spec: TaskSpec, request: Request) -> Cluster:
        cluster = Cluster(
            name=name,
            spec=spec,
            user_hash=request.user_id,
            user_name=request.user_name or request.user_id,
            cluster_hash=str(uuid.uuid4()),
            launch_request_id=request.request_id,
        )
        self.clusters[name] = cluster
        self.history.append(cluster)
        self._note(name, "created_at")
        return cluster

    def is_current(self, cluster: Cluster) -> bool:
        """Whether ``cluster`` is still the live cluster of its name (not removed or replaced)."""
        return self.clusters.get(cluster.name) is cluster

    def mark_up(self, cluster: Cluster) -> None:
        cluster.set_status(ClusterStatus.UP)
        up_at = self._note(cluster.name, "up_at")
        # The model's /health answers 200 from this moment on (sim_routes._warm).
        self.timeline[cluster.name]["model_ready_at"] = up_at + self.config.model_warmup_s
        delay = self.faults.preempt_after_s
        if delay is not None:
            loop = asyncio.get_running_loop()
            cluster.preempt_timer = loop.call_later(delay, self._preempt_if_current, cluster)

    def set_status(self, cluster: Cluster, status: ClusterStatus) -> None:
        self._cancel_timer(cluster)
        cluster.set_status(status)

    def remove_cluster(self, cluster: Cluster) -> None:
        cluster.model_recovered.set()  # a hung model call of a vanished cluster ends (404)
        if self.is_current(cluster):
            del self.clusters[cluster.name]
            cluster.gone_at = self._note(cluster.name, "gone_at")
        self._cancel_timer(cluster)

    def preempt(self, name: str) -> bool:
        """The cluster vanishes, as a spot preemption would make it. False if unknown."""
        cluster = self.clusters.get(name)
        if cluster is None:
            return False
        log.info("simulated preemption of cluster %s", name)
        self.remove_cluster(cluster)
        return True

    def set_model_fault(self, name: str, fault: ModelFault | None) -> bool:
        """Crash or hang the cluster's model (None recovers it); False if the cluster is unknown.

        The cluster's own status does not change: SkyPilot keeps reporting it UP.
        """
        cluster = self.clusters.get(name)
        if cluster is None:
            return False
        log.info("simulated model fault on %s: %s", name, fault)
        cluster.model_fault = fault
        if fault is ModelFault.HANG:
            cluster.model_recovered.clear()
        else:
            cluster.model_recovered.set()  # hung calls go on, and now see the new state
        return True

    def _preempt_if_current(self, cluster: Cluster) -> None:
        if self.is_current(cluster) and cluster.status == ClusterStatus.UP:
            self.preempt(cluster.name)

    def _note(self, name: str, moment: str) -> float:
        """Record the wall-clock time of a moment in the cluster's life (the latest one wins)."""
        now = time.time()
        self.timeline.setdefault(name, {})[moment] = now
        return now

    def cluster_history(self) -> list[dict[str, Any]]:
        """Every cluster incarnation ever created, oldest first: its name, hash, launch request,
        status (its last one, for a gone cluster), whether it is live and when it went."""
        return [
            {
                "name": cluster.name,
                "cluster_hash": cluster.cluster_hash,
                "launch_request_id": cluster.launch_request_id,
                "launched_at": cluster.launched_at,
                "status": cluster.status.value,
                "live": self.is_current(cluster),
                "gone_at": cluster.gone_at,
            }
            for cluster in self.history
        ]

    def cluster_timeline(self) -> dict[str, dict[str, float]]:
        """Per cluster name: created_at, up_at, model_ready_at, gone_at (those that happened)."""
        return {name: dict(moments) for name, moments in sorted(self.timeline.items())}

    @staticmethod
    def _cancel_timer(cluster: Cluster) -> None:
        if cluster.preempt_timer is not None:
            cluster.preempt_timer.cancel()
            cluster.preempt_timer = None

    # --- lifecycle -----------------------------------------------------------------------------
    def reset(self) -> None:
        """Forget everything: requests (running ones are stopped), clusters, counters, faults."""
        self._drop_pending_commits()
        for request in list(self.requests.values()):
            self.cancel(request)
        for cluster in list(self.clusters.values()):
            self._cancel_timer(cluster)
            cluster.model_recovered.set()
        self._clear()

    def _drop_pending_commits(self) -> None:
        for handle in self._pending_commits.values():
            handle.cancel()
        self._pending_commits.clear()

    def shutdown(self) -> None:
        """A stopping server interrupts its requests, so blocked /api/get calls return."""
        self._drop_pending_commits()
        for request in list(self.requests.values()):
            message = (
                f"Request {request.request_id!r} was interrupted by an API server restart and "
                "will not be resumed. Please re-submit the original request."
            )
            self.cancel(request, sky_error("RequestInterruptedError", message))
        for cluster in self.clusters.values():
            self._cancel_timer(cluster)
            cluster.model_recovered.set()
