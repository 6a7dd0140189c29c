"""SkyPilot activities: launch, wait for ready, health, down. API or CLI per the node's mode.

Secrets are resolved here, at the last moment, and go nowhere but SkyPilot: not into results,
heartbeats or errors.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.attempts import records_retries
from activities.errors import (
    permanent,
    skypilot_application_error,
    teardown_application_error,
    translate_errors,
)
from activities.heartbeat import heartbeating
from activities.progress import ProgressReporter
from controlplane.credential_policy import CredentialPolicyError, check_workspace
from controlplane.launch_progress import NodePhase
from controlplane.lifecycle import LaunchMode
from controlplane.skypilot.backend import SkyPilotBackend
from controlplane.skypilot.errors import RequestFailedError, SkyPilotError, WaitTimeoutError
from controlplane.skypilot.models import ClusterStatus
from controlplane.skypilot.probe import model_is_ready
from controlplane.skypilot.task import VLLM_PORT, SkyTask, TaskSettings, build_task
from controlplane.spec import NodeSpec
from controlplane.vault import CredentialStore, VaultError
from workflows import activity_refs as acts
from workflows.models import (
    NOTHING_SUBMITTED,
    ClusterHealthInput,
    ClusterHealthResult,
    CredentialRef,
    DownClusterInput,
    DownClusterResult,
    LaunchInput,
    LaunchResult,
    RestartModelInput,
    RestartModelResult,
    WaitReadyInput,
    WaitReadyResult,
)

log = logging.getLogger(__name__)


class SkyPilotActivities:
    """Holds one backend per configured mode, the credential store and a probe HTTP client."""

    def __init__(
        self,
        backends: Mapping[LaunchMode, SkyPilotBackend],
        credentials: CredentialStore | None,
        task_settings: TaskSettings,
        probe_http: httpx.AsyncClient,
        *,
        probe_interval_s: float = 0.5,
        tenant_workspaces: Mapping[str, frozenset[str]] | None = None,
    ) -> None:
        self.backends = backends
        self.credentials = credentials
        self.tenant_workspaces = tenant_workspaces or {}  # TENANT_WORKSPACES; unset = none
        self.task_settings = task_settings
        self.probe_http = probe_http
        self.probe_interval_s = probe_interval_s

    def _backend(self, mode: LaunchMode, *, retryable: bool = False) -> SkyPilotBackend:
        """The backend of ``mode``; a retryable miss lets a worker that has it take the retry."""
        backend = self.backends.get(mode)
        if backend is None:
            raise ApplicationError(
                f"this worker has no SkyPilot {mode.value.upper()} access configured; for API "
                "mode set SKYPILOT_API_SERVER_URL and SKYPILOT_SERVICE_ACCOUNT_TOKEN, for CLI mode "
                "SKYPILOT_CLI_PATH",
                type="ConfigurationError",
                non_retryable=not retryable,
            )
        return backend

    async def _task(
        self, spec: NodeSpec, credential: CredentialRef | None
    ) -> tuple[SkyTask, str | None]:
        """The node's task with its secrets, and its workspace: opened by the credential
        reference (checked against the spec), policy-checked, used at once."""
        payload = None
        if (ref := credential) is not None:
            _require_ref_of_spec(ref, spec)
            if self.credentials is None:
                raise permanent(
                    f"tenant {ref.tenant} has stored {ref.provider} credentials but "
                    "this worker has no SKYPILOT_CREDENTIAL_ENCRYPTION_KEY to open them",
                    "ConfigurationError",
                )
            try:
                payload = await self.credentials.resolve(ref.tenant, ref.provider)
            except VaultError as exc:  # a wrong key or an altered row: no retry can open it
                raise permanent(f"{exc}; nothing was launched", "VaultError") from None
        workspace = payload.workspace if payload else None
        try:
            check_workspace(spec.tenant, workspace, self.tenant_workspaces)
            task = build_task(
                spec,
                self.task_settings,
                node_secrets=payload.secrets if payload else None,
                tenant_r2=payload.r2 if payload else None,
            )
        except CredentialPolicyError as exc:
            raise permanent(f"{exc}; nothing was launched", "CredentialPolicyError") from None
        return task, workspace

    @activity.defn(name=acts.LAUNCH_CLUSTER.name)
    @records_retries
    @translate_errors
    async def launch_cluster(self, input: LaunchInput) -> LaunchResult:
        backend = self._backend(input.launch_mode)
        task, workspace = await self._task(input.spec, input.credential)
        activity.logger.debug(  # DEBUG: an INFO line per lifecycle step costs CPU at scale
            "launching %s via %s for tenant %s",
            input.cluster_name,
            input.launch_mode.value,
            input.spec.tenant,
        )
        async with heartbeating(), ProgressReporter().running() as progress:
            try:
                request_id = await backend.launch(
                    input.cluster_name,
                    task,
                    idempotency_key=input.node_id,
                    workspace=workspace,
                    on_line=progress.line,  # CLI mode: `sky launch` prints the launch as it goes
                    # A retried attempt, or a run resuming a launching row: an earlier POST
                    # may still be committed late (SKYPILOT_SUBMIT_COMMIT_HORIZON).
                    earlier_may_have_sent=activity.info().attempt > 1 or input.resumed,
                )
            except SkyPilotError as exc:
                # Only a first attempt can prove nothing was sent: an earlier one may have been.
                proven = exc.nothing_submitted and activity.info().attempt == 1
                raise skypilot_application_error(
                    exc, *([NOTHING_SUBMITTED] if proven else [])
                ) from None
        return LaunchResult(request_id=request_id)

    @activity.defn(name=acts.RESTART_MODEL.name)
    @translate_errors
    async def restart_model(self, input: RestartModelInput) -> RestartModelResult:
        """Repair in place: the node's task runs again on its own cluster (SkyPilot exec),
        stopping the stale model server first; the cluster and its GPU are kept."""
        backend = self._backend(input.launch_mode)
        task, workspace = await self._task(input.spec, input.credential)
        activity.logger.info("restarting the model of %s in place", input.cluster_name)
        async with heartbeating():
            await backend.restart_model(
                input.cluster_name,
                task,
                idempotency_key=f"{input.node_id}:repair:{input.attempt}",
                workspace=workspace,
                timeout=input.timeout_s,
            )
        return RestartModelResult(job_submitted=True)

    @activity.defn(name=acts.WAIT_READY.name)
    @records_retries
    async def wait_ready(self, input: WaitReadyInput) -> WaitReadyResult:
        """SkyPilot finished, the cluster is UP, and the model answers /health."""
        backend = self._backend(input.launch_mode)
        deadline = time.monotonic() + input.timeout_s
        async with heartbeating(), ProgressReporter().running() as progress:
            try:
                await backend.wait_launched(
                    input.cluster_name,
                    input.request_id,
                    max(deadline - time.monotonic(), 1.0),
                    on_line=progress.line,  # API mode: the launch request's log
                    log_after_s=progress.quiet_start_s,  # nothing sooner would be told
                )
                endpoint = await backend.endpoint(input.cluster_name, VLLM_PORT)
            except RequestFailedError as exc:
                # The launch itself failed: waiting again cannot help. The workflow relaunches
                # when the type says the failure was transient (capacity, server restart).
                raise ApplicationError(
                    str(exc), type=exc.error_type or "LaunchFailed", non_retryable=True
                ) from None
            except WaitTimeoutError:
                raise permanent(
                    f"SkyPilot did not finish launching {input.cluster_name} within "
                    f"{input.timeout_s:.0f}s (SKYPILOT_LAUNCH_TIMEOUT)",
                    "LaunchTimeout",
                ) from None
            except SkyPilotError as exc:
                raise skypilot_application_error(exc) from None
            if endpoint is None:
                raise permanent(
                    f"cluster {input.cluster_name} exposes no port {VLLM_PORT}", "NoEndpoint"
                )
            progress.advance(
                NodePhase.LOADING_MODEL,
                f"cluster is up; waiting for the model at {endpoint}/health",
            )
            while not await model_is_ready(self.probe_http, endpoint):
                if time.monotonic() >= deadline:
                    raise permanent(
                        f"the model on {input.cluster_name} did not answer {endpoint}/health "
                        f"within {input.timeout_s:.0f}s (SKYPILOT_LAUNCH_TIMEOUT)",
                        "ReadinessTimeout",
                    )
                await asyncio.sleep(self.probe_interval_s)
            location = input.pinned_location or await self._location(backend, input.cluster_name)
        return WaitReadyResult(endpoint=endpoint, location=location)

    @staticmethod
    async def _location(backend: SkyPilotBackend, cluster_name: str) -> str | None:
        """Where the cluster landed (its record's cloud/region); None if SkyPilot won't say."""
        try:
            return await backend.location(cluster_name)
        except SkyPilotError as exc:
            log.warning("no location for %s: %s", cluster_name, exc)
            return None

    @activity.defn(name=acts.CLUSTER_HEALTH.name)
    @records_retries
    @translate_errors
    async def cluster_health(self, input: ClusterHealthInput) -> ClusterHealthResult:
        status = await self._backend(input.launch_mode).cluster_status(
            input.cluster_name, refresh=input.refresh
        )
        return ClusterHealthResult(
            cluster_status=status.value, present=status is not ClusterStatus.TERMINATED
        )

    @activity.defn(name=acts.DOWN_CLUSTER.name)
    @records_retries
    async def down_cluster(self, input: DownClusterInput) -> DownClusterResult:
        """Down and confirm: done only when SkyPilot no longer lists the cluster.

        Every failure is retried within the cleanup budget, except the few no retry can fix
        (SkyPilotError.permanent_for_teardown): a GPU may be running, and a 401 until a rotated
        token arrives, a lost request or a failed `sky` run can all pass.
        """
        backend = self._backend(input.launch_mode, retryable=True)
        try:
            async with heartbeating():
                cancelled = (
                    await backend.cancel_launches(input.cluster_name)
                    if input.cancel_launches
                    else []
                )
                result = await backend.terminate(input.cluster_name, input.timeout_s)
                status = await backend.cluster_status(input.cluster_name)
        except SkyPilotError as exc:
            raise teardown_application_error(exc) from None
        if status is not ClusterStatus.TERMINATED:
            raise ApplicationError(
                f"cluster {input.cluster_name} is still {status.value} after down; retrying",
                type="ClusterStillPresent",
            )
        log.debug("cluster %s is gone (already_gone=%s)", input.cluster_name, result.already_gone)
        return DownClusterResult(already_gone=result.already_gone, cancelled_requests=cancelled)


def _require_ref_of_spec(ref: CredentialRef, spec: NodeSpec) -> None:
    """The reference opens the credential; the spec says whose node this is. They must agree,
    or a forged reference in the input could launch on another tenant's credentials."""
    if (ref.tenant, ref.provider) != (spec.tenant, spec.provider):
        raise permanent(
            f"credential: the reference is for tenant {ref.tenant!r} and provider "
            f"{ref.provider!r}, but the node is tenant {spec.tenant!r} on provider "
            f"{spec.provider!r}; nothing was launched",
            "CredentialReferenceMismatch",
        )
