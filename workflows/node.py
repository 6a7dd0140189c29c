"""NodeWorkflow: one GPU node's whole life, from recorded intent to confirmed teardown.

1. record intent (the row exists before anything exists in a cloud), 2. fetch the credential
reference, 3. launch, 4. wait for ready (SkyPilot done, cluster UP, model answering /health),
bounded by the launch timeout, 5. record running. Then it stays alive as the node's entity: a
status query, a terminate update with a bounded wait, the fleet-health sweep's signals (a
vanished cluster: lost; a model that stopped answering: unhealthy, then running again), and
continue-as-new when suggested (runs from before the sweep check their cluster on a timer).

Once a launch may have started, any failure, timeout or cancellation cancels the SkyPilot
request, downs the cluster and records ``failed`` with the reason. A cluster whose down cannot
be confirmed is recorded ``cleanup_failed``: never ``terminated`` while it may be alive.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta
from typing import TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    FailureError,
    is_cancelled_exception,
)

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel, ValidationError

    from controlplane import lifecycle
    from controlplane.backoff import exponential_backoff
    from controlplane.skypilot.errors import TRANSIENT_ERROR_TYPES
    from controlplane.spec import NodeSpec
    from workflows import activity_refs as acts
    from workflows import options
    from workflows import search_attributes as attrs
    from workflows.failures import describe, failure_type, nothing_submitted, timed_out
    from workflows.fleet_models import AcquireSlotInput, ModelHealthSignal, ReleaseSlotInput
    from workflows.inputs import require_input
    from workflows.models import (
        ClusterHealthInput,
        ClusterHealthResult,
        CredentialRef,
        CredentialRefInput,
        DownClusterInput,
        LaunchInput,
        NodePhase,
        NodeProgressSignal,
        NodeState,
        NodeStatus,
        NodeView,
        NodeWorkflowInput,
        RecordIntentInput,
        RepairPolicy,
        ReplicaStatusSignal,
        RestartModelInput,
        TerminateNodeRequest,
        TerminateNodeResponse,
        TransitionInput,
        WaitReadyInput,
    )
    from workflows.patches import Bundle, PatchBundles

In = TypeVar("In", bound=BaseModel)
Out = TypeVar("Out", bound=BaseModel)
TRANSIENT_LAUNCH_ERRORS = TRANSIENT_ERROR_TYPES  # relaunched by the loop below (one definition)
LOST_CLUSTER_STATUSES = frozenset({"TERMINATED", "STOPPED"})
# Running nodes wait for the fleet sweep's signals (workflows/fleet_health.py) instead of
# checking their own cluster on a timer; launches wait for a slot (controlplane/admission.py).
FLEET_HEALTH_PATCH = "fleet-health-signals"
ADMISSION_PATCH = "launch-admission"
# The wait for a slot runs on its own task queue (acts.admission_task_queue), so queued nodes
# cannot take every activity slot of the worker and starve the admitted ones (issue 11).
ADMISSION_OWN_QUEUE_PATCH = "launch-admission-own-queue"
# An unhealthy model is restarted on its own cluster (SkyPilot exec) before anyone replaces it.
REPAIR_PATCH = "node-repair-in-place"
RESTART_TIMEOUT = options.RESTART_TIMEOUT
# The serve loop's only timer: continue-as-new at least this often, to keep histories short.
SERVE_RENEW = timedelta(hours=24)
QUEUED_REASON = "queued: waiting for a launch slot (SKYPILOT_MAX_INFLIGHT_LAUNCHES)"
# The node's database steps (intent, credential reference, transitions, slot release) run as
# local activities: a third of the events and no activity-task round trip each.
LOCAL_DB_PATCH = "local-db-steps"
# A local database step's retry backoff beyond options.DATABASE_TIMERS' threshold is a durable
# timer; before this patch it slept inside the workflow task (issue 10, path 2).
DB_RETRY_TIMERS_PATCH = "db-retry-timers"
# Patches (workflow.patched) of the leak-proofing paths (issue 10); see docs/reliability.md.
PATCH_CLEANUP_SURVIVES_TERMINATE = "cleanup-survives-terminate"
PATCH_NOTHING_SUBMITTED = "nothing-submitted-no-down"
PATCH_EARLY_TERMINATE = "early-terminate-skips-launch"
PATCH_CONFIRM_LOST = "confirm-lost"
PATCH_HEALTH_CANCEL = "cancel-during-health-check-tears-down"
PATCH_TEARDOWN_SURVIVES_CANCEL = "teardown-survives-cancel"
LOST_SECOND_LOOK_S = 30.0  # before PATCH_LOST_SECOND_LOOK: min(this, the health interval)
# The second look waits the plan's lost_second_look_s (NODE_LOST_SECOND_LOOK), a few seconds.
PATCH_LOST_SECOND_LOOK = "lost-second-look-setting"
# A launch first asks for its slot in a local activity; only a node that must queue waits in
# the admission task queue's activity (no activity task and workflow task when a slot is free).
PATCH_ADMISSION_FIRST_ASK_LOCAL = "admission-first-ask-local"
# Every patch above, taken by a new run with ONE marker (workflows/patches.py).
NODE_BUNDLES = (
    Bundle(
        "node-patches-2026-12",
        frozenset(
            {
                FLEET_HEALTH_PATCH,
                ADMISSION_PATCH,
                ADMISSION_OWN_QUEUE_PATCH,
                REPAIR_PATCH,
                LOCAL_DB_PATCH,
                DB_RETRY_TIMERS_PATCH,
                PATCH_CLEANUP_SURVIVES_TERMINATE,
                PATCH_NOTHING_SUBMITTED,
                PATCH_EARLY_TERMINATE,
                PATCH_CONFIRM_LOST,
                PATCH_HEALTH_CANCEL,
                PATCH_TEARDOWN_SURVIVES_CANCEL,
                PATCH_LOST_SECOND_LOOK,
                PATCH_ADMISSION_FIRST_ASK_LOCAL,
                attrs.PATCH,
            }
        ),
    ),
)


def pinned_location(spec: NodeSpec) -> str | None:
    """``provider/region`` when the spec allows one place only, so where the launch landed is
    known without asking SkyPilot; None when it has fallbacks to choose from."""
    locations = spec.locations
    return locations[0].infra if len(locations) == 1 else None


@workflow.defn(name="NodeWorkflow", failure_exception_types=[ValidationError])
class NodeWorkflow:
    @workflow.init
    def __init__(self, input: NodeWorkflowInput | None = None) -> None:
        input = require_input(input, NodeWorkflowInput, "NodeWorkflow")
        self._spec = input.spec
        self._state: NodeState | None = input.resume
        self._terminate_requested = bool(input.resume and input.resume.terminate_reason)
        self._launch_task: asyncio.Task[None] | None = None
        self._cancelled = False
        self._health_check_requested = bool(input.resume and input.resume.health_check_requested)
        self._model_verdict: ModelHealthSignal | None = None
        self._repair_input = input.repair
        self._repair_policy = input.repair or RepairPolicy()
        self._repair_on: bool | None = None
        self._queued = False
        self._slot_asked = False
        self._local_db: bool | None = None
        self._patches = PatchBundles(NODE_BUNDLES)
        # Where the node stands (the status query's phase/progress/since); not carried across
        # continue-as-new: a resumed node is running or tearing down, which its status says.
        self._phase: NodePhase | None = None
        self._progress: str | None = None
        self._since: datetime | None = None
        self._cleaning_up = False  # compensation began: a terminate only records that it was asked
        self._maybe_submitted = False  # a launch may have reached SkyPilot in this run
        self._resumed_launch = False  # the row was launching when this run began

    # --- messages --------------------------------------------------------------------------------
    @workflow.query(name="status")
    def status(self) -> NodeView:
        return self._view()

    @workflow.signal(name="request_terminate")
    def request_terminate(self, request: TerminateNodeRequest) -> None:
        """Ask for teardown without waiting (for other workflows, which cannot send updates)."""
        if self._terminate_requested:
            return
        self._terminate_requested = True
        if self._state is not None:
            self._state.terminate_reason = request.reason
        if self._cleaning_up:
            return  # the cleanup under way finishes and records its outcome (issue 10, path 1)
        if self._launch_task is not None and not self._launch_task.done():
            self._launch_task.cancel()

    @workflow.signal(name="launch_progress")
    def launch_progress(self, update: NodeProgressSignal) -> None:
        """A launch moved on (the waiting activity tells, once per phase); late ones are dropped."""
        if self._current_status() not in lifecycle.STARTING_STATUSES:
            return
        if self._phase is not None and update.phase.rank < self._phase.rank:
            return
        self._set_phase(update.phase, update.progress)

    @workflow.signal(name="check_health")
    def check_health(self) -> None:
        """Check the cluster now rather than at the next interval (the reconciler asks this)."""
        self._health_check_requested = True

    @workflow.signal(name="model_health")
    def model_health(self, verdict: ModelHealthSignal) -> None:
        """The model probes' changed verdict: unhealthy after the threshold, or healthy again."""
        self._model_verdict = verdict

    @workflow.update  # named "terminate"; a bare decorator keeps the async return type
    async def terminate(self, request: TerminateNodeRequest) -> TerminateNodeResponse:
        """Ask for teardown and wait for it, but no longer than the terminate timeout."""
        self.request_terminate(request)
        await workflow.wait_condition(lambda: self._state is not None)
        assert self._state is not None
        try:
            await workflow.wait_condition(
                lambda: self._current_status().final,
                timeout=timedelta(seconds=self._state.plan.terminate_timeout_s),
            )
        except TimeoutError:
            return self._terminate_response(still_terminating=True)
        return self._terminate_response(still_terminating=False)

    # --- main ------------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: NodeWorkflowInput | None = None) -> NodeView:
        input = require_input(input, NodeWorkflowInput, "NodeWorkflow")
        if self._state is None:
            await self._record_intent(input)
        state = self._require_state()
        self._phase_for_status()
        early_terminate = (
            state.status in lifecycle.STARTING_STATUSES
            and self._terminate_requested
            and self._patches.patched(PATCH_EARLY_TERMINATE)
        )
        if state.status is NodeStatus.PENDING and self._terminate_requested and not early_terminate:
            await self._transition(lifecycle.TERMINATED_BEFORE_LAUNCH)
            return self._view()
        if early_terminate:
            # Terminated before this run launched anything: undo what an earlier run of this
            # workflow id may have launched (a pending row's launch may have been sent before
            # its worker died) rather than launching first (issue 10, path 9).
            self._cleaning_up = True
            await asyncio.shield(
                asyncio.ensure_future(self._compensate(None, cluster_may_exist=True))
            )
            await workflow.wait_condition(workflow.all_handlers_finished)
            return self._view()
        if state.status in lifecycle.STARTING_STATUSES:
            self._launch_task = asyncio.create_task(self._launch_phase())
            try:
                await asyncio.shield(self._launch_task)
            except asyncio.CancelledError:
                # An activity that completes before its cancel reaches it swallows a cancel
                # passed down to it; a terminate request survives that (the node is torn down
                # whether the launch stops early or finishes first). Compensation still records
                # the cancelled launch as failed.
                self._cancelled = True
                self.request_terminate(TerminateNodeRequest(reason="workflow cancelled"))
                await asyncio.shield(asyncio.ensure_future(self._finish_cancelled_launch()))
                raise
        if state.status in lifecycle.SERVING_STATUSES:
            try:
                await self._serve()
            except asyncio.CancelledError:
                # Cancelling a running node's workflow means: tear the node down.
                self._terminate_requested = True
                state.terminate_reason = state.terminate_reason or "workflow cancelled"
                await asyncio.shield(asyncio.ensure_future(self._terminate_phase()))
                raise
        if state.status in lifecycle.TERMINATING.allowed_from:
            if self._patches.patched(PATCH_TEARDOWN_SURVIVES_CANCEL):
                # A cancel during the teardown lets it finish: abandoned, it would leave the
                # row live and the cluster up (found by the interleaving matrix).
                teardown = asyncio.ensure_future(self._terminate_phase())
                try:
                    await asyncio.shield(teardown)
                except asyncio.CancelledError:
                    await teardown
                    raise
            else:
                await self._terminate_phase()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._view()

    async def _record_intent(self, input: NodeWorkflowInput) -> None:
        info = workflow.info()
        intent = await self._db(
            acts.RECORD_INTENT,
            RecordIntentInput(
                spec=input.spec, workflow_id=info.workflow_id, launch_mode=input.launch_mode
            ),
        )
        if intent.owner_workflow_id != info.workflow_id and not intent.status.final:
            raise ApplicationError(
                f"node {intent.plan.node_id} ({intent.plan.cluster_name}) is already managed by "
                f"workflow {intent.owner_workflow_id}; nothing was launched",
                type="NodeAlreadyManaged",
                non_retryable=True,
            )
        if intent.status.final:
            raise ApplicationError(
                f"node {intent.plan.node_id} ({intent.plan.cluster_name}) already ended as "
                f"{intent.status.value}; use another deployment name or replica to launch anew",
                type="NodeAlreadyEnded",
                non_retryable=True,
            )
        self._state = NodeState(
            plan=intent.plan,
            status=intent.status,
            request_id=intent.request_id,
            endpoint=intent.endpoint,
        )

    # --- launch ----------------------------------------------------------------------------------
    async def _launch_phase(self) -> None:
        state = self._require_state()
        plan = state.plan
        deadline = workflow.now() + timedelta(seconds=plan.launch_timeout_s)
        launch_may_have_started = state.status is NodeStatus.LAUNCHING
        self._resumed_launch = launch_may_have_started
        try:
            ref = (
                await self._db(
                    acts.CREDENTIAL_REFERENCE,
                    CredentialRefInput(tenant=self._spec.tenant, provider=self._spec.provider),
                )
            ).ref
            if not self._patches.patched(PATCH_NOTHING_SUBMITTED):
                launch_may_have_started = True
            try:
                await self._launch_until_ready(ref, deadline)
            finally:
                await asyncio.shield(asyncio.ensure_future(self._release_launch_slot()))
            await self._transition(
                lifecycle.READY, endpoint=state.endpoint, location=state.location
            )
        except (asyncio.CancelledError, FailureError) as error:
            self._cleaning_up = self._patches.patched(PATCH_CLEANUP_SURVIVES_TERMINATE)
            may_exist = launch_may_have_started or self._maybe_submitted
            await asyncio.shield(
                asyncio.ensure_future(self._compensate(error, cluster_may_exist=may_exist))
            )
            if self._terminate_requested:
                return
            if is_cancelled_exception(error):
                raise asyncio.CancelledError("node workflow cancelled during launch") from error
            if state.status is NodeStatus.CLEANUP_FAILED:
                outcome = "its cleanup was NOT confirmed (cleanup_failed)"
            elif may_exist:
                outcome = "was cleaned up"
            else:
                outcome = "nothing had reached SkyPilot, so there was nothing to clean up"
            raise ApplicationError(
                f"launch of {plan.cluster_name} failed and {outcome}: {state.error}",
                type="LaunchFailed",
                non_retryable=True,
            ) from error

    async def _finish_cancelled_launch(self) -> None:
        assert self._launch_task is not None
        await self._launch_task
        if self._require_state().status is NodeStatus.RUNNING:
            await self._terminate_phase()

    async def _launch_until_ready(self, ref: CredentialRef | None, deadline: datetime) -> None:
        state = self._require_state()
        plan = state.plan
        attempt = 0
        while True:
            await self._admit(deadline)
            self._set_phase(
                NodePhase.SUBMITTING,
                f"submitting the launch to SkyPilot ({plan.launch_mode.value})"
                + (f", attempt {attempt + 1}" if attempt else ""),
                force=True,
            )
            try:
                launched = await acts.LAUNCH_CLUSTER.run(
                    LaunchInput(
                        spec=self._spec,
                        cluster_name=plan.cluster_name,
                        node_id=plan.node_id,
                        launch_mode=plan.launch_mode,
                        credential=ref,
                        resumed=self._resumed_launch and attempt == 0,
                    ),
                    self._skypilot_options(deadline, start_to_close=self._launch_start_to_close()),
                )
            except BaseException as error:
                # Only a launch step that proved nothing was sent leaves nothing to clean up.
                self._maybe_submitted = self._maybe_submitted or not nothing_submitted(error)
                raise
            self._maybe_submitted = True
            state.request_id = launched.request_id
            await self._transition(
                lifecycle.LAUNCHING,
                request_id=launched.request_id,
                deadline=deadline,
                dedupe_suffix=str(attempt),
            )
            try:
                ready = await acts.WAIT_READY.run(
                    WaitReadyInput(
                        cluster_name=plan.cluster_name,
                        launch_mode=plan.launch_mode,
                        request_id=launched.request_id,
                        timeout_s=self._remaining(deadline),
                        pinned_location=pinned_location(self._spec),
                    ),
                    self._skypilot_options(deadline),
                )
            except ActivityError as error:
                retryable = failure_type(error) in TRANSIENT_LAUNCH_ERRORS
                backoff = exponential_backoff(
                    attempt + 1, initial_s=plan.retry_backoff_s, cap_s=plan.retry_backoff_s * 10
                )
                if (
                    not retryable
                    or attempt >= plan.max_retries
                    or (self._remaining(deadline) <= backoff)
                ):
                    raise
                workflow.logger.warning(
                    "launch of %s failed transiently (%s); relaunching",
                    plan.cluster_name,
                    describe(error),
                )
                attempt += 1
                await workflow.sleep(timedelta(seconds=backoff))
                continue
            state.endpoint = ready.endpoint
            state.location = ready.location
            return

    async def _compensate(self, error: BaseException | None, *, cluster_may_exist: bool) -> None:
        """Undo a launch: cancel its requests, down the cluster, record why. Idempotent."""
        state = self._require_state()
        if self._cancelled:
            reason = "cancelled"
        elif error is None:
            reason = "terminated before the launch was resumed"
        else:
            reason = describe(error)
        if error is not None and timed_out(error):
            reason = (
                f"not ready within {state.plan.launch_timeout_s:.0f}s "
                f"(SKYPILOT_LAUNCH_TIMEOUT): {reason}"
            )
        by_request = self._terminate_requested and not self._cancelled
        if by_request:
            await self._transition(lifecycle.TERMINATING_LAUNCH)
        if cluster_may_exist and not await self._down(
            cancel_launches=True, reason=None if by_request else reason
        ):
            return
        if by_request:
            await self._transition(lifecycle.TERMINATED)
        else:
            state.error = reason
            await self._transition(lifecycle.FAILED, error=reason)

    async def _admit(self, deadline: datetime) -> None:
        """Wait durably, still pending, until this launch fits the API server's budget."""
        if self._slot_asked or not self._patches.patched(ADMISSION_PATCH):
            return
        state = self._require_state()
        self._slot_asked = self._queued = True
        ask = AcquireSlotInput(
            node_id=state.plan.node_id,
            launch_mode=state.plan.launch_mode,
            timeout_s=max(self._remaining(deadline), 1.0),
        )
        try:
            # A free slot is granted by the first ask; a node that must queue keeps the place
            # this ask gave it and waits below.
            if (
                self._patches.patched(PATCH_ADMISSION_FIRST_ASK_LOCAL)
                and (await self._db(acts.TRY_LAUNCH_SLOT, ask)).granted
            ):
                return
            queue = None
            if self._patches.patched(ADMISSION_OWN_QUEUE_PATCH):
                queue = acts.admission_task_queue(workflow.info().task_queue)
            admitted = await acts.ACQUIRE_LAUNCH_SLOT.run(
                ask.model_copy(update={"timeout_s": max(self._remaining(deadline), 1.0)}),
                self._skypilot_options(deadline),
                task_queue=queue,
            )
        finally:
            self._queued = False
        if not admitted.granted:
            raise ApplicationError(
                f"launch of {state.plan.cluster_name} was not admitted within "
                f"{state.plan.launch_timeout_s:.0f}s (SKYPILOT_LAUNCH_TIMEOUT): "
                f"{admitted.ahead} node(s) queued ahead, {admitted.budget} launches in flight "
                "(SKYPILOT_MAX_INFLIGHT_LAUNCHES); nothing was launched",
                type="LaunchTimeout",
                non_retryable=True,
            )

    async def _release_launch_slot(self) -> None:
        """Give the slot back once the launch resolved; a failure only waits for its lease."""
        if not self._slot_asked:
            return
        try:
            await self._db(
                acts.RELEASE_LAUNCH_SLOT,
                ReleaseSlotInput(node_id=self._require_state().plan.node_id),
            )
        except FailureError as error:
            workflow.logger.warning("launch slot not released (its lease ends it): %s", error)
        self._slot_asked = False

    # --- running ---------------------------------------------------------------------------------
    async def _serve(self) -> None:
        if self._patches.patched(FLEET_HEALTH_PATCH):
            await self._serve_on_signals()
            return
        state = self._require_state()
        plan = state.plan
        while True:
            try:
                await workflow.wait_condition(
                    lambda: (
                        self._terminate_requested
                        or self._health_check_requested
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=timedelta(seconds=plan.health_interval_s),
                )
            except TimeoutError:
                self._health_check_requested = True
            if self._terminate_requested:
                return
            if self._health_check_requested:
                self._health_check_requested = False
                if await self._cluster_lost():
                    return
                continue
            await workflow.wait_condition(workflow.all_handlers_finished)
            # A check_health that arrived while handlers finished is carried, not dropped.
            state.health_check_requested = self._health_check_requested
            workflow.continue_as_new(NodeWorkflowInput(spec=self._spec, resume=state))

    async def _serve_on_signals(self) -> None:
        """Wait for signals only: the fleet sweep says when a cluster or a model changed.

        The one timer is the continue-as-new one, so a healthy node costs Temporal a few
        events a day instead of an activity per health interval.
        """
        state = self._require_state()
        renew_at = workflow.now() + SERVE_RENEW
        while True:
            with contextlib.suppress(TimeoutError):  # the renew timer: continue as new below
                await workflow.wait_condition(
                    lambda: (
                        self._terminate_requested
                        or self._health_check_requested
                        or self._model_verdict is not None
                        or self._needs_repair()
                        or workflow.info().is_continue_as_new_suggested()
                    ),
                    timeout=max(renew_at - workflow.now(), timedelta(seconds=1)),
                )
            if self._terminate_requested:
                return
            if self._health_check_requested:
                self._health_check_requested = False
                if await self._cluster_lost():
                    return
                continue
            if self._model_verdict is not None:
                verdict, self._model_verdict = self._model_verdict, None
                await self._apply_model_verdict(verdict)
                if state.status is NodeStatus.UNHEALTHY and self._repair_on is None:
                    enabled = self._repair_policy.enabled
                    self._repair_on = enabled and self._patches.patched(REPAIR_PATCH)
                continue
            if self._needs_repair():
                await self._repair_in_place()
                continue
            await workflow.wait_condition(workflow.all_handlers_finished)
            # A check_health that arrived while handlers finished is carried, not dropped.
            state.health_check_requested = self._health_check_requested
            workflow.continue_as_new(
                NodeWorkflowInput(
                    spec=self._spec,
                    resume=state,
                    repair=self._repair_input,
                )
            )

    async def _apply_model_verdict(self, verdict: ModelHealthSignal) -> None:
        """Record running -> unhealthy or back; repair is not this workflow's job (yet)."""
        state = self._require_state()
        if not verdict.healthy and state.status is NodeStatus.RUNNING:
            state.unhealthy_episodes += 1
            state.error = (
                f"model failed {verdict.consecutive_failures} probes in a row: {verdict.detail}"
            )
            await self._transition(
                lifecycle.UNHEALTHY,
                error=state.error,
                dedupe_suffix=str(state.unhealthy_episodes),
            )
        elif verdict.healthy and state.status is NodeStatus.UNHEALTHY:
            state.error = None
            state.repair_exhausted = False
            await self._transition(lifecycle.HEALTHY, dedupe_suffix=str(state.unhealthy_episodes))

    def _needs_repair(self) -> bool:
        state = self._state
        return (
            bool(self._repair_on)
            and state is not None
            and state.status is NodeStatus.UNHEALTHY
            and not state.repair_exhausted
        )

    async def _repair_in_place(self) -> None:
        """One repair: restart the model server on this cluster, then wait for the probes.

        After ``attempts`` restarts within ``window_s`` the node is ``repair_exhausted``: its
        deployment replaces it; a standalone node stays unhealthy, still holding its GPU, for
        an operator (docs/runbooks/troubleshooting.md, "Repair in place").
        """
        state = self._require_state()
        policy = self._repair_policy
        now = workflow.now()
        window = timedelta(seconds=policy.window_s)
        state.repair_times = [t for t in state.repair_times if now - t < window]
        if len(state.repair_times) >= policy.attempts:
            state.repair_exhausted = True
            state.error = (
                f"model still unhealthy after {len(state.repair_times)} restart(s) in place "
                f"within {policy.window_s:.0f}s; last: {state.error}"
            )[:1000]
            workflow.logger.warning("%s: %s", state.plan.cluster_name, state.error)
            await self._tell_parent()
            return
        state.repair_times.append(now)
        state.repairs += 1
        plan = state.plan
        try:
            ref = (
                await self._db(
                    acts.CREDENTIAL_REFERENCE,
                    CredentialRefInput(tenant=self._spec.tenant, provider=self._spec.provider),
                )
            ).ref
            await acts.RESTART_MODEL.run(
                RestartModelInput(
                    spec=self._spec,
                    cluster_name=plan.cluster_name,
                    node_id=plan.node_id,
                    launch_mode=plan.launch_mode,
                    credential=ref,
                    attempt=state.repairs,
                    timeout_s=RESTART_TIMEOUT.total_seconds(),
                ),
                options.restart_model(
                    heartbeat_timeout_s=plan.heartbeat_timeout_s, retry=self._skypilot_retry()
                ),
            )
        except ActivityError as error:  # counts as a failed repair; the next one may work
            workflow.logger.warning(
                "restart in place of %s failed: %s", plan.cluster_name, describe(error)
            )
        await self._tell_parent()
        with contextlib.suppress(TimeoutError):  # not healthy in time: the next repair
            await workflow.wait_condition(
                lambda: (
                    self._terminate_requested
                    or self._health_check_requested
                    or self._model_verdict is not None
                ),
                timeout=timedelta(seconds=policy.recover_wait_s),
            )

    async def _cluster_lost(self) -> bool:
        """Check the cluster; if it vanished or stopped, record it lost and clean up."""
        state = self._require_state()
        plan = state.plan
        health = await self._cluster_health(refresh=False)
        if health is None or health.cluster_status not in LOST_CLUSTER_STATUSES:
            return False
        if self._patches.patched(PATCH_CONFIRM_LOST):
            # One absent answer is not proof (a reset API server would mark every node lost):
            # confirm with a refreshed status, then look again after a short wait.
            health = await self._cluster_health(refresh=True)
            if health is None or health.cluster_status not in LOST_CLUSTER_STATUSES:
                return False
            if self._patches.patched(PATCH_LOST_SECOND_LOOK):
                second_look = plan.lost_second_look_s
            else:
                second_look = min(LOST_SECOND_LOOK_S, plan.health_interval_s)
            await workflow.sleep(timedelta(seconds=second_look))
            health = await self._cluster_health(refresh=True)
            if health is None or health.cluster_status not in LOST_CLUSTER_STATUSES:
                return False
        state.error = f"cluster is {health.cluster_status} while the node was running"
        await self._transition(lifecycle.LOST, error=state.error)
        if health.present:
            await self._down(cancel_launches=False)
        return True

    async def _cluster_health(self, *, refresh: bool) -> ClusterHealthResult | None:
        """The cluster's status, or None when SkyPilot could not be asked (try next time)."""
        plan = self._require_state().plan
        try:
            return await acts.CLUSTER_HEALTH.run(
                ClusterHealthInput(
                    cluster_name=plan.cluster_name, launch_mode=plan.launch_mode, refresh=refresh
                ),
                options.cluster_health(self._skypilot_retry()),
            )
        except ActivityError as error:
            if is_cancelled_exception(error) and self._patches.patched(PATCH_HEALTH_CANCEL):
                # The workflow was cancelled during the check: that means tear down, not
                # "try again next interval" (found by the interleaving matrix).
                raise asyncio.CancelledError("node workflow cancelled") from error
            workflow.logger.warning(
                "health check of %s failed: %s", plan.cluster_name, describe(error)
            )
            return None

    # --- teardown --------------------------------------------------------------------------------
    async def _terminate_phase(self) -> None:
        state = self._require_state()
        await self._transition(
            lifecycle.TERMINATING,
            deadline=workflow.now() + timedelta(seconds=state.plan.terminate_timeout_s),
        )
        if await self._down(cancel_launches=False):
            await self._transition(lifecycle.TERMINATED)

    async def _down(self, *, cancel_launches: bool, reason: str | None = None) -> bool:
        """Down until SkyPilot confirms the cluster is gone; False (cleanup_failed) if it cannot.

        ``reason`` is why the teardown happens (a failed launch): kept in the recorded error so
        a cleanup failure never hides the failure that caused it.
        """
        state = self._require_state()
        plan = state.plan
        try:
            await acts.DOWN_CLUSTER.run(
                DownClusterInput(
                    cluster_name=plan.cluster_name,
                    launch_mode=plan.launch_mode,
                    timeout_s=plan.terminate_timeout_s,
                    cancel_launches=cancel_launches,
                ),
                options.down(
                    terminate_timeout_s=plan.terminate_timeout_s,
                    heartbeat_timeout_s=plan.heartbeat_timeout_s,
                    retry_backoff_s=plan.retry_backoff_s,
                    budget_s=plan.cleanup_budget_s,
                ),
            )
        except FailureError as error:
            cause = f"{reason}; " if reason else ""
            state.error = f"{cause}teardown not confirmed: {describe(error)}"
            await self._transition(lifecycle.CLEANUP_FAILED, error=state.error)
            return False
        return True

    # --- helpers ---------------------------------------------------------------------------------
    async def _transition(
        self,
        transition: lifecycle.Transition,
        *,
        request_id: str | None = None,
        endpoint: str | None = None,
        error: str | None = None,
        deadline: datetime | None = None,
        dedupe_suffix: str | None = None,
        location: str | None = None,
    ) -> None:
        state = self._require_state()
        deadline_s = (deadline - workflow.now()).total_seconds() if deadline is not None else None
        await self._db(
            acts.RECORD_TRANSITION,
            TransitionInput(
                node_id=state.plan.node_id,
                transition=transition,
                request_id=request_id,
                endpoint=endpoint,
                error=error,
                deadline_s=deadline_s,
                dedupe_suffix=dedupe_suffix,
                location=location,
            ),
        )
        state.status = transition.target
        attrs.upsert_status(attrs.NODE_STATUS, transition.target.value, self._patches.patched)
        self._phase_for_status()
        await self._tell_parent()

    async def _db(self, ref: acts.ActivityRef[In, Out], arg: In) -> Out:
        """A database step: a local activity from this change on, a regular one in the runs
        whose history began before it (decided once per run, at its first step)."""
        if self._local_db is None:
            self._local_db = self._patches.patched(LOCAL_DB_PATCH)
        if self._local_db:
            timers = self._patches.patched(DB_RETRY_TIMERS_PATCH)
            return await ref.run_local(arg, options.DATABASE_TIMERS if timers else options.DATABASE)
        return await ref.run(arg, options.DATABASE)

    async def _tell_parent(self) -> None:
        parent = workflow.info().parent
        state = self._require_state()
        if parent is None:
            return
        with workflow.unsafe.imports_passed_through():
            # Here, not at the top: workflows/deployment.py imports this module.
            from workflows.deployment import DeploymentWorkflow
        handle = workflow.get_external_workflow_handle(parent.workflow_id)
        try:
            await handle.signal(
                DeploymentWorkflow.replica_status,
                ReplicaStatusSignal(
                    replica=self._spec.replica,
                    status=state.status,
                    endpoint=state.endpoint,
                    error=state.error,
                    cluster_name=state.plan.cluster_name,
                    repairs=state.repairs,
                    repair_exhausted=state.repair_exhausted,
                    location=state.location,
                ),
            )
        except FailureError as error:  # the parent may have finished already
            workflow.logger.info("could not tell parent %s: %s", parent.workflow_id, error)

    def _skypilot_retry(self) -> RetryPolicy:
        plan = self._require_state().plan
        return options.skypilot_retry(
            retry_backoff_s=plan.retry_backoff_s, max_retries=plan.max_retries
        )

    def _skypilot_options(
        self, deadline: datetime, *, start_to_close: float | None = None
    ) -> options.ActivityOptions:
        plan = self._require_state().plan
        remaining = self._remaining(deadline)
        if remaining <= 0:
            raise ApplicationError(
                f"launch of {plan.cluster_name} did not become ready within "
                f"{plan.launch_timeout_s:.0f}s (SKYPILOT_LAUNCH_TIMEOUT)",
                type="LaunchTimeout",
                non_retryable=True,
            )
        return options.before_deadline(
            remaining_s=remaining,
            start_to_close_s=start_to_close,
            heartbeat_timeout_s=plan.heartbeat_timeout_s,
            retry=self._skypilot_retry(),
        )

    def _launch_start_to_close(self) -> float:
        plan = self._require_state().plan
        # A CLI launch blocks until provisioned; an API launch only submits.
        return plan.launch_timeout_s if plan.launch_mode.value == "cli" else 120.0

    @staticmethod
    def _remaining(deadline: datetime) -> float:
        return float((deadline - workflow.now()).total_seconds())

    def _require_state(self) -> NodeState:
        if self._state is None:
            raise ApplicationError("node state used before intent was recorded", type="Bug")
        return self._state

    def _current_status(self) -> NodeStatus:
        return self._state.status if self._state is not None else NodeStatus.PENDING

    def _view(self) -> NodeView:
        state = self._state
        if state is None:
            # The cluster name is decided when intent is recorded (CLUSTER_NAME_PREFIX).
            return NodeView(
                node_id=self._spec.node_id, status=NodeStatus.PENDING, phase=NodePhase.QUEUED
            )
        return NodeView(
            node_id=state.plan.node_id,
            cluster_name=state.plan.cluster_name,
            status=state.status,
            launch_mode=state.plan.launch_mode,
            endpoint=state.endpoint,
            request_id=state.request_id,
            error=state.error,
            reason=QUEUED_REASON if self._queued else None,
            repairs=state.repairs,
            repair_exhausted=state.repair_exhausted,
            location=state.location,
            phase=self._phase,
            progress=self._progress,
            since=self._since,
        )

    # --- where the node stands -------------------------------------------------------------------
    def _set_phase(self, phase: NodePhase, progress: str, *, force: bool = False) -> None:
        """Record the phase and say it on the workflow page (Temporal's current details)."""
        if phase is not self._phase or force:
            self._since = workflow.now()
        self._phase, self._progress = phase, progress
        workflow.set_current_details(self._details())

    def _phase_for_status(self) -> None:
        """The phase a status implies; a launching node's finer phases come from its log."""
        state = self._require_state()
        status = state.status
        if status is NodeStatus.PENDING:
            self._set_phase(NodePhase.QUEUED, "intent recorded; waiting to launch")
        elif status is NodeStatus.LAUNCHING and (
            self._phase is None or self._phase.rank < NodePhase.PROVISIONING.rank
        ):
            self._set_phase(NodePhase.PROVISIONING, "launch submitted; waiting for SkyPilot")
        elif status is NodeStatus.RUNNING:
            self._set_phase(NodePhase.READY, f"serving at {state.endpoint or 'its endpoint'}")
        elif status is NodeStatus.TERMINATING:
            reason = state.terminate_reason or "requested"
            self._set_phase(NodePhase.TERMINATING, f"tearing down ({reason})")
        elif status.final:
            # The phase stays where the node got to; the line says how it ended.
            self._progress = f"{status.value}: {state.error}" if state.error else status.value
            workflow.set_current_details(self._details())

    def _details(self) -> str:
        """One line: what the node is and where it stands (the web UI's workflow page)."""
        status = self._current_status().value
        phase = self._phase.value if self._phase is not None else status
        return f"{status} · {phase}: {self._progress or ''}"[:500]

    def _terminate_response(self, *, still_terminating: bool) -> TerminateNodeResponse:
        view = self._view()
        return TerminateNodeResponse(
            node_id=view.node_id, status=view.status, still_terminating=still_terminating
        )
