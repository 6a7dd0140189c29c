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

from activities.errors import permanent, skypilot_application_error, translate_errors
from activities.heartbeat import heartbeating
from controlplane.lifecycle import LaunchMode
from controlplane.skypilot.backend import SkyPilotBackend
from controlplane.skypilot.errors import RequestFailedError, SkyPilotError, WaitTimeoutError
from controlplane.skypilot.models import ClusterStatus
from controlplane.skypilot.probe import model_is_ready
from controlplane.skypilot.task import VLLM_PORT, TaskSettings, build_task
from controlplane.vault import CredentialStore
from workflows.models import (
    NOTHING_SUBMITTED,
    ClusterHealthInput,
    ClusterHealthResult,
    DownClusterInput,
    DownClusterResult,
    LaunchInput,
    LaunchResult,
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
    ) -> None:
        self.backends = backends
        self.credentials = credentials
        self.task_settings = task_settings
        self.probe_http = probe_http
        self.probe_interval_s = probe_interval_s

    def _backend(self, mode: LaunchMode) -> SkyPilotBackend:
        backend = self.backends.get(mode)
        if backend is None:
            raise permanent(
                f"this worker has no SkyPilot {mode.value.upper()} access configured; for API "
                "mode set SKYPILOT_API_SERVER_URL and SKYPILOT_SERVICE_ACCOUNT_TOKEN, for CLI mode "
                "SKYPILOT_CLI_PATH",
                "ConfigurationError",
            )
        return backend

    @activity.defn(name="launch_cluster")
    @translate_errors
    async def launch_cluster(self, input: LaunchInput) -> LaunchResult:
        backend = self._backend(input.launch_mode)
        payload = None
        if input.credential is not None:
            if self.credentials is None:
                raise permanent(
                    f"tenant {input.spec.tenant} has stored {input.spec.provider} credentials but "
                    "this worker has no SKYPILOT_CREDENTIAL_ENCRYPTION_KEY to open them",
                    "ConfigurationError",
                )
            payload = await self.credentials.resolve(input.spec.tenant, input.spec.provider)
        task = build_task(
            input.spec, self.task_settings, node_secrets=payload.secrets if payload else None
        )
        activity.logger.info(
            "launching %s via %s for tenant %s",
            input.cluster_name,
            input.launch_mode.value,
            input.spec.tenant,
        )
        async with heartbeating():
            try:
                request_id = await backend.launch(
                    input.cluster_name,
                    task,
                    idempotency_key=input.node_id,
                    workspace=payload.workspace if payload else None,
                )
            except SkyPilotError as exc:
                # Only a first attempt can prove nothing was sent: an earlier one may have been.
                proven = exc.nothing_submitted and activity.info().attempt == 1
                raise skypilot_application_error(
                    exc, *([NOTHING_SUBMITTED] if proven else [])
                ) from None
        return LaunchResult(request_id=request_id)

    @activity.defn(name="wait_ready")
    async def wait_ready(self, input: WaitReadyInput) -> WaitReadyResult:
        """SkyPilot finished, the cluster is UP, and the model answers /health."""
        backend = self._backend(input.launch_mode)
        deadline = time.monotonic() + input.timeout_s
        async with heartbeating():
            try:
                await backend.wait_launched(
                    input.cluster_name, input.request_id, max(deadline - time.monotonic(), 1.0)
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
            while not await model_is_ready(self.probe_http, endpoint):
                if time.monotonic() >= deadline:
                    raise permanent(
                        f"the model on {input.cluster_name} did not answer {endpoint}/health "
                        f"within {input.timeout_s:.0f}s (SKYPILOT_LAUNCH_TIMEOUT)",
                        "ReadinessTimeout",
                    )
                await asyncio.sleep(self.probe_interval_s)
        return WaitReadyResult(endpoint=endpoint)

    @activity.defn(name="cluster_health")
    @translate_errors
    async def cluster_health(self, input: ClusterHealthInput) -> ClusterHealthResult:
        status = await self._backend(input.launch_mode).cluster_status(
            input.cluster_name, refresh=input.refresh
        )
        return ClusterHealthResult(
            cluster_status=status.value, present=status is not ClusterStatus.TERMINATED
        )

    @activity.defn(name="down_cluster")
    @translate_errors
    async def down_cluster(self, input: DownClusterInput) -> DownClusterResult:
        """Down and confirm: done only when SkyPilot no longer lists the cluster."""
        backend = self._backend(input.launch_mode)
        async with heartbeating():
            cancelled = (
                await backend.cancel_launches(input.cluster_name) if (input.cancel_launches) else []
            )
            result = await backend.terminate(input.cluster_name, input.timeout_s)
            status = await backend.cluster_status(input.cluster_name)
        if status is not ClusterStatus.TERMINATED:
            raise ApplicationError(
                f"cluster {input.cluster_name} is still {status.value} after down; retrying",
                type="ClusterStillPresent",
            )
        log.info("cluster %s is gone (already_gone=%s)", input.cluster_name, result.already_gone)
        return DownClusterResult(already_gone=result.already_gone, cancelled_requests=cancelled)
