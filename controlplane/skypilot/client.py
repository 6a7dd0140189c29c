"""Async client for the SkyPilot API server's REST API (contract: shared/skypilot-api.md, 0.14.1).

Every operation endpoint is asynchronous: a POST answers ``null`` and the new request's id in
the ``X-Skypilot-Request-ID`` header; the outcome comes from ``/api/get`` (blocking, so always
with a bounded read timeout) or ``/api/status`` (non-blocking).

POSTs are not idempotent and the server ignores client-chosen ids, so each submission carries a
marker in ``entrypoint_command``. After a lost response the client looks the cluster's requests
up by that marker and reattaches instead of sending the POST again; with an ``idempotency_key``
the same holds across processes (a retried activity finds its predecessor's request).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Self, TypeVar

import httpx
from pydantic import SecretStr, ValidationError

from controlplane.skypilot.errors import (
    APIError,
    InvalidTaskError,
    NotFoundError,
    RequestCancelledError,
    RequestFailedError,
    ServerCrashError,
    ServerUnreachableError,
    SkyPilotError,
    SubmitUnconfirmedError,
    WaitTimeoutError,
)
from controlplane.skypilot.models import (
    ClusterRecord,
    ClusterStatus,
    HealthInfo,
    RequestRecord,
    RequestStatus,
    TerminateResult,
)
from controlplane.skypilot.observer import CallObserver, NullObserver, first_call_of_a_retry
from controlplane.skypilot.responses import (
    REQUEST_ID_HEADER,
    decode_json_body,
    error_from_response,
    is_server_crash,
)
from controlplane.skypilot.retry import RetryPolicy
from controlplane.skypilot.task import SkyTask
from controlplane.urls import redact_url

log = logging.getLogger(__name__)

API_VERSION = 62
CLIENT_VERSION = "0.14.1"
MARKER_PREFIX = "controlplane"
MAX_LOG_LINE = 4096  # characters kept of one streamed log line
# Columns of a request listing. Never ``request_body``: a listing's bodies carry every request's
# task YAML with its secrets (contract §4.2). Only the marker lookup needs bodies, and it fetches
# those of its few candidates by id (``_marked``).
_LISTING_FIELDS = (
    "request_id",
    "name",
    "status",
    "cluster_name",
    "created_at",
    "finished_at",
    "status_msg",
    "user_id",
)
# Failures that prove the request never left this machine: the only ones the client retries
# itself. Everything that may have reached the server is retried by the caller's owner of
# retries, Temporal's activity retry policy (docs/reliability.md).
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
# Longest pause between two marker lookups while waiting out the commit horizon.
_MAX_LOOKUP_INTERVAL_S = 5.0

T = TypeVar("T")


async def pause(seconds: float) -> None:
    """Every wait of the client goes through here (tests replace it to observe backoffs)."""
    await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Timeouts:
    """Seconds. ``long_poll`` bounds one blocking /api/get; waits loop over it up to a deadline."""

    connect: float = 5.0
    submit: float = 10.0
    read: float = 30.0  # SKYPILOT_STATUS_TIMEOUT
    long_poll: float = 60.0
    # SKYPILOT_SUBMIT_COMMIT_HORIZON: how long after a POST whose response was lost the server
    # may still commit it. Until then the POST counts as possibly taken and is not sent again.
    commit_horizon: float = 30.0


@dataclass(frozen=True)
class Identity:
    """Who the requests belong to when the server has no auth (contract §3.1, §11.8)."""

    user_id: str
    user_name: str

    def __post_init__(self) -> None:
        if not self.user_id or not self.user_name:
            raise ValueError("SKYPILOT_USER_ID and SKYPILOT_USER must not be empty")

    def env_vars(self) -> dict[str, str]:
        return {"SKYPILOT_USER_ID": self.user_id, "SKYPILOT_USER": self.user_name}


def _marker(operation: str, cluster_name: str, idempotency_key: str | None) -> str:
    return f"{MARKER_PREFIX} {operation} {cluster_name} key={idempotency_key or uuid.uuid4().hex}"


class SkyPilotClient:
    """One connection pool to one API server. Safe to share between concurrent tasks."""

    def __init__(
        self,
        base_url: str,
        *,
        token: SecretStr | None = None,
        identity: Identity | None = None,
        retry: RetryPolicy | None = None,
        timeouts: Timeouts | None = None,
        observer: CallObserver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.identity = identity or Identity("c0a7b1e5", "controlplane")
        self.retry = retry or RetryPolicy()
        self.timeouts = timeouts or Timeouts()
        self.observer: CallObserver = observer or NullObserver()
        self._transport = transport
        self._http = self._new_http()
        self._retired: list[httpx.AsyncClient] = []

    # --- lifecycle -----------------------------------------------------------------------------
    def _new_http(self) -> httpx.AsyncClient:
        headers = {
            "X-SkyPilot-API-Version": str(API_VERSION),
            "X-SkyPilot-Version": CLIENT_VERSION,
            "Accept": "application/json",
        }
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.get_secret_value()}"
        return httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(self.timeouts.read, connect=self.timeouts.connect),
            transport=self._transport,
            follow_redirects=False,
            # Servers (uvicorn, so SkyPilot's too) drop idle connections at 5 s; reusing one just
            # then fails mid-request. Expire ours first.
            limits=httpx.Limits(keepalive_expiry=2.0),
        )

    def _reconnect(self) -> None:
        """After a text/plain 500 the server may reset the kept-alive connection: use a new pool."""
        self._retired.append(self._http)
        self._http = self._new_http()

    async def aclose(self) -> None:
        for client in [*self._retired, self._http]:
            await client.aclose()
        self._retired.clear()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        shown = redact_url(self.base_url)
        return f"SkyPilotClient({shown!r}, token={'set' if self._token else 'none'})"

    # --- plumbing --------------------------------------------------------------------------------
    def _unreachable(self, operation: str, exc: Exception) -> ServerUnreachableError:
        return ServerUnreachableError(
            f"cannot reach the SkyPilot API server at {redact_url(self.base_url)} "
            f"({type(exc).__name__}); "
            "check SKYPILOT_API_SERVER_URL and that the server is running",
            operation=operation,
        )

    async def _observed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        if first_call_of_a_retry():
            self.observer.call_retried(operation)
        started = time.perf_counter()
        try:
            result = await call()
        except SkyPilotError as exc:
            self.observer.call_finished(operation, "error", time.perf_counter() - started)
            self.observer.call_failed(operation, exc.error_type or type(exc).__name__)
            raise
        self.observer.call_finished(operation, "success", time.perf_counter() - started)
        return result

    async def _sleep_before_retry(
        self, operation: str, retry_number: int, exc: SkyPilotError
    ) -> None:
        delay = self.retry.delay(retry_number, exc.retry_after_s)
        self.observer.call_retried(operation)
        log.warning(
            "SkyPilot %s failed transiently (%s); retry %d/%d in %.1fs",
            operation,
            exc.message,
            retry_number,
            self.retry.max_retries,
            delay,
        )
        await pause(delay)

    async def _send(
        self, operation: str, send: Callable[[], Awaitable[httpx.Response]]
    ) -> httpx.Response:
        """One HTTP exchange. Only failures that never left the machine are tried again here."""
        retry_number = 0
        while True:
            try:
                return await send()
            except _NOT_SENT as exc:
                error = self._unreachable(operation, exc)
                if retry_number >= self.retry.max_retries:
                    raise error from None
            retry_number += 1
            await self._sleep_before_retry(operation, retry_number, error)

    async def _get(
        self, operation: str, path: str, *, params: Any = None, read_timeout: float | None = None
    ) -> httpx.Response:
        """A GET, sent once: every failure after it left is the caller's retry policy's to retry.

        HTTP error statuses are returned for the caller to classify; a server crash is raised
        (after reopening the pool, which the crash may have poisoned).
        """
        timeout = httpx.Timeout(read_timeout or self.timeouts.read, connect=self.timeouts.connect)
        try:
            response = await self._send(
                operation, lambda: self._http.get(path, params=params, timeout=timeout)
            )
        except httpx.ReadTimeout:
            raise  # the caller owns the deadline of a read
        except httpx.TransportError as exc:
            raise self._unreachable(operation, exc) from None
        if is_server_crash(response):
            self._reconnect()
            raise error_from_response(response, operation)
        return response

    async def _submit(
        self,
        operation: str,
        path: str,
        body: dict[str, Any],
        *,
        cluster_name: str | None,
        request_name: str,
        idempotency_key: str | None = None,
        earlier_may_have_sent: bool = False,
    ) -> str:
        """POST an async operation at most once and return its request id (contract §11.1-2).

        With an idempotency key the cluster's requests are looked up first, so a retried
        activity reattaches to what an earlier attempt submitted. A POST that may have reached
        the server is never sent again by this call: after a lost response the marker is looked
        for until the commit horizon has passed, then SubmitUnconfirmedError (retryable) leaves
        the next attempt to look again before it sends. That next attempt
        (``earlier_may_have_sent``) looks until the commit horizon too before it sends: the
        earlier POST may be committed late, after a worker died holding its response.
        """
        marker = _marker(operation, cluster_name or "-", idempotency_key)
        body = {**body, "env_vars": self.identity.env_vars(), "entrypoint_command": marker}
        seen: set[str] = set()
        if idempotency_key is not None and cluster_name is not None:
            earlier, seen = await self._find_marked(cluster_name, request_name, marker)
            if earlier is None and earlier_may_have_sent:
                earlier = await self._await_commit(cluster_name, request_name, marker, seen)
            if earlier is not None:
                log.info("reattached to %s request %s for %s", request_name, earlier, cluster_name)
                return earlier
        timeout = httpx.Timeout(self.timeouts.submit, connect=self.timeouts.connect)
        try:
            response = await self._send(
                operation, lambda: self._http.post(path, json=body, timeout=timeout)
            )
        except httpx.TransportError as exc:
            if cluster_name is not None:
                found = await self._await_commit(cluster_name, request_name, marker, seen)
                if found is not None:
                    log.warning("%s response lost; reattached to request %s", operation, found)
                    return found
            raise self._unconfirmed(operation, exc, looked=cluster_name is not None) from None
        if response.status_code == 200:
            request_id = response.headers.get(REQUEST_ID_HEADER)
            if not request_id:
                raise APIError(
                    f"SkyPilot accepted {operation} but sent no {REQUEST_ID_HEADER} header",
                    operation=operation,
                    http_status=200,
                )
            return str(request_id)
        error = error_from_response(response, operation)
        if isinstance(error, ServerCrashError):
            self._reconnect()
        raise error

    def _unconfirmed(
        self, operation: str, exc: Exception, *, looked: bool
    ) -> SubmitUnconfirmedError:
        looked_for = (
            f"its marker did not appear within {self.timeouts.commit_horizon:.0f}s "
            "(SKYPILOT_SUBMIT_COMMIT_HORIZON)"
            if looked
            else "it has no cluster to look it up by"
        )
        return SubmitUnconfirmedError(
            f"the {operation} request to {self.base_url} may have reached the SkyPilot API server "
            f"({type(exc).__name__}) and {looked_for}; not sent again by this attempt",
            operation=operation,
        )

    async def _marked(
        self, cluster_name: str, request_name: str, marker: str
    ) -> list[RequestRecord]:
        """The cluster's ``request_name`` requests that carry ``marker``, newest first.

        0.14.1 keeps ``entrypoint_command`` only inside the request body, and bodies carry task
        YAML with secrets. So the listing asks for no bodies; only the candidates' bodies (same
        cluster, same operation: our own submissions) are fetched, by id, and RequestRecord
        keeps nothing of them but the marker.
        """
        candidates = [
            r.request_id for r in await self.find_requests(cluster_name, name=request_name)
        ]
        if not candidates:
            return []
        params = [("request_ids", request_id) for request_id in candidates]
        response = await self._get("request_status", "/api/status", params=params)
        if response.status_code != 200:
            raise error_from_response(response, "request_status")
        by_id = {r.request_id: r for r in self._records(decode_json_body(response))}
        return [
            by_id[request_id]
            for request_id in candidates
            if request_id in by_id and by_id[request_id].entrypoint_command == marker
        ]

    async def _find_marked(
        self, cluster_name: str, request_name: str, marker: str
    ) -> tuple[str | None, set[str]]:
        """The newest live-or-succeeded request carrying ``marker``, and every id that carries it.

        A marked request that FAILED or was CANCELLED is not reattached to: the caller is
        retrying on purpose and wants a new submission.
        """
        marked = await self._marked(cluster_name, request_name, marker)
        seen = {record.request_id for record in marked}
        if marked and marked[0].status not in (RequestStatus.FAILED, RequestStatus.CANCELLED):
            return marked[0].request_id, seen
        return None, seen

    async def _await_commit(
        self, cluster_name: str, request_name: str, marker: str, seen: set[str]
    ) -> str | None:
        """After a lost response: look for the marker until the commit horizon has passed.

        An overloaded server commits a request it accepted late, so one empty answer proves
        nothing; only the horizon ends the look. A failed lookup counts as no answer.
        """
        horizon = self.timeouts.commit_horizon
        waited = delay = 0.0
        while True:
            await pause(delay)
            waited += delay
            try:
                for record in await self._marked(cluster_name, request_name, marker):
                    if record.request_id not in seen:
                        return record.request_id
            except SkyPilotError as exc:
                log.warning("lookup after a lost %s response failed: %s", request_name, exc)
            if waited >= horizon:
                return None
            delay = min(max(2 * delay, 0.5), _MAX_LOOKUP_INTERVAL_S, horizon - waited)

    # --- requests --------------------------------------------------------------------------------
    async def find_requests(
        self, cluster_name: str, *, name: str | None = None
    ) -> list[RequestRecord]:
        """Every request (any status) recorded for a cluster, newest first, without bodies."""
        params: list[tuple[str, str]] = [("cluster_name", cluster_name), ("all_status", "true")]
        params += [("fields", f) for f in _LISTING_FIELDS]
        response = await self._get("request_status", "/api/status", params=params)
        if response.status_code != 200:
            raise error_from_response(response, "request_status")
        records = self._records(decode_json_body(response))
        return [r for r in records if name is None or r.name == name]

    @staticmethod
    def _records(payload: Any) -> list[RequestRecord]:
        if not isinstance(payload, list):
            raise APIError("SkyPilot /api/status did not return a list", operation="request_status")
        out = []
        for item in payload:
            try:
                out.append(RequestRecord.model_validate(item))
            except ValidationError:
                log.warning("ignoring an unreadable request record from /api/status")
        return out

    async def request_status(self, request_id: str) -> RequestRecord:
        """The request's current record without blocking; NotFoundError if the server has none."""

        async def call() -> RequestRecord:
            params = [("request_ids", request_id), ("all_status", "true")]
            response = await self._get("request_status", "/api/status", params=params)
            if response.status_code != 200:
                raise error_from_response(response, "request_status")
            for record in self._records(decode_json_body(response)):
                if record.request_id == request_id or record.request_id.startswith(request_id):
                    return record
            raise NotFoundError(
                f"Request '{request_id}' not found",
                operation="request_status",
                request_id=request_id,
            )

        return await self._observed("request_status", call)

    async def get_result(self, request_id: str, *, timeout: float | None = None) -> Any:
        """/api/get: block up to ``timeout`` seconds for the result. Raises the request's error."""
        read = timeout if timeout is not None else self.timeouts.long_poll
        try:
            response = await self._get(
                "get", "/api/get", params={"request_id": request_id}, read_timeout=read
            )
        except httpx.ReadTimeout:
            raise WaitTimeoutError(
                f"request {request_id} still running after {read:.0f}s",
                operation="get",
                request_id=request_id,
            ) from None
        if response.status_code == 200:
            record = RequestRecord.model_validate(decode_json_body(response))
            if record.status is RequestStatus.CANCELLED:
                raise RequestCancelledError(
                    f"request {request_id} ({record.name}) was cancelled",
                    operation=record.name,
                    request_id=request_id,
                )
            return record.return_value
        if response.status_code == 500 and not is_server_crash(response):
            detail = decode_json_body(response)["detail"]
            record = RequestRecord.model_validate(detail)
            error = record.error
            raise RequestFailedError(
                error.message if error else f"request {request_id} failed",
                operation=record.name,
                error_type=error.type if error else "UnknownError",
                http_status=500,
                request_id=request_id,
            )
        raise error_from_response(response, "get")

    async def wait_for_request(
        self,
        request_id: str,
        *,
        timeout: float,
        poll_interval: float | None = None,
    ) -> Any:
        """Wait for a request's result until ``timeout`` seconds pass (then WaitTimeoutError).

        Without ``poll_interval`` it long-polls /api/get in bounded slices: the result arrives
        the moment the request finishes and the call count does not grow with a slow launch.
        With ``poll_interval`` it polls /api/status and fetches the result once finished.
        """
        deadline = time.monotonic() + timeout

        async def call() -> Any:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeoutError(
                        f"request {request_id} did not finish within {timeout:.0f}s",
                        operation="wait",
                        request_id=request_id,
                    )
                if poll_interval is None:
                    try:
                        return await self.get_result(
                            request_id, timeout=min(remaining, self.timeouts.long_poll)
                        )
                    except WaitTimeoutError:
                        continue
                record = await self.request_status(request_id)
                if record.status.finished:
                    return await self.get_result(request_id, timeout=self.timeouts.read)
                await pause(min(poll_interval, max(remaining, 0)))

        return await self._observed("wait", call)

    async def cancel(self, request_ids: Sequence[str], *, timeout: float = 30.0) -> list[str]:
        """Cancel exactly these requests and return the ids the server cancelled.

        An empty list is refused: the server reads "no ids" as "cancel everything" (§3.5).
        """
        ids = [i for i in request_ids if i]
        if not ids:
            raise ValueError("cancel needs at least one request id; an empty list would cancel all")

        async def call() -> list[str]:
            cancel_id = await self._submit(
                "cancel",
                "/api/cancel",
                {"request_ids": ids},
                cluster_name=None,
                request_name="sky.api_cancel",
            )
            result = await self.wait_for_request(cancel_id, timeout=timeout)
            return [str(x) for x in result] if isinstance(result, list) else []

        return await self._observed("cancel", call)

    # --- operations ------------------------------------------------------------------------------
    async def health(self) -> HealthInfo:
        async def call() -> HealthInfo:
            response = await self._get("health", "/api/health")
            if response.status_code != 200:
                raise error_from_response(response, "health")
            return HealthInfo.model_validate(decode_json_body(response))

        return await self._observed("health", call)

    async def validate(self, task: SkyTask) -> None:
        """Fail fast on a bad task: /validate answers 400 with the reason (contract §2, §9)."""

        async def call() -> None:
            body = {
                "dag": task.render(),
                "request_options": None,
                "env_vars": self.identity.env_vars(),
            }
            try:
                response = await self._send(
                    "validate", lambda: self._http.post("/validate", json=body)
                )
            except httpx.TransportError as exc:
                raise self._unreachable("validate", exc) from None
            if is_server_crash(response):
                self._reconnect()
            if response.status_code == 200:
                return
            if response.status_code == 400:
                payload = decode_json_body(response)
                detail = payload.get("detail") if isinstance(payload, dict) else None
                if isinstance(detail, dict):
                    raise InvalidTaskError(
                        f"SkyPilot rejected the task: {detail.get('message', '')}",
                        operation="validate",
                        error_type=str(detail.get("type") or "ValueError"),
                        http_status=400,
                    )
            raise error_from_response(response, "validate")

        await self._observed("validate", call)

    async def launch(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        idempotency_key: str | None = None,
        workspace: str | None = None,
        retry_until_up: bool = False,
        earlier_may_have_sent: bool = False,
    ) -> str:
        """Submit a launch; returns its request id. Secrets go into the task's ``secrets:``."""
        body: dict[str, Any] = {
            "task": task.render(with_secrets=True),
            "cluster_name": cluster_name,
            "retry_until_up": retry_until_up,
        }
        if workspace:
            body["override_skypilot_config"] = {"active_workspace": workspace}
        return await self._observed(
            "launch",
            lambda: self._submit(
                "launch",
                "/launch",
                body,
                cluster_name=cluster_name,
                request_name="sky.launch",
                idempotency_key=idempotency_key,
                earlier_may_have_sent=earlier_may_have_sent,
            ),
        )

    async def exec(
        self,
        cluster_name: str,
        task: SkyTask,
        *,
        idempotency_key: str | None = None,
        workspace: str | None = None,
    ) -> str:
        """Submit ``POST /exec``: run the task as a new job on the existing, UP cluster (no
        provisioning, no setup). Returns its request id; the result is ``[job_id, handle]``."""
        body: dict[str, Any] = {
            "task": task.render(with_secrets=True),
            "cluster_name": cluster_name,
        }
        if workspace:
            body["override_skypilot_config"] = {"active_workspace": workspace}
        return await self._observed(
            "exec",
            lambda: self._submit(
                "exec",
                "/exec",
                body,
                cluster_name=cluster_name,
                request_name="sky.exec",
                idempotency_key=idempotency_key,
            ),
        )

    async def down(
        self, cluster_name: str, *, purge: bool = False, idempotency_key: str | None = None
    ) -> str:
        body = {"cluster_name": cluster_name, "purge": purge}
        return await self._observed(
            "down",
            lambda: self._submit(
                "down",
                "/down",
                body,
                cluster_name=cluster_name,
                request_name="sky.down",
                idempotency_key=idempotency_key,
            ),
        )

    async def stop(self, cluster_name: str, *, idempotency_key: str | None = None) -> str:
        body = {"cluster_name": cluster_name, "purge": False}
        return await self._observed(
            "stop",
            lambda: self._submit(
                "stop",
                "/stop",
                body,
                cluster_name=cluster_name,
                request_name="sky.stop",
                idempotency_key=idempotency_key,
            ),
        )

    async def terminate(
        self,
        cluster_name: str,
        *,
        purge: bool = False,
        timeout: float = 300.0,
        idempotency_key: str | None = None,
    ) -> TerminateResult:
        """Down and wait. A cluster SkyPilot does not know is already terminated, not an error."""
        request_id = await self.down(cluster_name, purge=purge, idempotency_key=idempotency_key)
        try:
            await self.wait_for_request(request_id, timeout=timeout)
        except RequestFailedError as exc:
            if exc.not_found:
                return TerminateResult(
                    cluster_name=cluster_name, request_id=request_id, already_gone=True
                )
            raise
        return TerminateResult(cluster_name=cluster_name, request_id=request_id)

    async def status(
        self,
        cluster_names: Sequence[str] | None = None,
        *,
        refresh: str = "NONE",
        timeout: float | None = None,
    ) -> list[ClusterRecord]:
        """Cluster records; a terminated or unknown cluster is simply absent (contract §4.3)."""
        body = {
            "cluster_names": list(cluster_names) if cluster_names else None,
            "refresh": refresh,
            "all_users": True,
            "include_credentials": False,
        }

        async def call() -> list[ClusterRecord]:
            request_id = await self._submit(
                "status", "/status", body, cluster_name=None, request_name="sky.status"
            )
            result = await self.wait_for_request(request_id, timeout=timeout or self.timeouts.read)
            records = []
            for item in result or []:
                with contextlib.suppress(ValidationError):
                    records.append(ClusterRecord.model_validate(item))
            return records

        return await self._observed("status", call)

    async def cluster_status(self, cluster_name: str, *, refresh: str = "NONE") -> ClusterStatus:
        """The cluster's status; TERMINATED when SkyPilot does not list it (the guide's rule)."""
        for record in await self.status([cluster_name], refresh=refresh):
            if record.name == cluster_name:
                return record.status
        return ClusterStatus.TERMINATED

    async def endpoints(
        self, cluster_name: str, port: int | None = None, *, timeout: float | None = None
    ) -> dict[int, str]:
        """Port → "host:port" of a cluster's exposed ports (for the model readiness probe)."""
        body: dict[str, Any] = {"cluster": cluster_name, "port": port}

        async def call() -> dict[int, str]:
            request_id = await self._submit(
                "endpoints", "/endpoints", body, cluster_name=None, request_name="sky.endpoints"
            )
            result = await self.wait_for_request(request_id, timeout=timeout or self.timeouts.read)
            if not isinstance(result, dict):
                return {}
            return {int(k): str(v) for k, v in result.items()}

        return await self._observed("endpoints", call)

    # --- logs ----------------------------------------------------------------------------------
    async def stream_log(
        self, request_id: str, *, follow: bool = True, tail: int | None = None
    ) -> AsyncIterator[str]:
        """``GET /api/stream?format=plain``: a request's log, one stripped non-empty line at a time.

        One call, however long the request runs: the server pushes lines as they are written
        and closes the response when the request finishes (so there is no read timeout: the
        caller ends the read by cancelling it). Lines are read chunk by chunk and cut at
        MAX_LOG_LINE characters, so a line without an end cannot grow memory.
        """
        params: dict[str, str | int] = {
            "request_id": request_id,
            "format": "plain",
            "follow": "true" if follow else "false",
        }
        if tail is not None:
            params["tail"] = tail
        timeout = httpx.Timeout(None, connect=self.timeouts.connect)
        try:
            async with self._http.stream(
                "GET", "/api/stream", params=params, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise error_from_response(response, "stream")
                pending = ""
                async for text in response.aiter_text():
                    pending += text
                    *lines, pending = pending.split("\n")
                    for line in lines:
                        if line.strip():
                            yield line.strip()[:MAX_LOG_LINE]
                    pending = pending[:MAX_LOG_LINE]
                if pending.strip():
                    yield pending.strip()[:MAX_LOG_LINE]
        except httpx.TransportError as exc:
            raise self._unreachable("stream", exc) from None
