"""DeploymentWorkflow: a controller holding N replicas of one model, each a child NodeWorkflow.

It keeps the desired state for months: replicas that end (lost, preempted, failed, cleanup
failed) or whose in-place repair failed are replaced with capped exponential backoff, a
crash-loop guard marks the deployment ``degraded`` instead of replacing forever, ``update``
rolls a new node spec out with surge/unavailability bounds and rolls back by itself when the new
replicas never become ready. Scale, update and terminate only change the desired state; one
loop acts on it, so a terminate accepted before anything else stops every later start.

Children are started with ``ParentClosePolicy.ABANDON`` so that continue-as-new (which closes
the run) does not cancel them; a cancelled deployment asks each replica to terminate itself.

Workflows started before the controller (no ``deployment-controller`` patch marker) keep the
original code path below (``_legacy_*``), so their histories still replay.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError, FailureError

with workflow.unsafe.imports_passed_through():
    from pydantic import ValidationError

    from controlplane import metric_names
    from controlplane.cluster_names import CLUSTER_PREFIX
    from controlplane.spec import NodeSpec
    from workflows import activity_refs as acts
    from workflows import deployment_plan as rules
    from workflows import options
    from workflows import search_attributes as attrs
    from workflows.inputs import require_input
    from workflows.models import (
        DeploymentEvent,
        DeploymentEventType,
        DeploymentInput,
        DeploymentSpec,
        DeploymentState,
        DeploymentView,
        LookupClusterInput,
        NodeStatus,
        NodeView,
        NodeWorkflowInput,
        RecordDeploymentEventsInput,
        ReplicaRecord,
        ReplicaStatusSignal,
        ReplicaView,
        RolloutState,
        ScaleDeploymentRequest,
        TerminateDeploymentRequest,
        TerminateNodeRequest,
        UpdateDeploymentRequest,
    )
    from workflows.node import NodeWorkflow
    from workflows.user_metadata import node_summary

TERMINATE_WAIT = timedelta(minutes=5)
FULL_NODE_ID_PATCH = "workflow-id-carries-node-id"
CONTROLLER_PATCH = "deployment-controller"
RECENT_EVENTS = 20


def node_workflow_id(node_id: str) -> str:
    """``node-<node id>``: the whole 122-bit node id, so two nodes never share a workflow id."""
    return f"node-{node_id}"


def legacy_node_workflow_id(spec: NodeSpec) -> str:
    """The id nodes got before ``node_workflow_id`` (24 bits of hash): only to find them."""
    return f"node-{spec.legacy_cluster_name}"


# Every legacy node id starts so (legacy names always took the default prefix); no
# ``node_workflow_id`` does, a node id being a UUID.
LEGACY_NODE_ID_PREFIX = f"node-{CLUSTER_PREFIX}-"


def deployment_workflow_id(tenant: str, name: str) -> str:
    """``deployment-<tenant>.<name>``: neither part can hold a ``.``, so no two pairs meet."""
    return f"deployment-{tenant}.{name}"


def legacy_deployment_workflow_id(tenant: str, name: str) -> str:
    """The id before ``deployment_workflow_id``, to find old ones; ambiguous (``a-b``/``c``)."""
    return f"deployment-{tenant}-{name}"


@workflow.defn(name="DeploymentWorkflow", failure_exception_types=[ValidationError])
class DeploymentWorkflow:
    @workflow.init
    def __init__(self, input: DeploymentInput | None = None) -> None:
        input = require_input(input, DeploymentInput, "DeploymentWorkflow")
        self._input = input
        self._policy = input.policy
        # The controller's state (new executions and continued ones).
        self._state: DeploymentState = input.resume or DeploymentState(
            spec=input.deployment,
            desired=input.replicas,
            generation=workflow.info().run_id.replace("-", "")[:10],
        )
        self._controller: bool | None = True if input.resume is not None else None
        self._wake = False
        self._passes_begun = 0  # reconcile passes started / finished: handlers wait on them
        self._passes = 0
        self._handles: dict[int, workflow.ChildWorkflowHandle[NodeWorkflow, NodeView]] = {}
        self._pending_events: list[DeploymentEvent] = []
        # The legacy path's state (executions started before the controller).
        self._desired = input.replicas
        self._terminating = False
        self._replicas: dict[int, ReplicaView] = {}
        self._children: dict[int, workflow.ChildWorkflowHandle[NodeWorkflow, NodeView]] = {}
        self._lock = asyncio.Lock()
        self._watchers: list[asyncio.Task[None]] = []

    def _is_controller(self) -> bool:
        """Memoized: the patch marker is written once, where the first message or run asks."""
        if self._controller is None:
            self._controller = workflow.patched(CONTROLLER_PATCH)
        return self._controller

    # --- messages --------------------------------------------------------------------------------
    @workflow.query(name="status")
    def status(self) -> DeploymentView:
        if self._controller is not True:
            return self._legacy_status()
        st = self._state
        return DeploymentView(
            name=st.spec.name,
            tenant=st.spec.tenant,
            desired_replicas=st.desired,
            terminating=st.terminating,
            replicas=[_view(r) for r in sorted(st.replicas, key=lambda r: r.replica)],
            serving_replicas=len(rules.serving(st)),
            revision=st.revision,
            generation=st.generation,
            degraded=st.degraded,
            degraded_reason=st.degraded_reason,
            on_demand_fallback=st.on_demand_fallback,
            rollout=rules.rollout_view(st),
            recent_events=list(st.recent_events),
        )

    @workflow.signal(name="replica_status")
    def replica_status(self, update: ReplicaStatusSignal) -> None:
        if not self._is_controller():
            self._legacy_replica_status(update)
            return
        record = self._record(update.replica)
        if record is None:
            return
        self._apply(
            record,
            update.status,
            endpoint=update.endpoint,
            error=update.error,
            repair_exhausted=update.repair_exhausted,
            repairs=update.repairs,
        )
        record.location = update.location or record.location
        record.cluster_name = update.cluster_name or record.cluster_name

    @workflow.update  # named "scale"
    async def scale(self, request: ScaleDeploymentRequest) -> DeploymentView:
        if not self._is_controller():
            return await self._legacy_scale(request)
        self._reject_if_terminating("scaled")
        self._state.desired = request.replicas
        self._clear_guard("scaled")
        await self._reconciled()
        return self.status()

    @scale.validator
    def validate_scale(self, request: ScaleDeploymentRequest) -> None:
        self._reject_if_terminating("scaled")

    @workflow.update  # named "update"
    async def update(self, request: UpdateDeploymentRequest) -> DeploymentView:
        """Roll a new node spec out; answers once the rollout has begun (query for progress)."""
        self._reject_if_terminating("updated")
        if not self._is_controller():
            raise ApplicationError(
                "this deployment predates rolling updates; redeploy it to update",
                type="UpdateUnsupported",
            )
        st = self._state
        changes = request.model_dump(
            exclude_none=True, exclude={"max_surge", "max_unavailable", "deadline_s"}
        )
        new_spec = DeploymentSpec.model_validate({**st.spec.model_dump(), **changes})
        if new_spec == st.spec:
            raise ApplicationError(
                "update changes nothing: give at least one of model, vllm_version, "
                "torch_version, gpu_type, gpu_count, provider, region, spot, fallback_locations",
                type="InvalidUpdate",
            )
        previous = (
            st.rollout.previous_spec if st.rollout and st.rollout.phase == "rolling" else st.spec
        )
        previous_revision = (
            st.rollout.previous_revision
            if st.rollout and st.rollout.phase == "rolling"
            else st.revision
        )
        deadline = request.deadline_s or self._policy.rollout_deadline_s
        st.revision = st.next_revision
        st.next_revision += 1
        st.spec = new_spec
        st.rollout = RolloutState(
            revision=st.revision,
            previous_revision=previous_revision,
            previous_spec=previous,
            max_surge=request.max_surge,
            max_unavailable=request.max_unavailable,
            deadline_at=workflow.now() + timedelta(seconds=deadline),
        )
        self._clear_guard("updated")
        self._event(
            DeploymentEventType.ROLLOUT_STARTED,
            f"revision {st.revision}: {', '.join(sorted(changes))} "
            f"(max_surge {request.max_surge}, max_unavailable {request.max_unavailable})",
        )
        await self._reconciled()
        return self.status()

    @update.validator
    def validate_update(self, request: UpdateDeploymentRequest) -> None:
        self._reject_if_terminating("updated")

    @workflow.update  # named "terminate"
    async def terminate(self, request: TerminateDeploymentRequest) -> DeploymentView:
        """Terminate every replica; wait a bounded time for them, then report where they are."""
        if not self._is_controller():
            return await self._legacy_terminate(request)
        self._state.terminating = True
        self._state.desired = 0
        self._wake = True
        try:
            await workflow.wait_condition(self._all_ended, timeout=TERMINATE_WAIT)
        except TimeoutError:
            workflow.logger.info("deployment %s still terminating", self._state.spec.name)
        return self.status()

    # --- main ------------------------------------------------------------------------------------
    @workflow.run
    async def run(self, input: DeploymentInput | None = None) -> DeploymentView:
        if not self._is_controller():
            return await self._legacy_run()
        try:
            return await self._control()
        except asyncio.CancelledError:
            # Children are abandoned on close (so continue-as-new keeps them); a cancelled
            # deployment must ask each of them to tear its node down.
            self._state.terminating = True
            await asyncio.shield(asyncio.ensure_future(self._retire_all("deployment cancelled")))
            raise

    async def _control(self) -> DeploymentView:
        st = self._state
        check_at = workflow.now()
        while True:
            if workflow.now() >= check_at:
                check_at = workflow.now() + timedelta(seconds=self._policy.serving_check_interval_s)
                await self._confirm_leaks()
            self._wake = False
            self._passes_begun += 1
            await self._step()
            self._passes += 1
            await self._flush_events()
            if st.terminating and self._all_ended():
                self._record_metrics()
                break
            if self._should_continue_as_new():
                await workflow.wait_condition(workflow.all_handlers_finished)
                await self._flush_events()
                st.replicas = rules.prune(st.replicas)
                workflow.continue_as_new(self._input.model_copy(update={"resume": st}))
            with contextlib.suppress(TimeoutError):  # a timer: backoff, deadline or leak check
                await workflow.wait_condition(
                    lambda: self._wake or self._should_continue_as_new(),
                    timeout=self._sleep_for(check_at),
                )
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.status()

    async def _step(self) -> None:
        """One reconcile pass: rollout bookkeeping, then the plan's retirements and starts."""
        st = self._state
        now = workflow.now()
        self._check_rollout()
        step = rules.plan(st, self._policy, now)
        for replica in dict.fromkeys(step.retire):
            await self._retire(replica, "terminating" if st.terminating else "replaced")
        for _ in range(step.start):
            if st.terminating or not rules.may_start(st, workflow.now()):
                break  # a terminate accepted meanwhile: no replica starts after it
            await self._start()
        self._record_metrics()
        self._upsert_status()

    def _check_rollout(self) -> None:
        st = self._state
        rollout = st.rollout
        if rollout is None or rollout.phase != "rolling":
            return
        if rules.rollout_finished(st):
            rollout.phase = "done"
            self._event(
                DeploymentEventType.ROLLOUT_FINISHED, f"revision {rollout.revision} serving"
            )
            return
        reason = None
        if workflow.now() >= rollout.deadline_at:
            reason = "new replicas not all ready before the rollout deadline"
        elif st.degraded:
            reason = f"crash-loop guard tripped: {st.degraded_reason}"
        if reason is None:
            return
        rollout.phase = "rolled_back"
        rollout.reason = reason
        st.spec = rollout.previous_spec
        st.revision = rollout.previous_revision
        st.degraded = False
        st.degraded_reason = None
        st.never_ready_streak = 0
        st.not_before = None
        self._event(
            DeploymentEventType.ROLLOUT_ROLLED_BACK,
            f"revision {rollout.revision} rolled back to {rollout.previous_revision}: {reason}",
        )

    # --- replicas --------------------------------------------------------------------------------
    async def _start(self) -> None:
        st = self._state
        replica = st.next_replica
        st.next_replica += 1
        spot = False if st.on_demand_fallback else None
        spec = st.spec.node(replica, generation=st.generation, spot=spot)
        # The worker names the cluster (installation prefix) when it records intent; the child
        # reports it. The workflow id carries the whole node id (docs/security.md, finding 2).
        workflow_id = node_workflow_id(spec.node_id)
        record = ReplicaRecord(
            replica=replica,
            node_id=spec.node_id,
            cluster_name=None,
            workflow_id=workflow_id,
            status=NodeStatus.PENDING,
            revision=st.revision,
            spot=spec.spot,
        )
        st.replicas.append(record)
        # Children carry the node attributes and a summary when this deployment carries ours.
        labelled = attrs.carried() and workflow.patched(attrs.PATCH)
        handle = await workflow.start_child_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(
                spec=spec, launch_mode=self._input.launch_mode, repair=self._input.repair
            ),
            id=workflow_id,
            parent_close_policy=workflow.ParentClosePolicy.ABANDON,
            search_attributes=(
                attrs.node_attributes(spec, NodeStatus.PENDING) if labelled else None
            ),
            static_summary=node_summary(spec) if labelled else None,
        )
        self._handles[replica] = handle
        self._watchers.append(asyncio.create_task(self._watch(replica, handle)))

    async def _watch(
        self, replica: int, handle: workflow.ChildWorkflowHandle[NodeWorkflow, NodeView]
    ) -> None:
        """Record how a child ended, so a child that never signalled is not counted live."""
        record = self._record(replica)
        assert record is not None
        try:
            result = await handle
        except ChildWorkflowError as error:
            status = record.status if record.status.final else NodeStatus.FAILED
            self._apply(record, status, endpoint=record.endpoint, error=str(error.cause or error))
            return
        self._apply(record, result.status, endpoint=result.endpoint, error=result.error)

    async def _retire(self, replica: int, reason: str) -> None:
        record = self._record(replica)
        if record is None or record.retiring or record.status.final:
            return
        record.retiring = True
        if reason == "replaced" and record.repair_exhausted:
            self._event(
                DeploymentEventType.REPLICA_REPLACED,
                f"replica {replica} ({record.cluster_name}) retired: repair in place failed",
                record,
            )
        try:
            # A signal, not a cancel: it survives an activity that completes before a cancel
            # could reach it, and the replica ends `terminated`, not `failed`.
            await workflow.get_external_workflow_handle(record.workflow_id).signal(
                NodeWorkflow.request_terminate, TerminateNodeRequest(reason=reason)
            )
        except FailureError as error:  # its workflow already ended: nothing left to ask
            workflow.logger.info("replica %s not signalled: %s", record.workflow_id, error)

    async def _retire_all(self, reason: str) -> None:
        for record in list(self._state.replicas):
            await self._retire(record.replica, reason)

    def _apply(
        self,
        record: ReplicaRecord,
        status: NodeStatus,
        *,
        endpoint: str | None,
        error: str | None,
        repair_exhausted: bool = False,
        repairs: int = 0,
    ) -> None:
        """A replica's new status, and what it means for the guard, backoff and spot."""
        st = self._state
        was_final = record.status.final
        was_exhausted = record.repair_exhausted
        if was_final and not status.final:
            return  # a late signal from before the end
        if record.status is NodeStatus.UNHEALTHY and status is NodeStatus.RUNNING and repairs:
            self._event(
                DeploymentEventType.REPLICA_REPAIRED,
                f"replica {record.replica} healthy again after {repairs} restart(s) in place",
                record,
            )
        record.status = status
        record.endpoint = endpoint
        record.error = error
        record.repairs = max(record.repairs, repairs)
        record.repair_exhausted = record.repair_exhausted or repair_exhausted
        self._wake = True
        if status is NodeStatus.RUNNING and not record.retiring:
            record.ever_ready = True
            if record.revision == st.revision:
                st.never_ready_streak = 0
                st.not_before = None
            return
        ended = (status.final and not was_final) or (record.repair_exhausted and not was_exhausted)
        if not ended or record.retiring:
            return
        if status is NodeStatus.CLEANUP_FAILED:
            workflow.logger.warning("replica %s: teardown not confirmed", record.cluster_name)
        self._event(
            DeploymentEventType.REPLICA_REPLACED,
            f"replica {record.replica} ({record.cluster_name}) {status.value}"
            + (": repair failed" if record.repair_exhausted else "")
            + (f": {error}" if error else ""),
            record,
        )
        if record.spot and rules.is_capacity_failure(record):
            st.spot_capacity_failures += 1
            limit = self._policy.spot_fallback_after
            if (
                limit is not None
                and st.spot_capacity_failures >= limit
                and not st.on_demand_fallback
            ):
                st.on_demand_fallback = True
                self._event(
                    DeploymentEventType.SPOT_FALLBACK,
                    f"{st.spot_capacity_failures} capacity failures on spot: "
                    "replacements launch on-demand",
                )
        if record.ever_ready:
            return
        st.never_ready_streak += 1
        st.not_before = workflow.now() + rules.backoff(self._policy, st.never_ready_streak)
        if st.never_ready_streak >= self._policy.crash_loop_threshold and not st.degraded:
            st.degraded = True
            st.degraded_reason = (
                f"{st.never_ready_streak} replacements in a row never became ready; "
                f"last: {error or status.value}"
            )
            self._event(DeploymentEventType.DEGRADED, st.degraded_reason)

    async def _confirm_leaks(self) -> None:
        """A cleanup_failed replica stays in the table (the leak marker) until its node row
        says the teardown was confirmed (by the reconciler or an operator)."""
        for record in self._state.replicas:
            if record.status is not NodeStatus.CLEANUP_FAILED or record.cluster_name is None:
                continue
            try:
                found = await acts.LOOKUP_CLUSTER.run(
                    LookupClusterInput(cluster_name=record.cluster_name), options.DATABASE
                )
            except FailureError as error:
                workflow.logger.warning("leak check of %s failed: %s", record.cluster_name, error)
                continue
            if found.status is NodeStatus.TERMINATED:
                record.status = NodeStatus.TERMINATED

    # --- helpers ---------------------------------------------------------------------------------
    def deployment_status(self) -> str:
        """One word for the DeploymentStatus search attribute."""
        if self._controller is not True:
            return self._legacy_deployment_status()
        st = self._state
        if st.terminating:
            return "terminated" if self._all_ended() else "terminating"
        if st.degraded:
            return "degraded"
        serving = len(rules.serving(st))
        if serving >= st.desired:
            return "running"
        return "launching" if serving == 0 else "degraded"

    def _upsert_status(self) -> None:
        attrs.upsert_status(attrs.DEPLOYMENT_STATUS, self.deployment_status())

    def _clear_guard(self, why: str) -> None:
        st = self._state
        if st.degraded:
            self._event(DeploymentEventType.RECOVERED, f"crash-loop guard cleared: {why}")
        st.degraded = False
        st.degraded_reason = None
        st.never_ready_streak = 0
        st.not_before = None

    async def _reconciled(self) -> None:
        """Wait until a pass that began after this handler's change has finished."""
        target = self._passes_begun + 1
        self._wake = True
        await workflow.wait_condition(lambda: self._passes >= target or self._state.terminating)

    def _reject_if_terminating(self, verb: str) -> None:
        terminating = self._state.terminating if self._controller else self._terminating
        if terminating:
            raise ApplicationError(
                f"the deployment is terminating; it cannot be {verb}",
                type="DeploymentTerminating",
            )

    def _record(self, replica: int) -> ReplicaRecord | None:
        return next((r for r in self._state.replicas if r.replica == replica), None)

    def _all_ended(self) -> bool:
        return all(r.status.final for r in self._state.replicas)

    def _should_continue_as_new(self) -> bool:
        info = workflow.info()
        return (
            info.is_continue_as_new_suggested()
            or info.get_current_history_length() > self._policy.history_limit
        )

    def _sleep_for(self, check_at: datetime) -> timedelta:
        st = self._state
        wake = [check_at]
        if st.not_before is not None and st.not_before > workflow.now():
            wake.append(st.not_before)
        if st.rollout is not None and st.rollout.phase == "rolling":
            wake.append(st.rollout.deadline_at)
        return max(min(wake) - workflow.now(), timedelta(seconds=1))

    def _event(
        self, kind: DeploymentEventType, detail: str, record: ReplicaRecord | None = None
    ) -> None:
        event = DeploymentEvent(
            event_type=kind,
            detail=detail[:1000],
            replica=record.replica if record else None,
            node_id=record.node_id if record else None,
            at=workflow.now(),
        )
        st = self._state
        st.recent_events = [*st.recent_events, event][-RECENT_EVENTS:]
        self._pending_events.append(event)
        workflow.logger.info("deployment %s: %s %s", st.spec.name, kind.value, detail)

    async def _flush_events(self) -> None:
        """Write the loop's events to the outbox, in order; each has a stable dedupe key."""
        if not self._pending_events:
            return
        st = self._state
        batch, self._pending_events = self._pending_events, []
        await acts.RECORD_DEPLOYMENT_EVENTS.run(
            RecordDeploymentEventsInput(
                tenant=st.spec.tenant,
                deployment=st.spec.name,
                workflow_id=workflow.info().workflow_id,
                generation=st.generation,
                first_sequence=st.events_written,
                events=batch,
                desired=st.desired,
                serving=len(rules.serving(st)),
            ),
            options.DATABASE,
        )
        st.events_written += len(batch)

    def _record_metrics(self) -> None:
        st = self._state
        meter = workflow.metric_meter().with_additional_attributes(
            {"tenant": st.spec.tenant, "deployment": st.spec.name}
        )
        done = st.terminating and self._all_ended()  # an ended deployment wants nothing
        meter.create_gauge(metric_names.DEPLOYMENT_DESIRED, "Replicas a deployment wants").set(
            0 if done else st.desired
        )
        meter.create_gauge(metric_names.DEPLOYMENT_SERVING, "Replicas running, not retiring").set(
            len(rules.serving(st))
        )
        meter.create_gauge(
            metric_names.DEPLOYMENT_DEGRADED, "1 when the crash-loop guard stopped replacing"
        ).set(1 if st.degraded and not done else 0)

    # --- the path of executions started before the controller (replay only) -------------------
    def _legacy_status(self) -> DeploymentView:
        return DeploymentView(
            name=self._input.deployment.name,
            tenant=self._input.deployment.tenant,
            desired_replicas=self._desired,
            terminating=self._terminating,
            replicas=[self._replicas[i] for i in sorted(self._replicas)],
        )

    def _legacy_replica_status(self, update: ReplicaStatusSignal) -> None:
        view = self._replicas.get(update.replica)
        if view is not None:
            self._replicas[update.replica] = view.model_copy(
                update={
                    "status": update.status,
                    "endpoint": update.endpoint,
                    "error": update.error,
                    "cluster_name": update.cluster_name or view.cluster_name,
                }
            )
            self._upsert_status()

    async def _legacy_scale(self, request: ScaleDeploymentRequest) -> DeploymentView:
        if self._terminating:
            raise ApplicationError(
                "the deployment is terminating; it cannot be scaled", type="DeploymentTerminating"
            )
        async with self._lock:
            self._desired = request.replicas
            await self._legacy_reconcile()
            self._upsert_status()
        return self._legacy_status()

    async def _legacy_terminate(self, request: TerminateDeploymentRequest) -> DeploymentView:
        async with self._lock:
            self._terminating = True
            self._desired = 0
            self._upsert_status()
            await self._legacy_reconcile()
        try:
            await workflow.wait_condition(self._legacy_all_final, timeout=TERMINATE_WAIT)
        except TimeoutError:
            workflow.logger.info("deployment %s still terminating", self._input.deployment.name)
        return self._legacy_status()

    async def _legacy_run(self) -> DeploymentView:
        async with self._lock:
            await self._legacy_reconcile()
        await workflow.wait_condition(lambda: self._terminating and self._legacy_all_final())
        self._upsert_status()
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._legacy_status()

    def _legacy_deployment_status(self) -> str:
        if self._terminating:
            return "terminated" if self._legacy_all_final() else "terminating"
        running = sum(v.status is NodeStatus.RUNNING for v in self._replicas.values())
        if running >= self._desired:
            return "running"
        return "launching" if running == 0 else "degraded"

    def _legacy_all_final(self) -> bool:
        return all(view.status.final for view in self._replicas.values())

    async def _legacy_reconcile(self) -> None:
        """Start replicas until ``desired`` are live; cancel the newest ones above it.

        Replica numbers are identities, never reused: a replacement for a failed replica gets
        the next number, so it is a new node with its own cluster and row.
        """
        live = sorted(r for r, view in self._replicas.items() if not view.status.final)
        next_replica = max(self._replicas, default=-1) + 1
        for _ in range(self._desired - len(live)):
            await self._legacy_start(next_replica)
            next_replica += 1
        for replica in live[self._desired :] if len(live) > self._desired else []:
            # A signal, not a cancel: the terminate request survives an activity that completes
            # before a cancel could reach it, and the replica ends `terminated`, not `failed`.
            await self._children[replica].signal(
                NodeWorkflow.request_terminate, TerminateNodeRequest(reason="scaled down")
            )

    async def _legacy_start(self, replica: int) -> None:
        spec = self._input.deployment.node(replica)
        if workflow.patched(FULL_NODE_ID_PATCH):
            # The worker names the cluster when it records intent; the child reports it.
            workflow_id, cluster_name = node_workflow_id(spec.node_id), None
        else:
            workflow_id, cluster_name = legacy_node_workflow_id(spec), spec.legacy_cluster_name
        # Children carry the node attributes and a summary when this deployment carries ours.
        labelled = attrs.carried() and workflow.patched(attrs.PATCH)
        handle = await workflow.start_child_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(spec=spec, launch_mode=self._input.launch_mode),
            id=workflow_id,
            parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
            search_attributes=(
                attrs.node_attributes(spec, NodeStatus.PENDING) if labelled else None
            ),
            static_summary=node_summary(spec) if labelled else None,
        )
        self._children[replica] = handle
        self._replicas[replica] = ReplicaView(
            replica=replica,
            node_id=spec.node_id,
            cluster_name=cluster_name,
            workflow_id=workflow_id,
            status=NodeStatus.PENDING,
        )
        self._watchers.append(asyncio.create_task(self._legacy_watch(replica, handle)))

    async def _legacy_watch(
        self, replica: int, handle: workflow.ChildWorkflowHandle[NodeWorkflow, NodeView]
    ) -> None:
        """Record how a child ended, so the query never shows a stale status."""
        try:
            result = await handle
        except ChildWorkflowError as error:
            view = self._replicas[replica]
            status = view.status if view.status.final else NodeStatus.FAILED
            self._replicas[replica] = view.model_copy(
                update={"status": status, "error": str(error.cause or error)}
            )
            self._upsert_status()
            return
        self._replicas[replica] = self._replicas[replica].model_copy(
            update={"status": result.status, "endpoint": result.endpoint, "error": result.error}
        )
        self._upsert_status()


def _view(record: ReplicaRecord) -> ReplicaView:
    return ReplicaView.model_validate(record.model_dump(include=set(ReplicaView.model_fields)))
