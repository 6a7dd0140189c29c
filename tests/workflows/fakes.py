"""In-memory stand-ins for the activities, registered under the real names.

They keep a node table and an event list like the database does (same transition rules, same
idempotency), so workflow tests can assert on what would have been recorded.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.worker import Worker

from controlplane.lifecycle import EventType, LaunchMode, NodeStatus
from workflows.activity_refs import admission_task_queue
from workflows.fleet_models import (
    AcquireSlotInput,
    AcquireSlotResult,
    ReleaseSlotInput,
    ReleaseSlotResult,
)
from workflows.models import (
    ClusterHealthInput,
    ClusterHealthResult,
    CredentialRefInput,
    CredentialRefResult,
    DownClusterInput,
    DownClusterResult,
    LaunchInput,
    LaunchResult,
    LookupClusterInput,
    LookupClusterResult,
    NodePlan,
    RecordDeploymentEventsInput,
    RecordDeploymentEventsResult,
    RecordIntentInput,
    RecordIntentResult,
    RestartModelInput,
    RestartModelResult,
    TransitionInput,
    TransitionResult,
    WaitReadyInput,
    WaitReadyResult,
)


@dataclass
class Row:
    node_id: str
    cluster_name: str
    workflow_id: str
    launch_mode: LaunchMode
    status: NodeStatus = NodeStatus.PENDING
    request_id: str | None = None
    endpoint: str | None = None
    error: str | None = None
    tenant: str | None = None


@dataclass
class Behaviour:
    """What the fake SkyPilot does; tests flip these."""

    launch_error: ApplicationError | None = None
    wait_error: ApplicationError | None = None
    wait_errors: list[ApplicationError] = field(default_factory=list)
    wait_forever: bool = False
    wait_still_running: bool = False
    down_error: ApplicationError | None = None
    down_blocks: asyncio.Event | None = None
    cluster_status: str = "UP"
    cluster_statuses: dict[str, str] = field(default_factory=dict)  # per cluster, wins
    cluster_status_answers: list[str] = field(default_factory=list)  # answered first, one a call
    failing_models: set[str] = field(default_factory=set)  # their launches never get ready
    slow_models: set[str] = field(default_factory=set)  # their launches are still going
    location: str | None = "aws/us-east-1"  # where wait_ready says the cluster landed
    transition_error_for: NodeStatus | None = None
    admission_open: asyncio.Event | None = None  # set: queued launches get their slot
    launch_budget: int | None = None  # slots in flight at once; the rest wait for a release
    # Set: only these nodes get a slot; the others stay queued until their wait is cancelled.
    # A test whose messages cancel nodes it does not drive step by step (a deployment's
    # replacements) uses it: a slot granted while the task that cancels it runs wedges the
    # time-skipping server (sdk-java #2391), and a fixed settle time only moves that race.
    admitted_nodes: set[str] | None = None
    db_outage: timedelta | None = None  # record_transition fails this long (server time)


# The faults of the interleaving matrix (tests/workflows/test_interleavings.py).
PERMANENT = "permanent"  # a non-retryable error, nothing done
TRANSIENT = "transient"  # a retryable error, nothing done; the retry succeeds
WORKER_DIES = "worker_dies"  # the step's effect happens, then its attempt is lost and retried
TIMEOUT = "timeout"  # the attempt hangs without heartbeats: Temporal times it out and retries
DB_DOWN = "db_down"  # the database refuses every attempt for longer than any old deadline
NOT_FOUND = "not_found"  # SkyPilot answers that the cluster does not exist
DB_OUTAGE = timedelta(minutes=16)  # longer than the old 15-minute schedule-to-close
TRANSITION_STEPS = {
    EventType.LAUNCHED: "t_launched",
    EventType.READY: "t_ready",
    EventType.TERMINATING: "t_terminating",
    EventType.TERMINATED: "t_terminated",
}


def outage_elapsed(info: activity.Info) -> timedelta:
    """How long this step has been retrying: the backoffs before this attempt, from its policy.

    Counted rather than read off the attempt's schedule times: a local activity's are set by
    the worker, not by the time-skipping server, so they need not follow its skipped clock.
    """
    policy = info.retry_policy
    if policy is None:
        return info.current_attempt_scheduled_time - info.scheduled_time
    elapsed, interval = timedelta(0), policy.initial_interval
    for _ in range(info.attempt - 1):
        elapsed += interval
        interval = interval * policy.backoff_coefficient
        if policy.maximum_interval is not None:
            interval = min(interval, policy.maximum_interval)
    return elapsed


@dataclass
class Fault:
    """One fault at one step: the step waits at ``reached`` until the test lets it go."""

    step: str
    kind: str
    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    fired: bool = False
    linger_s: float = 0.0  # keep heartbeating this long after release: a cancel lands first


class FakeActivities:
    def __init__(
        self,
        *,
        launch_timeout_s: float = 600,
        terminate_timeout_s: float = 300,
        health_interval_s: float = 60,
        max_retries: int = 2,
    ) -> None:
        self.rows: dict[str, Row] = {}
        self.events: list[tuple[str, str]] = []
        self.event_keys: set[str] = set()
        self.calls: dict[str, list[Any]] = defaultdict(list)
        self.behaviour = Behaviour()
        self.slot_holders: set[str] = set()
        self.plan_args: dict[str, Any] = {
            "launch_timeout_s": launch_timeout_s,
            "terminate_timeout_s": terminate_timeout_s,
            "health_interval_s": health_interval_s,
            "cleanup_budget_s": 1800.0,
            "heartbeat_timeout_s": 2.0,
            "max_retries": max_retries,
            "retry_backoff_s": 1.0,
        }
        self.deployment_events: list[str] = []
        self.launch_times: dict[str, datetime] = {}
        self.deployment_event_keys: set[str] = set()
        self.launch_started = asyncio.Event()
        self.launches = 0
        self.clusters: set[str] = set()  # the fake cloud: clusters that exist right now
        self.ever_launched: set[str] = set()
        self.fault: Fault | None = None
        self.faults: dict[str, Fault] = {}  # by workflow id: one per node, run side by side
        # Regular (not local) activities take this long, heartbeating. The time-skipping server
        # wedges a workflow whose task cancels an activity that completed while that task ran
        # (sdk-java #2391; the real server handles it), so a test that cancels sets this.
        self.settle_s = 0.0

    async def _settle(self) -> None:
        if activity.info().is_local:
            return
        for _ in range(int(self.settle_s / 0.05)):
            activity.heartbeat()
            await asyncio.sleep(0.05)

    async def _at(self, step: str) -> str | None:
        """Apply the configured fault if this is its step; returns a kind the caller applies."""
        await self._settle()
        fault = self.faults.get(activity.info().workflow_id or "") or self.fault
        if fault is not None and fault.kind == DB_DOWN and fault.step == step and fault.fired:
            self._refuse_during_outage()
        if fault is None or fault.fired or fault.step != step:
            return None
        fault.fired = True
        fault.reached.set()
        beat = not activity.info().is_local  # a local activity has no heartbeat to send
        while not fault.release.is_set():
            if beat:
                activity.heartbeat()  # delivers a cancel while the step is held
            await asyncio.sleep(0.01)
        for _ in range(int(fault.linger_s / 0.05)):
            if beat:
                activity.heartbeat()
            await asyncio.sleep(0.05)
        if fault.kind == PERMANENT:
            raise ApplicationError(
                f"injected permanent fault at {step}", type="InjectedPermanent", non_retryable=True
            )
        if fault.kind == TRANSIENT:
            raise ApplicationError(f"injected transient fault at {step}", type="InjectedTransient")
        if fault.kind == TIMEOUT:
            await self.hang()
        if fault.kind == DB_DOWN:
            self._refuse_during_outage()
        return fault.kind

    @staticmethod
    def _refuse_during_outage(outage: timedelta = DB_OUTAGE) -> None:
        if outage_elapsed(activity.info()) < outage:
            raise ApplicationError("database unavailable (injected)", type="OperationalError")

    @staticmethod
    async def hang() -> None:
        """A worker that stopped: no heartbeat until well past the heartbeat timeout."""
        await asyncio.sleep(activity.info().heartbeat_timeout.total_seconds() * 3)  # type: ignore[union-attr]
        raise ApplicationError("attempt abandoned by its worker", type="WorkerDied")

    async def lost_attempt(self, kind: str | None) -> None:
        """After the step's effect: a dead worker's attempt, retried by Temporal.

        Raised at once rather than by hanging into a heartbeat timeout: to the workflow both
        are a failed attempt that is retried, and a hung attempt stops the test server's clock.
        """
        if kind == WORKER_DIES:
            raise ApplicationError("worker died after the step's effect", type="WorkerDied")

    def statuses(self) -> list[NodeStatus]:
        return [row.status for row in self.rows.values()]

    @activity.defn(name="record_intent")
    async def record_intent(self, input: RecordIntentInput) -> RecordIntentResult:
        self.calls["record_intent"].append(input)
        kind = await self._at("intent")
        spec = input.spec
        row = self.rows.setdefault(
            spec.node_id,
            Row(
                node_id=spec.node_id,
                cluster_name=spec.cluster_name,
                workflow_id=input.workflow_id,
                launch_mode=input.launch_mode or LaunchMode.API,
                tenant=spec.tenant,
            ),
        )
        plan = NodePlan(
            node_id=row.node_id,
            cluster_name=row.cluster_name,
            launch_mode=row.launch_mode,
            **self.plan_args,
        )
        await self.lost_attempt(kind)
        return RecordIntentResult(
            plan=plan,
            status=row.status,
            owner_workflow_id=row.workflow_id,
            created=row.workflow_id == input.workflow_id,
            request_id=row.request_id,
            endpoint=row.endpoint,
        )

    @activity.defn(name="record_transition")
    async def record_transition(self, input: TransitionInput) -> TransitionResult:
        self.calls["record_transition"].append(input)
        transition = input.transition
        kind = await self._at(TRANSITION_STEPS.get(transition.event, ""))
        if self.behaviour.db_outage is not None:
            self._refuse_during_outage(self.behaviour.db_outage)
        if self.behaviour.transition_error_for is transition.target:
            raise ApplicationError(
                "database rejected the write", type="InvalidTransition", non_retryable=True
            )
        row = self.rows[input.node_id]
        key = f"{input.node_id}:{transition.event.value}:{input.dedupe_suffix}"
        if row.status is transition.target and key in self.event_keys:
            return TransitionResult(applied=False, status=row.status)
        if not transition.allows(row.status):
            raise ApplicationError(
                f"{row.status} -> {transition.name} not allowed",
                type="InvalidTransition",
                non_retryable=True,
            )
        row.status = transition.target
        row.request_id = input.request_id or row.request_id
        row.endpoint = input.endpoint or row.endpoint
        row.error = input.error or row.error
        if key not in self.event_keys:
            self.event_keys.add(key)
            self.events.append((input.node_id, transition.event.value))
        await self.lost_attempt(kind)
        return TransitionResult(applied=True, status=row.status)

    @activity.defn(name="lookup_cluster")
    async def lookup_cluster(self, input: LookupClusterInput) -> LookupClusterResult:
        row = next((r for r in self.rows.values() if r.cluster_name == input.cluster_name), None)
        live = row is not None and not row.status.final
        return LookupClusterResult(
            cluster_name=input.cluster_name,
            node_id=row.node_id if row else None,
            tenant=row.tenant if row else None,
            workflow_id=row.workflow_id if row and live else None,
            status=row.status if row else None,
            launch_mode=input.launch_mode or LaunchMode.API,
            terminate_timeout_s=300,
            cleanup_budget_s=1800,
            heartbeat_timeout_s=30,
            retry_backoff_s=1,
        )

    @activity.defn(name="credential_reference")
    async def credential_reference(self, input: CredentialRefInput) -> CredentialRefResult:
        self.calls["credential_reference"].append(input)
        await self.lost_attempt(await self._at("credential"))
        return CredentialRefResult(ref=None)

    @activity.defn(name="launch_cluster")
    async def launch_cluster(self, input: LaunchInput) -> LaunchResult:
        self.calls["launch_cluster"].append(input)
        self.launch_times[input.cluster_name] = activity.info().scheduled_time
        self.launches += 1
        self.launch_started.set()
        kind = await self._at("launch")
        if kind == NOT_FOUND:
            raise ApplicationError(
                f"cluster {input.cluster_name} does not exist",
                type="ClusterDoesNotExist",
                non_retryable=True,
            )
        if self.behaviour.launch_error is not None:
            raise self.behaviour.launch_error
        self.clusters.add(input.cluster_name)
        self.ever_launched.add(input.cluster_name)
        await self.lost_attempt(kind)
        return LaunchResult(request_id=f"req-{self.launches}")

    @activity.defn(name="wait_ready")
    async def wait_ready(self, input: WaitReadyInput) -> WaitReadyResult:
        self.calls["wait_ready"].append(input)
        kind = await self._at("wait_ready")
        if kind == NOT_FOUND:
            self.clusters.discard(input.cluster_name)
            raise ApplicationError(
                f"cluster {input.cluster_name} does not exist",
                type="ClusterDoesNotExist",
                non_retryable=True,
            )
        await self.lost_attempt(kind)
        if self.behaviour.wait_errors:
            raise self.behaviour.wait_errors.pop(0)
        launched = next(
            (
                c
                for c in reversed(self.calls["launch_cluster"])
                if c.cluster_name == input.cluster_name
            ),
            None,
        )
        if launched is not None and launched.spec.model in self.behaviour.slow_models:
            raise ApplicationError("launch still running", type="WaitTimeoutError")
        if launched is not None and launched.spec.model in self.behaviour.failing_models:
            raise ApplicationError(
                "model crashed on start", type="ReadinessTimeout", non_retryable=True
            )
        if self.behaviour.wait_error is not None:
            raise self.behaviour.wait_error
        if self.behaviour.wait_still_running:
            # As the real activity does when a slice of its long-poll ends: retry later.
            raise ApplicationError("launch still running", type="WaitTimeoutError")
        if self.behaviour.wait_forever:
            while True:
                activity.heartbeat()
                await asyncio.sleep(0.05)
        return WaitReadyResult(
            endpoint=f"127.0.0.1:8000/{input.cluster_name}", location=self.behaviour.location
        )

    @activity.defn(name="cluster_health")
    async def cluster_health(self, input: ClusterHealthInput) -> ClusterHealthResult:
        self.calls["cluster_health"].append(input)
        kind = await self._at("health")
        if kind == NOT_FOUND:
            self.clusters.discard(input.cluster_name)
        await self.lost_attempt(kind)
        if self.behaviour.cluster_status_answers:
            status = self.behaviour.cluster_status_answers.pop(0)
        elif input.cluster_name in self.behaviour.cluster_statuses:
            status = self.behaviour.cluster_statuses[input.cluster_name]
        elif input.cluster_name not in self.clusters and self.ever_launched:
            status = "TERMINATED"
        else:
            status = self.behaviour.cluster_status
        return ClusterHealthResult(cluster_status=status, present=status != "TERMINATED")

    @activity.defn(name="down_cluster")
    async def down_cluster(self, input: DownClusterInput) -> DownClusterResult:
        self.calls["down_cluster"].append(input)
        kind = await self._at("down")
        if kind == NOT_FOUND:
            self.clusters.discard(input.cluster_name)
            return DownClusterResult(already_gone=True)
        if self.behaviour.down_blocks is not None:
            while not self.behaviour.down_blocks.is_set():
                activity.heartbeat()
                await asyncio.sleep(0.05)
        if self.behaviour.down_error is not None:
            raise self.behaviour.down_error
        gone = input.cluster_name not in self.clusters
        self.clusters.discard(input.cluster_name)
        await self.lost_attempt(kind)
        return DownClusterResult(already_gone=gone)

    @activity.defn(name="record_deployment_events")
    async def record_deployment_events(
        self, input: RecordDeploymentEventsInput
    ) -> RecordDeploymentEventsResult:
        written = 0
        for offset, event in enumerate(input.events):
            key = f"{input.workflow_id}:{input.generation}:{input.first_sequence + offset}"
            if key not in self.deployment_event_keys:
                self.deployment_event_keys.add(key)
                self.deployment_events.append(event.event_type.value)
                written += 1
        return RecordDeploymentEventsResult(written=written)

    @activity.defn(name="restart_model")
    async def restart_model(self, input: RestartModelInput) -> RestartModelResult:
        self.calls["restart_model"].append(input)
        return RestartModelResult(job_submitted=True)

    @activity.defn(name="acquire_launch_slot")
    async def acquire_launch_slot(self, input: AcquireSlotInput) -> AcquireSlotResult:
        self.calls["acquire_launch_slot"].append(input)
        await self._settle()
        gate = self.behaviour.admission_open
        admitted = self.behaviour.admitted_nodes
        while (gate is not None and not gate.is_set()) or (
            admitted is not None and input.node_id not in admitted
        ):
            activity.heartbeat()
            await asyncio.sleep(0.05)
        budget = self.behaviour.launch_budget
        while budget is not None and len(self.slot_holders - {input.node_id}) >= budget:
            activity.heartbeat()
            await asyncio.sleep(0.05)
        self.slot_holders.add(input.node_id)
        return AcquireSlotResult(granted=True, budget=budget or 1)

    @activity.defn(name="try_launch_slot")
    async def try_launch_slot(self, input: AcquireSlotInput) -> AcquireSlotResult:
        """The local first ask: granted only when the wait would not wait at all."""
        self.calls["try_launch_slot"].append(input)
        gate = self.behaviour.admission_open
        admitted = self.behaviour.admitted_nodes
        budget = self.behaviour.launch_budget
        if (
            (gate is not None and not gate.is_set())
            or (admitted is not None and input.node_id not in admitted)
            or (budget is not None and len(self.slot_holders - {input.node_id}) >= budget)
        ):
            return AcquireSlotResult(granted=False, budget=budget or 1)
        self.slot_holders.add(input.node_id)
        return AcquireSlotResult(granted=True, budget=budget or 1)

    @activity.defn(name="release_launch_slot")
    async def release_launch_slot(self, input: ReleaseSlotInput) -> ReleaseSlotResult:
        self.calls["release_launch_slot"].append(input)
        self.slot_holders.discard(input.node_id)
        return ReleaseSlotResult(released=True)

    def admission_worker(self, client: Client, task_queue: str, **options: Any) -> Worker:
        """The launch-slot waits' own worker (worker.py NodeWorkers), for the nodes on
        ``task_queue``: run it beside the main worker of every test that launches."""
        return Worker(
            client,
            task_queue=admission_task_queue(task_queue),
            activities=[self.acquire_launch_slot],
            **options,
        )

    def all(self) -> list[Any]:
        return [
            self.record_deployment_events,
            self.restart_model,
            self.acquire_launch_slot,
            self.try_launch_slot,
            self.release_launch_slot,
            self.record_intent,
            self.record_transition,
            self.lookup_cluster,
            self.credential_reference,
            self.launch_cluster,
            self.wait_ready,
            self.cluster_health,
            self.down_cluster,
        ]
